"""extract writing to s3:// under real faults: a fault proxy in front of SeaweedFS on every PUT.

Writes are where a long crawl job on an object store meets 503 SlowDown, 500 InternalError
and connections cut in the middle of an upload. What must hold (docs/errors.md):
- a failed upload is made again with back-off (`storage.retrying_write`), and what lands
  is the whole object, never the part sent before the cut;
- when the retries are spent the file is pending (PendingWork, exit 3): no manifest, and
  no data object left behind (an orphan is deleted by the driver), so `candidates/` never
  shows a file with rows missing;
- a re-run with a healthy store ends with exactly a clean run's rows, none twice;
- a driver SIGKILLed between a file's rows and its manifest leaves an orphan object on S3
  that the re-run deletes and rewrites.
Rows are compared as (source_file, url, text) multisets with a clean run to a local folder.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import pyarrow.dataset as ds
import pytest
from pyarrow import fs as pafs

from crawlpairs import storage
from crawlpairs.config import Config, StorageConfig
from crawlpairs.errors import TransientIOError
from crawlpairs.generate import generate
from crawlpairs.jobs.extract import MANIFESTS, PAUSE_ENV, ExtractStage, file_key
from crawlpairs.stage import PendingWork, run_stage
from support import faults
from support.servers import ACCESS_KEY, SECRET_KEY

pytestmark = pytest.mark.integration
COLS = ("source_file", "url", "text")


def quick(st: StorageConfig, retries: int) -> StorageConfig:
    st.io_retries, st.io_backoff_base, st.io_backoff_max = retries, 0.05, 0.2
    return st


@pytest.fixture
def proxy(s3_server):
    with faults.FaultProxy(s3_server.endpoint) as p:
        yield p


def through(proxy: faults.FaultProxy, retries: int = 4) -> StorageConfig:
    return quick(StorageConfig(s3_endpoint=proxy.endpoint, s3_region="us-east-1"), retries)


# -- storage: one upload ------------------------------------------------------------------


def test_uploads_are_retried_and_land_whole(s3_server, proxy, tmp_path):
    data = os.urandom(3 << 20)  # several TCP windows: a cut at half really is mid-upload
    local = tmp_path / "f.bin"
    local.write_bytes(data)
    base = f"w-{uuid.uuid4().hex[:8]}"
    cases = {"slowdown": [faults.status(503)], "internal": [faults.status(500, s3_code="InternalError")],
             "reset": [faults.cut(0.5)], "short": [faults.cut(0.5, reset=False)],
             "twice": [faults.cut(0.3), faults.status(503)]}
    for name, script in cases.items():
        proxy.inject(f"{base}/{name}", *script, methods=("PUT",))
        uri = s3_server.uri(base, f"{name}.bin")
        if name == "twice":
            storage.put_file(str(local), uri, through(proxy))
        else:
            storage.write_bytes(uri, data, through(proxy))
        assert storage.read_bytes(uri, s3_server.storage) == data, name
        hits = [k for m, p, _, k in proxy.log if p.endswith(f"/{name}.bin") and m == "PUT"]
        assert hits == [f.kind for f in script] + [""], (name, hits)


@pytest.mark.parametrize("fault", [faults.status(503), faults.cut(0.5)], ids=["slowdown", "cut"])
def test_an_upload_that_keeps_failing_raises_and_leaves_nothing(s3_server, proxy, fault):
    uri = s3_server.uri(f"w-{uuid.uuid4().hex[:8]}", "never.bin")
    proxy.inject("never.bin", fault, every=True, methods=("PUT",))
    with pytest.raises(TransientIOError, match="after 2 retries"):
        storage.write_bytes(uri, os.urandom(1 << 20), through(proxy, retries=2))
    tries = [m for m, p, _, _ in proxy.log if p.endswith("never.bin")]
    # 1 + 2 retries; aiohttp itself tries an idempotent request once more when a pooled
    # connection dies under it (the reset), so a cut can cost two PUTs per try
    assert set(tries) == {"PUT"} and 3 <= len(tries) <= 6, tries
    assert not storage.exists(uri, s3_server.storage)  # a cut upload is never stored in part


# -- the extract job --------------------------------------------------------------------


@pytest.fixture(scope="module")
def wats(tmp_path_factory) -> list[str]:
    result = generate(str(tmp_path_factory.mktemp("gen")), kind="wat", files=4, pages_per_file=150, seed=11)
    return sorted(str(p) for p in result.wat_files)


def job_cfg(inputs: list[str], out: str, lid_model: str, st: StorageConfig | None = None) -> Config:
    cfg = Config()
    cfg.input, cfg.output, cfg.extract.lid_model = list(inputs), out, lid_model
    if st is not None:
        cfg.storage = st
    return cfg


def local_rows(out: Path) -> Counter:
    table = ds.dataset(str(out / "candidates"), format="parquet", partitioning="hive").to_table(columns=list(COLS))
    return Counter(zip(*(table.column(c).to_pylist() for c in COLS), strict=True))


@pytest.fixture(scope="module")
def clean(spark, wats, lid_model, tmp_path_factory) -> Counter:
    out = tmp_path_factory.mktemp("clean")
    run_stage(ExtractStage, job_cfg(wats, str(out), lid_model), spark)
    got = local_rows(out)
    assert sum(got.values()) > 500 and len(got) == sum(got.values())
    return got


class S3Out:
    """One output root on the S3 server, looked at directly (not through the proxy)."""

    def __init__(self, s3_server) -> None:
        self.server, self.prefix = s3_server, f"x-{uuid.uuid4().hex[:10]}"
        self.root = s3_server.uri(self.prefix)
        self.fs = pafs.S3FileSystem(endpoint_override=s3_server.endpoint, scheme="http", access_key=ACCESS_KEY,
                                    secret_key=SECRET_KEY, region="us-east-1")

    def keys(self, under: str) -> set[str]:
        sel = pafs.FileSelector(f"{self.server.bucket}/{self.prefix}/{under}", recursive=True, allow_not_found=True)
        return {i.path.rsplit("/", 1)[-1] for i in self.fs.get_file_info(sel) if i.type == pafs.FileType.File}

    def data_keys(self) -> set[str]:
        return {k.removesuffix(".parquet") for k in self.keys("candidates") if k.endswith(".parquet")}

    def manifests(self) -> set[str]:
        return {k.removesuffix(".json") for k in self.keys(f"candidates_meta/{MANIFESTS}")}

    def rows(self) -> Counter:
        data = ds.dataset(f"{self.server.bucket}/{self.prefix}/candidates", filesystem=self.fs, format="parquet",
                          partitioning="hive", ignore_prefixes=["_", "."])
        table = data.to_table(columns=list(COLS))
        return Counter(zip(*(table.column(c).to_pylist() for c in COLS), strict=True))


def test_faulty_puts_are_retried_and_lose_nothing(spark, s3_server, proxy, wats, lid_model, clean):
    out = S3Out(s3_server)
    k = [file_key(w) for w in wats]
    proxy.inject(f"{k[0]}.parquet", faults.status(503), methods=("PUT",))  # a data object: SlowDown
    proxy.inject(f"{k[1]}.json", faults.status(500, s3_code="InternalError"), methods=("PUT",))  # a manifest
    proxy.inject(f"{k[2]}.parquet", faults.cut(0.5), methods=("PUT",))  # cut mid-upload
    proxy.inject(f"{k[3]}.json", faults.cut(0.5), faults.status(503), methods=("PUT",))
    stats = run_stage(ExtractStage, job_cfg(wats, out.root, lid_model, through(proxy)), spark)  # no PendingWork
    hit = Counter(kind for m, _, _, kind in proxy.log if m == "PUT" and kind)
    assert hit == {"status": 3, "cut": 2}, proxy.log
    assert stats.counts["files_committed"] == len(wats) and "pending" not in stats.extra
    assert out.rows() == clean
    assert out.data_keys() == out.manifests() == set(k)


def test_puts_failing_past_the_retries_leave_files_pending_then_the_rerun_completes(
        spark, s3_server, proxy, wats, lid_model, clean):
    out = S3Out(s3_server)
    k = [file_key(w) for w in wats]
    proxy.inject(f"{k[1]}.parquet", faults.status(503), every=True, methods=("PUT",))  # rows never land
    proxy.inject(f"{k[2]}.json", faults.cut(0.5), every=True, methods=("PUT",))  # rows land, manifest never
    cfg = job_cfg(wats, out.root, lid_model, through(proxy, retries=2))
    with pytest.raises(PendingWork) as info:
        run_stage(ExtractStage, cfg, spark)
    assert sorted(info.value.pending) == sorted([wats[1], wats[2]])
    assert out.manifests() == {k[0], k[3]}
    # file 2's data object landed before its manifest failed: the driver removed it, so
    # candidates/ shows only committed files, each with all its rows
    assert out.data_keys() == {k[0], k[3]}
    committed = Counter({r: n for r, n in clean.items() if r[0] in (wats[0], wats[3])})
    assert out.rows() == committed
    doc = storage.read_json(storage.join(out.root, "candidates_meta", "_stats.json"), s3_server.storage)
    assert doc["counts"]["rows_out"] == sum(committed.values())
    assert sorted(p["file"] for p in doc["extra"]["pending"]) == sorted([wats[1], wats[2]])

    proxy.script.clear()
    again = run_stage(ExtractStage, cfg, spark)
    assert again.extra["this_run"]["counts"]["files_read"] == 2
    assert out.rows() == clean
    assert out.data_keys() == out.manifests() == set(k)


def test_driver_killed_between_rows_and_manifest_on_s3_then_rerun(spark, s3_server, wats, lid_model, clean):
    """SIGKILL the whole driver (JVM and Python workers) while a task sits between a file's data
    object and its manifest; the re-run deletes that orphan and ends with the clean rows."""
    out = S3Out(s3_server)
    args = [sys.executable, "-m", "crawlpairs.cli", "extract", "--input", *wats, "--output", out.root,
            "--lid-model", lid_model, "--master", "local[1]", "--conf", "spark.ui.enabled=false",
            "--s3-endpoint", s3_server.endpoint, "--s3-region", "us-east-1"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, PAUSE_ENV: "60"}, start_new_session=True)
    try:
        deadline = time.monotonic() + 400
        while time.monotonic() < deadline and proc.poll() is None and not out.data_keys() - out.manifests():
            time.sleep(0.2)
        assert proc.poll() is None, proc.stderr.read()[-3000:]
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    before = out.manifests()
    assert out.data_keys() - before, "killed inside the window: a data object without its manifest"

    resumed = run_stage(ExtractStage, job_cfg(wats, out.root, lid_model, s3_server.storage), spark)
    assert out.rows() == clean
    assert out.data_keys() == out.manifests() == {file_key(w) for w in wats}
    assert resumed.counts["rows_out"] == sum(clean.values())
    assert resumed.extra["this_run"]["counts"]["files_read"] == len(wats) - len(before)
