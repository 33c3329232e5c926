"""dedup writing to s3:// (Spark's S3A) through a fault proxy in front of SeaweedFS.

`crawlpairs dedup --near-dup` in a subprocess (its own JVM, S3A pointed at the proxy), so
every PUT of the job goes through the proxy: the Parquet checkpoints of near-dup
clustering, the task outputs, the commit's copies, the seen-set and `_stats.json`.
- 503 SlowDown, 500 InternalError and a connection cut mid-upload on some PUTs: S3A
  retries them; the job ends with exactly a clean run's rows (a local run of the same
  input), no row twice, and no checkpoint left behind.
- a 503 on the job commit's copy of a part file into `deduped/` (S3A's rename): retried too.
- uploads that fail past S3A's retries (`--io-retries 1`: S3A follows it): the job fails (non-zero exit) and commits
  nothing (no `_stats.json`, no seen-set manifest); the re-run with a healthy store
  ends like the clean run (exact dedup only here: near-dup adds minutes, not cover).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections import Counter

import pyarrow.dataset as ds
import pytest
from pyarrow import fs as pafs

from crawlpairs import storage
from crawlpairs.jobs.dedup import DedupStage
from crawlpairs.stage import run_stage
from support import faults
from support.dedup import chained_rows, dedup_config, write_candidates
from support.servers import ACCESS_KEY, SECRET_KEY

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1500)]


@pytest.fixture(scope="module")
def candidates(tmp_path_factory):
    # short chains: near-dup still needs several components rounds (each a checkpoint on S3), fewer of them
    return write_candidates(tmp_path_factory.mktemp("cand") / "candidates",
                            chained_rows(chains=8, length=12, singles=300), files=3)


def clean_run(spark, candidates, out, near_dup: bool) -> tuple[Counter, dict]:
    run_stage(DedupStage, dedup_config(candidates, out, out / "seen", near_dup=near_dup), spark)
    data = ds.dataset(out / "deduped", format="parquet", ignore_prefixes=["_", "."]).to_table(columns=["url", "text"])
    stats = json.loads((out / "deduped_meta" / "_stats.json").read_text())
    return Counter(zip(data.column("url").to_pylist(), data.column("text").to_pylist(), strict=True)), stats


@pytest.fixture(scope="module")
def clean(spark, candidates, tmp_path_factory):
    return clean_run(spark, candidates, tmp_path_factory.mktemp("clean"), near_dup=True)


@pytest.fixture(scope="module")
def clean_exact(spark, candidates, tmp_path_factory):
    """Exact dedup only: the failure test needs no near-dup rounds (each a checkpoint on S3) to show it."""
    return clean_run(spark, candidates, tmp_path_factory.mktemp("clean-exact"), near_dup=False)


def s3_rows(s3_server, prefix: str) -> Counter:
    fs = pafs.S3FileSystem(endpoint_override=s3_server.endpoint, scheme="http", access_key=ACCESS_KEY,
                           secret_key=SECRET_KEY, region="us-east-1")
    data = ds.dataset(f"{s3_server.bucket}/{prefix}/deduped", filesystem=fs, format="parquet",
                      ignore_prefixes=["_", "."]).to_table(columns=["url", "text"])
    return Counter(zip(data.column("url").to_pylist(), data.column("text").to_pylist(), strict=True))


def dedup_cli(candidates, root: str, endpoint: str, *flags: str, near_dup: bool = True) -> subprocess.CompletedProcess:
    args = [sys.executable, "-m", "crawlpairs.cli", "dedup", "--input", str(candidates), "--output", root,
            "--seen", storage.join(root, "seen"), "--near-dup" if near_dup else "--no-near-dup",
            "--master", "local[2]", "--shuffle-partitions", "3",
            # each seen-set prefix folder is one file written and committed through S3A (~0.15 s per file
            # on this loopback SeaweedFS, 256 per key kind at the default 2 chars): 16 keep every path
            "--seen-prefix-chars", "1",
            "--s3-endpoint", endpoint, "--s3-region", "us-east-1", "--conf", "spark.ui.enabled=false", *flags]
    return subprocess.run(args, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "PYSPARK_PYTHON": sys.executable})


def test_faulty_puts_through_s3a_are_retried_and_lose_nothing(s3_server, candidates, clean):
    want, want_stats = clean
    prefix = f"d-{uuid.uuid4().hex[:10]}"
    root = s3_server.uri(prefix)
    with faults.FaultProxy(s3_server.endpoint) as proxy:
        proxy.inject("part-00000", faults.status(503), methods=("PUT",))
        proxy.inject("part-00001", faults.cut(0.5), methods=("PUT",))
        proxy.inject("part-00002", faults.status(500, s3_code="InternalError"), methods=("PUT",))
        proxy.inject("/deduped/part-", faults.status(503), methods=("PUT",))  # the job commit's copy (S3A rename)
        res = dedup_cli(candidates, root, proxy.endpoint, "--io-backoff-base", "0.2")
        assert res.returncode == 0, res.stderr[-4000:]
        hit = Counter((kind, "/deduped/part-" in path) for m, path, _, kind in proxy.log if m == "PUT" and kind)
    assert hit == {("status", False): 2, ("cut", False): 1, ("status", True): 1}, hit
    got = s3_rows(s3_server, prefix)
    assert got == want and max(got.values()) == 1
    stats = storage.read_json(storage.join(root, "deduped_meta", "_stats.json"), s3_server.storage)
    assert stats["dropped"] == want_stats["dropped"] and stats["dropped"]["near_dup"] > 50
    # no checkpoint object left (listed with the S3 API itself: SeaweedFS, unlike S3, keeps emptied
    # folders, which fsspec then reports as an entry)
    left = s3_server.client.list_objects_v2(Bucket=s3_server.bucket, Prefix=f"{prefix}/deduped_meta/_checkpoints/")
    assert left["KeyCount"] == 0, left.get("Contents")


def test_puts_failing_past_s3a_retries_commit_nothing_then_the_rerun_matches(s3_server, candidates, clean_exact):
    want, want_stats = clean_exact
    prefix = f"d-{uuid.uuid4().hex[:10]}"
    root = s3_server.uri(prefix)
    with faults.FaultProxy(s3_server.endpoint) as proxy:
        proxy.inject("part-00001", faults.status(503), every=True, methods=("PUT",))
        # S3A's retries follow --io-retries (crawlpairs/spark.py): one retry, then the job fails
        res = dedup_cli(candidates, root, proxy.endpoint, "--io-retries", "1", "--io-backoff-base", "0.01",
                        near_dup=False)
    assert res.returncode != 0
    assert not storage.exists(storage.join(root, "deduped_meta", "_stats.json"), s3_server.storage)
    assert not storage.glob(storage.join(root, "seen", "_commits", "*"), s3_server.storage)

    res = dedup_cli(candidates, root, s3_server.endpoint, near_dup=False)
    assert res.returncode == 0, res.stderr[-4000:]
    got = s3_rows(s3_server, prefix)
    assert got == want and max(got.values()) == 1
    stats = storage.read_json(storage.join(root, "deduped_meta", "_stats.json"), s3_server.storage)
    assert stats["dropped"] == want_stats["dropped"]
    assert len(storage.glob(storage.join(root, "seen", "_commits", "*"), s3_server.storage)) == 1
