"""Fixtures of the publish and report tests: a run's root built by the real stages from the real crawl files."""

from __future__ import annotations

from pathlib import Path

import pytest

from crawlpairs.config import Config
from crawlpairs.jobs.dedup import DedupStage
from crawlpairs.jobs.extract import ExtractStage
from crawlpairs.jobs.publish import PublishStage
from crawlpairs.stage import run_stage
from support.publish import crawl_files, publish_cfg


@pytest.fixture(scope="session")
def root(spark, shared_data, lid_model, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("publish-root")
    cfg = Config(input=crawl_files(shared_data), output=str(out))
    cfg.extract.lid_model = lid_model
    run_stage(ExtractStage, cfg, spark=spark)
    cfg = Config(input=[str(out / "candidates")], output=str(out))
    cfg.dedup.near_dup = False  # dedup's own tests cover near-dup; here only its output matters
    run_stage(DedupStage, cfg, spark=spark)
    return out


@pytest.fixture(scope="session")
def published(spark, root) -> tuple[Path, object]:
    stats = run_stage(PublishStage, publish_cfg(root, rows_per_file=300), spark=spark)
    return root / "dataset", stats


