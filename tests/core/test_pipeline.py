"""`crawlpairs run --demo`: every stage chained on generated crawl files, offline, on local Spark."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pyarrow.dataset as ds
import pytest

from crawlpairs.config import Config
from crawlpairs.jobs.pipeline import PipelineStage
from crawlpairs.stage import Context, UsageError, run_stage

pytestmark = pytest.mark.integration


def stats(root, sub):
    """A stage's `_stats.json`: in `<folder>_meta/` for data-only folders, else in the folder."""
    meta = root / f"{sub}_meta" / "_stats.json"
    return json.loads((meta if meta.exists() else root / sub / "_stats.json").read_text())


def test_demo_runs_every_stage_and_rows_flow_through(spark, tmp_path):
    cfg = Config()
    cfg.output = str(tmp_path / "demo")
    cfg.spark.shuffle_partitions = 4
    args = argparse.Namespace(demo=True, stages="extract,dedup,download,score,index,publish,report",
                              demo_pages=40)
    run_stage(PipelineStage, cfg, spark, args=args)
    root = tmp_path / "demo"

    extract, dedup = stats(root, "candidates"), stats(root, "deduped")
    download, score = stats(root, "images"), stats(root, "scored")
    assert extract["counts"]["rows_out"] > 100
    assert dedup["counts"]["rows_in"] == extract["counts"]["rows_out"]
    assert 0 < dedup["counts"]["rows_out"] <= dedup["counts"]["rows_in"]
    assert download["counts"]["rows_in"] == dedup["counts"]["rows_out"]
    shards = ds.dataset(sorted(str(p) for p in (root / "images").glob("*.parquet")),
                        format="parquet").to_table().to_pandas()
    ok = shards[shards.status == "success"]
    assert len(ok) > 0.5 * len(shards), shards.status.value_counts()
    assert score["counts"]["rows_out"] == len(np.concatenate(
        [np.load(p) for p in sorted((root / "embeddings" / "img_emb").glob("*.npy"))]))
    # The index maps a stored embedding back to its own row.
    from crawlpairs.udfs.index.knn import query

    first = sorted((root / "embeddings" / "img_emb").glob("*.npy"))[0]
    meta = sorted((root / "embeddings" / "metadata").glob("*.parquet"))[0]
    vec = np.load(first)[0]
    hits = query(str(root / "index"), vector=vec, k=1)
    assert hits[0]["url"] == ds.dataset(str(meta)).to_table().column("url")[0].as_py()
    summary = json.loads((root / "_stats.json").read_text())
    assert set(summary["extra"]) >= {"extract", "dedup", "download", "score", "index", "publish"}
    # publish: every scored row, with the crawl provenance the image shards carried
    data = ds.dataset(str(root / "dataset" / "data"), format="parquet").to_table().to_pandas()
    assert len(data) == score["counts"]["rows_out"] and data.uid.is_unique
    assert data.crawl.notna().all() and data.source_file.notna().all() and data.language.notna().all()
    laion = ds.dataset(str(root / "dataset" / "laion"), format="parquet").to_table()
    assert laion.num_rows == len(data) and laion.column("WIDTH").null_count == 0
    assert (root / "dataset" / "README.md").read_text().startswith("---\n")
    page = (root / "report" / "index.html").read_text()  # the demo ends with its report
    samples = page.split('<section id="samples">')[1]
    assert samples.count('<img src="data:image/') >= 6  # the grid shows downloaded images inline
    assert "kept by the score filters" in page and 'aria-label="CLIP similarity"' in page


def test_unknown_stage_is_a_usage_error(tmp_path):
    cfg = Config()
    cfg.output = str(tmp_path)
    with pytest.raises(UsageError, match="--stages"):
        PipelineStage().run(Context(cfg=cfg, args=argparse.Namespace(stages="extract,nope")))


def test_a_stage_runtime_setting_does_not_outlive_the_stage(spark, tmp_path):
    """`Context.size_shuffles` sets the shuffle partitions for its stage on a session that
    `crawlpairs run` and notebooks share between stages: run_stage unsets what a stage
    recorded in `session_conf`, also when the stage fails."""
    from crawlpairs.stage import Stage

    key = "spark.sql.crawlpairs.test.sized"

    class Sizing(Stage):
        name = "sizing"
        output_dir = "sizing"
        input_required = False
        fail = False

        def run(self, ctx: Context) -> None:
            ctx.spark.conf.set(key, "7")
            ctx.session_conf.append(key)
            assert ctx.spark.conf.get(key) == "7"
            if self.fail:
                raise RuntimeError("stage failed")

    cfg = Config()
    cfg.output = str(tmp_path / "out")
    run_stage(Sizing, cfg, spark)
    assert spark.conf.get(key, None) is None
    failing = Sizing()
    failing.fail = True
    with pytest.raises(RuntimeError):
        run_stage(failing, cfg, spark)
    assert spark.conf.get(key, None) is None
