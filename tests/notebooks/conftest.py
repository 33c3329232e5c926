"""Fixtures: pipeline output roots for the notebook tests (see support/notebooks.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from support.notebooks import write_candidates, write_later_stages


@pytest.fixture
def candidates_only(tmp_path: Path, shared_data: Path) -> Path:
    out = tmp_path / "out"
    write_candidates(out, shared_data)
    (out / "candidates" / "crawl=CC-MAIN-2024-33" / "broken.parquet").write_bytes(b"PAR1 not parquet at all")
    return out


@pytest.fixture
def every_stage(tmp_path: Path, shared_data: Path) -> Path:
    out = tmp_path / "out"
    cand = write_candidates(out, shared_data)
    write_later_stages(out, shared_data, cand)
    return out
