"""Fixtures of the score tests: shards in img2dataset's layout (see support/score.py)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from support.score import good_samples, jpeg, write_shard


@pytest.fixture(scope="session")
def images_dir(tmp_path_factory, shared_data: Path) -> Path:
    """Two good shards + one shard of bad input, as the download stage lays them out."""
    from PIL import Image

    root = tmp_path_factory.mktemp("images")
    write_shard(root, "00000", good_samples(shared_data, 20, "a"))
    write_shard(root, "00001", good_samples(shared_data, 10, "b"))
    one_px = io.BytesIO()
    Image.new("RGB", (1, 1), (200, 10, 10)).save(one_px, "PNG")
    good = jpeg(Image.new("RGB", (80, 60), (10, 120, 200)))
    bad = [
        {"key": "c00000", "jpg": b"\xff\xd8\xff\xe0garbage-not-a-jpeg" * 10, "txt": "corrupt bytes"},
        {"key": "c00001", "jpg": b"", "txt": "zero byte image"},
        {"key": "c00002", "jpg": one_px.getvalue(), "txt": "a one pixel image"},
        {"key": "c00003", "jpg": good, "txt": "long " + "x" * 10_000},
        {"key": "c00004", "jpg": good},  # no .txt member: text falls back to the Parquet's
        {"key": "c00005", "jpg": good[: len(good) // 2], "txt": "truncated jpeg"},
        {"key": "c00006", "jpg": good, "txt": "fine"},
    ]
    write_shard(root, "00002", bad)
    return root
