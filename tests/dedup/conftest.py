"""Fixtures for dedup tests."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from support.dedup import dedup_config


@pytest.fixture
def run_dedup(spark):
    """Run DedupStage on the shared session; returns (kept rows as dicts, stats dict)."""
    from crawlpairs.jobs.dedup import DedupStage
    from crawlpairs.stage import run_stage

    def run(inp, out, seen=None, **dedup):
        cfg = dedup_config(inp, out, seen, **dedup)
        run_stage(DedupStage, cfg, spark)
        kept = pq.read_table(Path(out) / "deduped").to_pylist()
        stats = json.loads((Path(out) / "deduped_meta" / "_stats.json").read_text())
        return kept, stats

    return run
