"""dedup with near-dup on survives losing an executor of a real standalone cluster.

Near-dup clustering runs connected components in rounds, each starting from a checkpoint
that cuts the lineage. With `localCheckpoint` those checkpoints were blocks in the
executors' block managers: a SIGKILLed executor took its blocks along and the next round
failed ("Checkpoint block ... not found"). Now they are Parquet under
`<output>/deduped_meta/_checkpoints/` (jobs/dedup_graph.Checkpoints): the job must finish
and give exactly what a clean run gives, and leave no checkpoint behind.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.dataset as ds
import pytest

from crawlpairs.jobs.dedup import DedupStage
from crawlpairs.stage import run_stage
from support.dedup import chained_rows, dedup_config, write_candidates
from support.faults import executor_pids

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1200)]


def kept(out: Path) -> list[tuple[str, str]]:
    data = ds.dataset(out / "deduped", format="parquet", partitioning="hive", ignore_prefixes=["_", "."])
    return sorted((r["url"], r["text"]) for r in data.to_table(columns=["url", "text"]).to_pylist())


def test_executor_killed_during_near_dup_components(standalone_cluster, spark, tmp_path):
    inp = write_candidates(tmp_path / "candidates", chained_rows(), files=4)
    out = tmp_path / "cluster"
    env = {**standalone_cluster.env, "PYSPARK_DRIVER_PYTHON": sys.executable}
    proc = subprocess.Popen(
        [sys.executable, "-m", "crawlpairs.cli", "dedup", "--input", str(inp), "--output", str(out), "--near-dup",
         "--master", standalone_cluster.master_url, "--shuffle-partitions", "4", "--conf", "spark.ui.enabled=false",
         "--conf", "spark.executor.memory=768m"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
    try:
        # the verified edges (checkpoint 2) are on disk: components rounds come next
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and proc.poll() is None:
            if any((out / "deduped_meta" / "_checkpoints").glob("*/t0002/*.parquet")):
                break
            time.sleep(0.1)
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        victims = executor_pids(standalone_cluster)
        assert victims, "no executor JVM found"
        os.kill(victims[0], signal.SIGKILL)
        _, err = proc.communicate(timeout=900)
        assert proc.returncode == 0, err[-4000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert "Lost executor" in err  # the fault landed while the job ran
    run_stage(DedupStage, dedup_config(inp, tmp_path / "clean", near_dup=True), spark)

    got, want = kept(out), kept(tmp_path / "clean")
    assert got == want and len(set(got)) == len(got)
    stats = json.loads((out / "deduped_meta" / "_stats.json").read_text())
    clean = json.loads((tmp_path / "clean" / "deduped_meta" / "_stats.json").read_text())
    assert stats["dropped"] == clean["dropped"] and stats["dropped"]["near_dup"] > 500
    assert stats["extra"]["near_dup"]["cc_rounds"] >= 2
    assert stats["extra"]["near_dup"]["size_histogram"] == clean["extra"]["near_dup"]["size_histogram"]
    assert not list((out / "deduped_meta" / "_checkpoints").glob("*"))  # cleaned after
