"""The download stage on real local Spark against the loopback server: layout, resume, retry."""

from __future__ import annotations

import datetime as dt
import io
import json
import tarfile
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from crawlpairs.config import Config
from crawlpairs.jobs.download import DownloadStage, uid_column
from crawlpairs.stage import UsageError, run_stage
from crawlpairs.udfs.download.fetch import error_kind
from crawlpairs.udfs.extract.candidates import make_uid
from support.download import HOSTILE, ImageServer, canary_urls

pytestmark = pytest.mark.integration
FLAKY = "http://hostile.test/flaky.jpg?job"  # 500 the first time, an image the second
# Rows that main's Spark parse_url turned into a failed job ([INVALID_URL]); now each is a bad_url row.
BAD_URLS = ["not a url", "Thailand 2011-01/thumbs/img-246.jpg", "http://photos.test/" + "x" * 3000 + ".jpg",
            "http://[::1/a.jpg", None]


def _input(tmp: Path, server: ImageServer) -> tuple[str, pd.DataFrame]:
    urls = sorted(server.warc) + [f"http://photos.test{p}" for p in server.photos]
    urls += list(HOSTILE) + list(canary_urls(server.canary.port)) + [FLAKY] + BAD_URLS
    df = pd.DataFrame({
        "uid": [f"{i:032x}" for i in range(len(urls))], "url": urls, "text": [f"alt text {i}" for i in range(len(urls))],
        "page_url": "http://www.archive.org/", "language": "en", "license": None,
        "fetch_time": pd.Timestamp("2024-05-01T12:00:00Z"),  # extract's timestamp[us, UTC]
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
    plan = json.loads((out / "images_meta" / "plan.json").read_text())
    assert plan["input"]["rows"] == len(df) and sum(plan["task_rows"]) == len(df)
    tars = sorted(images.glob("*.tar"))
    assert len(tars) == plan["shards"] == len(list(images.glob("*.parquet"))) == len(list(images.glob("0*_stats.json")))
    # img2dataset's layout: the shard folder holds shards only; plan and stage stats live beside it
    assert {p.name for p in images.iterdir()} == {f"{t.stem}{s}" for t in tars for s in (".tar", ".parquet", "_stats.json")}
    assert {p.name for p in (out / "images_meta").iterdir()} == {"plan.json", "_stats.json"}
    shard_stats = json.loads((images / f"{tars[0].stem}_stats.json").read_text())
    assert {"count", "successes", "failed_to_download", "failed_to_resize", "status_dict", "duration",
            "start_time", "end_time"} <= set(shard_stats)
    assert shard_stats["count"] == shard_stats["successes"] + shard_stats["failed_to_download"] + \
        shard_stats["failed_to_resize"]
    assert shard_stats["end_time"] >= shard_stats["start_time"]  # epoch seconds, as img2dataset's logger reads them
    assert dt.datetime.fromisoformat(shard_stats["ended_at"]).timestamp() == pytest.approx(shard_stats["end_time"], abs=1e-3)
    schema = pq.read_schema(tars[0].with_suffix(".parquet"))
    assert all(pa.types.is_integer(schema.field(c).type) for c in ("width", "height", "original_width"))
    assert schema.field("fetch_time").type == pa.string()  # ISO-8601: img2dataset's writer drops timestamp[ns]

    meta = pd.concat([pd.read_parquet(p) for p in sorted(images.glob("*.parquet"))], ignore_index=True)
    assert sorted(meta.uid) == sorted(df.uid)  # every input row, once
    assert {"page_url", "language", "license", "status", "download_status", "error_message", "width", "height",
            "original_width", "original_height", "sha256", "phash", "key"} <= set(meta.columns)
    assert set(meta.status) <= {"success", "failed_to_download", "failed_to_resize"}  # img2dataset's values
    by_url = meta[meta.url.notna()].set_index("url")
    for url, (status, kind) in (HOSTILE | canary_urls(image_server.canary.port)).items():
        assert (by_url.loc[url, "download_status"], error_kind(by_url.loc[url, "error_message"])) == (status, kind), url
    assert by_url.loc["http://hostile.test/bomb.png", "status"] == "failed_to_resize"
    assert by_url.loc[FLAKY, "download_status"] == "error" and by_url.loc[FLAKY, "error_message"].startswith("http_5xx")
    bad = meta[meta.url.isin(BAD_URLS) | meta.url.isna()]
    assert len(bad) == len(BAD_URLS) and set(bad.download_status) == {"bad_url"}
    assert set(bad.status) == {"failed_to_download"} and bad.error_message.str.startswith("bad_url").all()
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
        assert j["fetch_time"] == "2024-05-01T12:00:00+00:00"
        from PIL import Image

        assert Image.open(io.BytesIO(members[f"{key}.jpg"])).size == (256, 256)
    assert stats.counts["rows_in"] == len(df) and stats.counts["rows_out"] == len(ok)
    assert stats.counts["rows_in"] == stats.counts["rows_out"] + sum(stats.dropped.values())
    stage_stats = json.loads((out / "images_meta" / "_stats.json").read_text())
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
    again = {k for k, v in image_server.hits.items() if v > hits.get(k, 0)
             and not k.endswith(("/robots.txt", "/ai.txt"))}  # a host's policy files are read again, once
    assert again <= {"hostile.test/always-429.jpg", "hostile.test/slow.jpg", "hostile.test/500.jpg",
                     "hostile.test/flaky.jpg?job", "robots503.test/a.jpg"}
    assert "hostile.test/always-429.jpg" in again
    meta2 = pd.concat([pd.read_parquet(p) for p in sorted(images.glob("*.parquet"))], ignore_index=True)
    assert dict(zip(meta2.uid, meta2.key, strict=True)) == keys_before
    assert "hostile.test/flaky.jpg?job" in again
    by_url2 = meta2.set_index("url")
    assert by_url2.loc[FLAKY, "status"] == "success"  # the transient failure is now in its shard
    assert (meta2.status == "success").sum() == len(ok) + 1
    assert set(meta2.download_status[meta2.url.isin(BAD_URLS) | meta2.url.isna()]) == {"bad_url"}
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
    # other output-affecting settings on the same output: one line naming the setting
    changed = _config(inp, out, dl_cfg)
    changed.download.image_size = 128
    with pytest.raises(UsageError, match="image_size: 256 -> 128"):
        run_stage(DownloadStage, changed, spark=spark)
    assert len(image_server.requests) == n_requests


def test_uid_of_rows_without_one_is_extracts_uid(spark) -> None:
    """An input without `uid` gets the id extract would have given it (make_uid), so shards and joins agree."""
    rows = [("http://a.example/x.jpg", "a caption"), ("http://b.example/ü.png", "légende ✓"),
            ("http://c.example/y.jpg", "")]
    got = spark.createDataFrame(rows, "url string, text string").select("url", uid_column().alias("uid")).collect()
    assert {r.url: r.uid for r in got} == {u: make_uid(u, t) for u, t in rows}


def test_real_crawl_rows_extract_then_download(spark, tmp_path: Path, image_server: ImageServer, dl_cfg) -> None:
    """Every real WARC row, through extract and then download: the job ends, every row has a status.

    aut-example.warc.gz holds the image responses for most of its <img> URLs; the loopback
    server serves them by URL, other hosts do not resolve (no network here) and end as errors.
    """
    from crawlpairs.jobs.extract import ExtractStage

    warcs = sorted((image_server.shared / "warc").glob("*.warc.gz"))
    cfg = Config(input=[str(w) for w in warcs], output=str(tmp_path / "out"))
    run_stage(ExtractStage, cfg, spark=spark)
    cand = pd.read_parquet(tmp_path / "out" / "candidates")
    dl_cfg.connect_timeout = dl_cfg.total_timeout = 1.0
    cfg.input, cfg.download = [str(tmp_path / "out" / "candidates")], dl_cfg
    stats = run_stage(DownloadStage, cfg, spark=spark)
    images = tmp_path / "out" / "images"
    meta = pd.concat([pd.read_parquet(p) for p in sorted(images.glob("*.parquet"))], ignore_index=True)
    assert sorted(meta.uid) == sorted(cand.uid) and meta.download_status.notna().all()
    served = meta[meta.url.isin(set(image_server.warc))]
    assert len(served) >= 40 and (served.download_status == "success").mean() > 0.9
    assert stats.counts["rows_in"] == len(cand) == stats.counts["rows_out"] + sum(stats.dropped.values())
    assert image_server.canary.connections == 0
