"""The extract job under real faults: a SIGKILLed driver, then a re-run.

Each test compares the final `candidates/` with a clean run of the same inputs: the
multiset of (source_file, url, text) must be equal (nothing lost, nothing twice).
Inputs are small generated Common Crawl-style WATs.

`CRAWLPAIRS_TEST_PAUSE_BEFORE_MANIFEST` (jobs/extract.py) makes every task sleep after
it published a file's rows and before it writes that file's manifest, so a kill lands
exactly in that window.
"""

from __future__ import annotations

import json
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
from crawlpairs.stage import PENDING_EXIT, PendingWork, run_stage

REPO = Path(__file__).resolve().parents[2]


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
    return {p.stem for p in (out / "candidates_meta" / MANIFESTS).glob("*.json")}


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


REAL_FILE = "warc/CC-MAIN-20140820021334-00006-ip-10-180-136-8.ec2.internal.warc.gz"  # crawl from warcinfo


def block_writes(out: Path) -> Path:
    """A plain file where the 2014 WARC's partition folder must go: writing its rows fails."""
    blocker = out / "candidates" / "crawl=CC-MAIN-2014-35"
    blocker.parent.mkdir(parents=True, exist_ok=True)
    blocker.write_text("not a folder")
    return blocker


def test_a_file_whose_write_fails_is_pending_and_the_rerun_reads_only_it(spark, shared_data, lid_model, tmp_path):
    real = str(shared_data / REAL_FILE)
    other = str(shared_data / "warc" / "dolma-sample-0000.warc.gz")
    cfg = job_cfg([real, other], tmp_path, lid_model)
    blocker = block_writes(tmp_path)
    with pytest.raises(PendingWork) as info:
        run_stage(ExtractStage, cfg, spark)
    assert info.value.pending == [real]
    doc = json.loads((tmp_path / "candidates_meta" / "_stats.json").read_text())
    assert [p["file"] for p in doc["extra"]["pending"]] == [real]
    assert doc["extra"]["this_run"]["counts"]["files_pending"] == 1
    assert manifests(tmp_path) == {file_key(other)}  # not committed: no manifest, no rows
    blocker.unlink()
    again = run_stage(ExtractStage, cfg, spark)
    assert again.extra["this_run"]["counts"]["files_read"] == 1
    assert "pending" not in again.extra
    clean_out = tmp_path / "clean"
    run_stage(ExtractStage, job_cfg([real, other], clean_out, lid_model), spark)
    assert rows(tmp_path) == rows(clean_out)


def test_pending_exit_status_through_crawlpairs_run_and_spark_submit(shared_data, lid_model, tmp_path):
    """Status 3 from `crawlpairs run` (which stops before dedup) and from spark-submit."""
    import pyspark

    real = str(shared_data / REAL_FILE)
    block_writes(tmp_path / "run")
    res = subprocess.run([sys.executable, "-m", "crawlpairs.cli", "run", "--stages", "extract,dedup",
                          "--input", real, "--output", str(tmp_path / "run"), "--master", "local[1]",
                          "--conf", "spark.ui.enabled=false"],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == PENDING_EXIT, res.stderr[-2000:]
    assert f"extract: pending {real}" in res.stderr
    assert "pending after transient errors" in res.stderr and "re-run the same command" in res.stderr
    assert not (tmp_path / "run" / "deduped").exists()

    block_writes(tmp_path / "submit")
    submit = Path(pyspark.__file__).parent / "bin" / "spark-submit"
    res = subprocess.run([str(submit), "--master", "local[1]", "--conf", "spark.ui.enabled=false",
                          str(REPO / "jobs" / "extract.py"), "--input", real, "--output", str(tmp_path / "submit"),
                          "--lid-model", lid_model],
                         capture_output=True, text=True, timeout=600,
                         env={**os.environ, "PYSPARK_DRIVER_PYTHON": sys.executable})
    assert res.returncode == PENDING_EXIT, res.stderr[-2000:]


def by_name(counter: Counter) -> Counter:
    """Rows keyed by the input's file name, so an http:// run compares with a local one."""
    return Counter({(f.rsplit("/", 1)[-1], u, t): n for (f, u, t), n in counter.items()})


@pytest.fixture
def http_wats(wats):
    """The generated WATs behind a fault-injecting HTTP server: (server, urls)."""
    from support.faults import FaultHTTPServer

    root = Path(os.path.commonpath(wats))
    with FaultHTTPServer(root) as server:
        yield server, [server.url(os.path.relpath(w, root)) for w in wats]


def quick_retries(cfg: Config, retries: int) -> Config:
    cfg.storage.io_retries, cfg.storage.io_backoff_base, cfg.storage.io_backoff_max = retries, 0.05, 0.2
    return cfg


def test_503_first_get_and_a_cut_halfway_lose_nothing(spark, http_wats, lid_model, clean, tmp_path):
    from support import faults

    server, urls = http_wats
    server.inject(urls[0].rsplit("/", 1)[-1], faults.status(503))
    server.inject(urls[1].rsplit("/", 1)[-1], faults.cut(0.5))
    stats = run_stage(ExtractStage, quick_retries(job_cfg(urls, tmp_path, lid_model), 3), spark)  # no PendingWork
    assert {k for _, _, _, k in server.log} >= {"status", "cut"}, server.log
    assert by_name(rows(tmp_path)) == by_name(clean)
    assert stats.counts["files_committed"] == len(urls) and not stats.errors


def test_retries_exhausted_leave_the_file_pending_then_the_rerun_completes(spark, http_wats, lid_model, clean,
                                                                            tmp_path):
    from support import faults

    server, urls = http_wats
    server.inject(urls[2].rsplit("/", 1)[-1], faults.status(503), every=True)
    cfg = quick_retries(job_cfg(urls, tmp_path, lid_model), 2)
    with pytest.raises(PendingWork) as info:
        run_stage(ExtractStage, cfg, spark)
    assert info.value.pending == [urls[2]]
    assert file_key(urls[2]) not in manifests(tmp_path) and len(manifests(tmp_path)) == len(urls) - 1
    server.script.clear()
    again = run_stage(ExtractStage, cfg, spark)
    assert again.extra["this_run"]["counts"]["files_read"] == 1
    assert by_name(rows(tmp_path)) == by_name(clean)
