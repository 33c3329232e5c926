"""Shard writer: img2dataset layout, stable keys, and object-store output (real SeaweedFS)."""

from __future__ import annotations

import io
import json
import tarfile

import pandas as pd
import pytest

from crawlpairs import storage
from crawlpairs.udfs.download.shards import is_shard_file, write_shard

LAYOUT = {"shard_digits": 5, "index_digits": 4}


def _rows(n: int) -> list[dict]:
    return pd.DataFrame({
        "uid": [f"{i:04x}" for i in range(n)][::-1], "url": [f"http://h/{i}.jpg" for i in range(n)][::-1],
        "text": [f"caption {i}" for i in range(n)][::-1],
        "download_status": ["success" if i % 2 == 0 else "error" for i in range(n)][::-1],
        "error_message": [None if i % 2 == 0 else "timeout: x" for i in range(n)][::-1],
        "width": [256] * n, "height": [256] * n, "original_width": [500] * n, "original_height": [400] * n,
        "sha256": ["0" * 64] * n, "phash": ["0" * 16] * n, "http_status": [200] * n, "final_url": [None] * n,
        "image": [b"\xff\xd8jpegbytes" if i % 2 == 0 else None for i in range(n)][::-1],
    }).to_dict("records")


def _check(base: str, st) -> None:
    s = write_shard(_rows(6), 1, base, LAYOUT, st)
    assert s["count"] == 6 and s["successes"] == 3 and s["errors"] == {"timeout": 3}
    assert s["failed_to_download"] == 3 and s["failed_to_resize"] == 0
    assert s["status_dict"] == {"success": 3, "timeout": 3}
    with tarfile.open(fileobj=io.BytesIO(storage.read_bytes(storage.join(base, "00001.tar"), st))) as tar:
        assert tar.getnames()[:3] == ["000010000.jpg", "000010000.txt", "000010000.json"]  # shard + rank by uid
        assert json.loads(tar.extractfile("000010000.json").read())["url"] == "http://h/0.jpg"
    meta = pd.read_parquet(io.BytesIO(storage.read_bytes(storage.join(base, "00001.parquet"), st)))
    assert list(meta.key) == [f"00001{i:04d}" for i in range(6)] and "image" not in meta.columns
    assert list(meta.status) == ["success", "failed_to_download"] * 3  # img2dataset's values; ours beside
    assert list(meta.download_status) == ["success", "error"] * 3
    assert storage.read_json(storage.join(base, "00001_stats.json"), st)["counts"]["rows_in"] == 6


def test_shard_layout_local(tmp_path) -> None:
    _check(str(tmp_path / "images"), None)


def test_rewriting_a_shard_gives_identical_bytes(tmp_path) -> None:
    """docs/download.md: keys by uid rank and mtime-0 members, so a repeat run writes the same shard."""
    rows = _rows(6)
    write_shard([dict(r) for r in rows], 1, str(tmp_path / "a"), LAYOUT, None)
    write_shard([dict(r) for r in rows[::-1]], 1, str(tmp_path / "b"), LAYOUT, None)  # rows in another order
    for name in ("00001.tar", "00001.parquet"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


@pytest.mark.integration
def test_shard_layout_on_s3(s3_server) -> None:
    _check(s3_server.uri("download-test", "images"), s3_server.storage)


def test_shard_folder_names() -> None:
    """Only img2dataset's three names count as shard files (everything else is bookkeeping)."""
    assert all(is_shard_file(n) for n in ("00000.tar", "00012.parquet", "00012_stats.json", "123456.tar"))
    assert not any(is_shard_file(n) for n in ("_stats.json", "plan.json", "_plan.json", ".00001.tar.x.tmp",
                                              "00001.tar.tmp", "x_stats.json", "00001_stats.parquet"))
