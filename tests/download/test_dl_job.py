"""The download stage on real local Spark against the loopback server: layout, resume, retry."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pandas as pd
import pytest
from dl_server import HOSTILE, ImageServer, canary_urls

from crawlpairs.config import Config
from crawlpairs.jobs.download import DownloadStage, uid_column
from crawlpairs.stage import UsageError, run_stage
from crawlpairs.udfs.dl_fetch import error_kind
from crawlpairs.udfs.extract import make_uid

pytestmark = pytest.mark.integration
FLAKY = "http://hostile.test/flaky.jpg?job"  # 500 the first time, an image the second


def _input(tmp: Path, server: ImageServer) -> tuple[str, pd.DataFrame]:
    urls = sorted(server.warc) + [f"http://photos.test{p}" for p in server.photos]
    urls += list(HOSTILE) + list(canary_urls(server.canary.port)) + [FLAKY]
    df = pd.DataFrame({
        "uid": [f"{i:032x}" for i in range(len(urls))], "url": urls, "text": [f"alt text {i}" for i in range(len(urls))],
        "page_url": "http://www.archive.org/", "language": "en", "license": None,
    })
    d = tmp / "deduped"
    d.mkdir()
    df.to_parquet(d / "part-0.parquet")
    return str(d), df


def _config(inp: str, out: Path, dl_cfg) -> Config:
    cfg = Config(input=[inp], output=str(out))
    cfg.download = dl_cfg
    cfg.download.shard_size = 40
    cfg.download.partitions = 4
    return cfg


def test_download_stage_layout_resume_and_retry(spark, tmp_path: Path, image_server: ImageServer, dl_cfg) -> None:
    inp, df = _input(tmp_path, image_server)
    out = tmp_path / "out"
    cfg = _config(inp, out, dl_cfg)
    stats = run_stage(DownloadStage, cfg, spark=spark)
    images = out / "images"
    plan = json.loads((images / "_plan.json").read_text())
    assert plan["shards"] == -(-len(df) // 40)
    tars = sorted(images.glob("*.tar"))
    assert len(tars) == plan["shards"] == len(list(images.glob("*.parquet"))) == len(list(images.glob("0*_stats.json")))

    meta = pd.concat([pd.read_parquet(p) for p in sorted(images.glob("*.parquet"))], ignore_index=True)
    assert sorted(meta.uid) == sorted(df.uid)  # every input row, once
    assert {"page_url", "language", "license", "status", "error_message", "width", "height",
            "original_width", "original_height", "sha256", "phash", "key"} <= set(meta.columns)
    by_url = meta.set_index("url")
    for url, (status, kind) in (HOSTILE | canary_urls(image_server.canary.port)).items():
        assert (by_url.loc[url, "status"], error_kind(by_url.loc[url, "error_message"])) == (status, kind), url
    assert by_url.loc[FLAKY, "status"] == "error" and by_url.loc[FLAKY, "error_message"].startswith("http_5xx")
    assert image_server.canary.connections == 0

    # webdataset layout: key.jpg / key.txt / key.json for exactly the success rows
    members = {}
    for t in tars:
        with tarfile.open(t) as tar:
            for m in tar.getmembers():
                members[m.name] = tar.extractfile(m).read()
    ok = meta[meta.status == "success"]
    assert {n.rsplit(".", 1)[0] for n in members} == set(ok.key)
    for key, text in zip(ok.key, ok.text, strict=True):
        assert members[f"{key}.txt"].decode() == text
        j = json.loads(members[f"{key}.json"])
        assert j["key"] == key and j["status"] == "success" and j["width"] == 256
        from PIL import Image

        assert Image.open(io.BytesIO(members[f"{key}.jpg"])).size == (256, 256)
    assert stats.counts["rows_in"] == len(df) and stats.counts["rows_out"] == len(ok)
    assert stats.counts["rows_in"] == stats.counts["rows_out"] + sum(stats.dropped.values())
    stage_stats = json.loads((images / "_stats.json").read_text())
    assert stage_stats["dropped"]["ssrf"] >= 8 and stage_stats["errors"]["timeout"] == 1

    # resume: a second run skips every finished shard and makes no request
    n_requests = len(image_server.requests)
    keys_before = dict(zip(meta.uid, meta.key, strict=True))
    resumed = run_stage(DownloadStage, cfg, spark=spark)
    assert len(image_server.requests) == n_requests
    assert resumed.counts["shards_skipped"] == plan["shards"] and resumed.counts.get("shards_written", 0) == 0

    # --retry-failed: only transient failures are fetched again; keys stay; successes stay
    cfg.download.retry_failed = True
    hits = dict(image_server.hits)
    retried = run_stage(DownloadStage, cfg, spark=spark)
    assert 0 < retried.counts["shards_written"] < plan["shards"]
    assert retried.counts["shards_skipped"] + retried.counts["shards_written"] == plan["shards"]
    again = {k for k, v in image_server.hits.items() if v > hits.get(k, 0)}
    assert again <= {"hostile.test/always-429.jpg", "hostile.test/slow.jpg", "hostile.test/500.jpg",
                     "hostile.test/flaky.jpg?job",
                     "robots503.test/robots.txt", "hostile.test/robots.txt", "photos.test/robots.txt"}
    assert "hostile.test/always-429.jpg" in again
    meta2 = pd.concat([pd.read_parquet(p) for p in sorted(images.glob("*.parquet"))], ignore_index=True)
    assert dict(zip(meta2.uid, meta2.key, strict=True)) == keys_before
    assert "hostile.test/flaky.jpg?job" in again
    by_url2 = meta2.set_index("url")
    assert by_url2.loc[FLAKY, "status"] == "success"  # the transient failure is now in its shard
    assert (meta2.status == "success").sum() == len(ok) + 1
    members2 = set()
    for t in sorted(images.glob("*.tar")):
        with tarfile.open(t) as tar:
            members2 |= set(tar.getnames())
    assert members2 == set(members) | {f"{by_url2.loc[FLAKY, 'key']}.{e}" for e in ("jpg", "txt", "json")}
    assert image_server.canary.connections == 0

    # another input into the same --output: a one-line error, not a resume that skips its rows
    other = tmp_path / "other"
    other.mkdir()
    df.head(3).to_parquet(other / "part-0.parquet")
    n_requests = len(image_server.requests)
    with pytest.raises(UsageError, match="use a new --output"):
        run_stage(DownloadStage, _config(str(other), out, dl_cfg), spark=spark)
    assert len(image_server.requests) == n_requests


def test_uid_of_rows_without_one_is_extracts_uid(spark) -> None:
    """An input without `uid` gets the id extract would have given it (make_uid), so shards and joins agree."""
    rows = [("http://a.example/x.jpg", "a caption"), ("http://b.example/ü.png", "légende ✓"),
            ("http://c.example/y.jpg", "")]
    got = spark.createDataFrame(rows, "url string, text string").select("url", uid_column().alias("uid")).collect()
    assert {r.url: r.uid for r in got} == {u: make_uid(u, t) for u, t in rows}
