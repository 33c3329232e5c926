"""The extract job under real faults: a SIGKILLed driver, then a re-run.

Each test compares the final `candidates/` with a clean run of the same inputs: the
multiset of (source_file, url, text) must be equal (nothing lost, nothing twice).
Inputs are small generated Common Crawl-style WATs.

`CRAWLPAIRS_TEST_PAUSE_BEFORE_MANIFEST` (jobs/extract.py) makes every task sleep after
it published a file's rows and before it writes that file's manifest, so a kill lands
exactly in that window.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pyarrow.dataset as ds
import pytest

from crawlpairs.config import Config
from crawlpairs.generate import generate
from crawlpairs.jobs.extract import MANIFESTS, PAUSE_ENV, ExtractStage, file_key
from crawlpairs.stage import run_stage


def rows(out: Path) -> Counter:
    """(source_file, url, text) of every visible row of candidates/, with multiplicity."""
    table = ds.dataset(str(out / "candidates"), format="parquet", partitioning="hive").to_table(
        columns=["source_file", "url", "text"])
    return Counter(zip(*(table.column(c).to_pylist() for c in ("source_file", "url", "text")), strict=True))


@pytest.fixture(scope="module")
def wats(tmp_path_factory) -> list[str]:
    result = generate(str(tmp_path_factory.mktemp("gen")), kind="wat", files=4, pages_per_file=150, seed=11)
    return sorted(str(p) for p in result.wat_files)


@pytest.fixture(scope="module")
def clean(spark, wats, lid_model, tmp_path_factory) -> Counter:
    out = tmp_path_factory.mktemp("clean")
    run_stage(ExtractStage, job_cfg(wats, out, lid_model), spark)
    got = rows(out)
    assert sum(got.values()) > 500 and len(got) == sum(got.values())
    return got


def job_cfg(inputs: list[str], out: Path, lid_model: str) -> Config:
    cfg = Config()
    cfg.input, cfg.output, cfg.extract.lid_model = list(inputs), str(out), lid_model
    return cfg


def start_cli(inputs: list[str], out: Path, lid_model: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    """The CLI in its own process group: kill -9 of the group takes the JVM and Python workers too."""
    args = [sys.executable, "-m", "crawlpairs.cli", "extract", "--input", *inputs, "--output", str(out),
            "--lid-model", lid_model, "--master", "local[1]", "--conf", "spark.ui.enabled=false"]
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, **(env or {})}, start_new_session=True)


def wait_for(proc: subprocess.Popen, check, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if proc.poll() is not None:
            pytest.fail(f"the run ended (rc {proc.returncode}) before the fault: {proc.stderr.read()[-2000:]}")
        time.sleep(0.1)
    pytest.fail("the fault point was never reached")


def kill_group(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def manifests(out: Path) -> set[str]:
    return {p.stem for p in (out / "candidates" / MANIFESTS).glob("*.json")}


def data_keys(out: Path) -> set[str]:
    return {p.stem for p in (out / "candidates").glob("crawl=*/*.parquet")}


def test_driver_killed_between_a_files_rows_and_its_manifest(spark, wats, lid_model, clean, tmp_path):
    proc = start_cli(wats, tmp_path, lid_model, {PAUSE_ENV: "60"})
    wait_for(proc, lambda: data_keys(tmp_path) - manifests(tmp_path))
    kill_group(proc)
    orphans = data_keys(tmp_path) - manifests(tmp_path)
    assert orphans, "killed inside the window: a data file without its manifest"
    assert rows(tmp_path)  # the orphan's rows are visible until the re-run (and only then replaced)

    resumed = run_stage(ExtractStage, job_cfg(wats, tmp_path, lid_model), spark)
    assert rows(tmp_path) == clean
    assert resumed.extra["this_run"]["counts"]["files_read"] == len(wats) - resumed.extra["this_run"][
        "counts"]["files_skipped_committed"]
    assert resumed.counts["rows_out"] == sum(clean.values())
    assert data_keys(tmp_path) <= manifests(tmp_path) == {file_key(w) for w in wats}


def test_driver_killed_at_a_random_point_then_rerun(spark, wats, lid_model, clean, tmp_path):
    seed = int(os.environ.get("CRAWLPAIRS_FAULT_SEED") or random.randrange(1 << 30))
    delay = random.Random(seed).uniform(0.0, 1.5)
    proc = start_cli(wats, tmp_path, lid_model, {PAUSE_ENV: "0.5"})
    wait_for(proc, lambda: manifests(tmp_path))  # the job is running: files are being committed
    time.sleep(delay)
    finished = proc.poll() is not None
    kill_group(proc) if not finished else proc.wait()
    before = manifests(tmp_path)
    resumed = run_stage(ExtractStage, job_cfg(wats, tmp_path, lid_model), spark)
    assert rows(tmp_path) == clean, f"seed {seed} (CRAWLPAIRS_FAULT_SEED to replay)"
    assert resumed.extra["this_run"]["counts"]["files_skipped_committed"] == len(before)
