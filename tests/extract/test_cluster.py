"""extract on a real standalone Spark cluster, and a real crash in the middle of a run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.dataset as ds
import pyspark
import pytest

from crawlpairs.config import Config
from crawlpairs.jobs.extract import ExtractStage
from crawlpairs.stage import run_stage

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration


def read_table(path: Path):
    return ds.dataset(str(path), format="parquet", partitioning="hive").to_table().to_pandas()


def test_spark_submit_on_standalone_cluster_matches_local(standalone_cluster, spark, shared_data, lid_model,
                                                          tmp_path):
    inputs = [str(shared_data / "wat"), str(shared_data / "warc" / "dolma-sample-0000.warc.gz"),
              str(shared_data / "warc" / "resiliparse-CC-MAIN-2020-34.warc.gz")]
    submit = Path(pyspark.__file__).parent / "bin" / "spark-submit"
    env = {**standalone_cluster.env, "PYSPARK_DRIVER_PYTHON": sys.executable}
    res = subprocess.run(
        [str(submit), "--master", standalone_cluster.master_url, "--conf", "spark.ui.enabled=false",
         "--conf", "spark.executor.memory=768m", str(REPO / "jobs" / "extract.py"),
         "--input", *inputs, "--output", str(tmp_path / "cluster"), "--lid-model", lid_model],
        capture_output=True, text=True, env=env, timeout=540)
    assert res.returncode == 0, res.stderr[-3000:]

    cfg = Config()
    cfg.input, cfg.output, cfg.extract.lid_model = inputs, str(tmp_path / "local"), lid_model
    run_stage(ExtractStage, cfg, spark)

    on_cluster = read_table(tmp_path / "cluster" / "candidates").sort_values("uid").reset_index(drop=True)
    local = read_table(tmp_path / "local" / "candidates").sort_values("uid").reset_index(drop=True)
    assert len(on_cluster) > 50
    cols = ["uid", "url", "text", "page_url", "language", "license", "crawl", "source_file", "source_offset"]
    assert on_cluster[cols].equals(local[cols])
    assert (tmp_path / "cluster" / "candidates" / "_stats.json").exists()


def test_killed_run_resumes_to_the_same_result(spark, shared_data, lid_model, tmp_path):
    """SIGKILL the CLI after its first committed batch; the re-run ends where an unbroken run does."""
    inputs = [str(p) for p in sorted((shared_data / "warc").iterdir())]
    args = ["--input", *inputs, "--lid-model", lid_model, "--files-per-batch", "1", "--master", "local[1]",
            "--conf", "spark.ui.enabled=false"]
    proc = subprocess.Popen([sys.executable, "-m", "crawlpairs.cli", "extract", "--output", str(tmp_path / "a"),
                             *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    committed = tmp_path / "a" / "candidates" / "_committed"
    deadline = time.monotonic() + 400
    while time.monotonic() < deadline and proc.poll() is None:
        if committed.exists() and any(committed.glob("*.json")):
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = len(list(committed.glob("*.json")))
    assert 1 <= done_before < len(inputs)

    cfg = Config()
    cfg.input, cfg.extract.lid_model, cfg.extract.files_per_batch = inputs, lid_model, 1
    cfg.output = str(tmp_path / "a")
    resumed = run_stage(ExtractStage, cfg, spark)
    assert resumed.extra["this_run"]["counts"]["files_skipped_committed"] == done_before
    cfg.output = str(tmp_path / "b")
    run_stage(ExtractStage, cfg, spark)

    a = read_table(tmp_path / "a" / "candidates").sort_values(["uid", "batch"]).reset_index(drop=True)
    b = read_table(tmp_path / "b" / "candidates").sort_values(["uid", "batch"]).reset_index(drop=True)
    assert a.equals(b)
