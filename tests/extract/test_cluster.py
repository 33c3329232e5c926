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
from support.faults import executor_pids

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

    order = ["uid", "source_file"]  # a pair may come from two files (dedup removes it later)
    on_cluster = read_table(tmp_path / "cluster" / "candidates").sort_values(order).reset_index(drop=True)
    local = read_table(tmp_path / "local" / "candidates").sort_values(order).reset_index(drop=True)
    assert len(on_cluster) > 50
    cols = ["uid", "url", "text", "page_url", "language", "license", "crawl", "source_file", "source_offset"]
    assert on_cluster[cols].equals(local[cols])
    assert (tmp_path / "cluster" / "candidates_meta" / "_stats.json").exists()


def test_executor_killed_mid_job_loses_and_doubles_nothing(standalone_cluster, spark, lid_model, tmp_path):
    """kill -9 an executor JVM while its task sits between a file's rows and its manifest: Spark reruns
    the task elsewhere, the rerun overwrites the same data file, and the result equals a clean run."""
    from crawlpairs.generate import generate
    from crawlpairs.jobs.extract import PAUSE_ENV

    wats = sorted(str(p) for p in generate(str(tmp_path / "gen"), kind="wat", files=4, pages_per_file=100,
                                           seed=5).wat_files)
    out = tmp_path / "cluster"
    env = {**standalone_cluster.env, "PYSPARK_DRIVER_PYTHON": sys.executable}
    proc = subprocess.Popen(
        [sys.executable, "-m", "crawlpairs.cli", "extract", "--input", *wats, "--output", str(out),
         "--lid-model", lid_model, "--master", standalone_cluster.master_url, "--conf", "spark.ui.enabled=false",
         "--conf", "spark.executor.memory=768m", "--conf", f"spark.executorEnv.{PAUSE_ENV}=4"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 400
        while time.monotonic() < deadline and proc.poll() is None:
            if any((out / "candidates").glob("crawl=*/*.parquet")):
                break
            time.sleep(0.1)
        assert proc.poll() is None, proc.stderr.read()[-2000:]
        victims = executor_pids(standalone_cluster)
        assert victims, "no executor JVM found"
        os.kill(victims[0], signal.SIGKILL)
        assert proc.wait(timeout=400) == 0, proc.stderr.read()[-3000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    cfg = Config()
    cfg.input, cfg.output, cfg.extract.lid_model = wats, str(tmp_path / "clean"), lid_model
    run_stage(ExtractStage, cfg, spark)
    cols = ["source_file", "uid", "url", "text"]
    got = read_table(out / "candidates")[cols].sort_values(cols).reset_index(drop=True)
    want = read_table(tmp_path / "clean" / "candidates")[cols].sort_values(cols).reset_index(drop=True)
    assert len(want) > 300 and got.equals(want)
    assert len(list((out / "candidates_meta" / "files").glob("*.json"))) == len(wats)
