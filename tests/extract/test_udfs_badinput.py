"""Bad input never raises: it is counted in stats, and rows found before the damage survive."""

from __future__ import annotations

import gzip
import io
import os
import random

import orjson
import pyarrow as pa

from crawlpairs.stats import Stats
from crawlpairs.udfs.extract import CANDIDATE_SCHEMA, extract_stream

WAT_GZ = "wat/CC-MAIN-20140820021334-00006-ip-10-180-136-8.ec2.internal.warc.wat.gz"


def run(data: bytes, cfg, name="bad.warc.gz"):
    stats = Stats()
    batches = list(extract_stream(io.BytesIO(data), name, cfg, stats))
    return pa.Table.from_batches(batches, schema=CANDIDATE_SCHEMA), stats


def wat_record(links, target="http://example.com/page", payload: bytes | None = None) -> bytes:
    doc = {"Envelope": {"WARC-Header-Metadata": {"WARC-Target-URI": target},
                        "Payload-Metadata": {"HTTP-Response-Metadata": {"HTML-Metadata": {"Links": links}}}}}
    body = payload if payload is not None else orjson.dumps(doc)
    head = (f"WARC/1.0\r\nWARC-Type: metadata\r\nWARC-Target-URI: {target}\r\n"
            f"WARC-Date: 2024-01-01T00:00:00Z\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    return gzip.compress(head + body + b"\r\n\r\n")


def test_empty_file(cfg):
    table, stats = run(b"", cfg)
    assert table.num_rows == 0 and stats.counts["files_read"] == 1 and not stats.errors


def test_random_bytes(cfg):
    table, stats = run(random.Random(1).randbytes(20000), cfg)
    assert table.num_rows == 0 and stats.errors["not_warc"] == 1
    assert stats.error_samples[0]["input"] == "bad.warc.gz"


def test_gzip_of_garbage(cfg):
    table, stats = run(gzip.compress(os.urandom(5000)), cfg)
    assert table.num_rows == 0 and stats.errors["not_warc"] == 1


def test_truncated_gzip_member_keeps_earlier_rows(data_dir, cfg):
    good = wat_record([{"path": "IMG@/src", "url": "http://example.com/a.jpg", "alt": "First good page"}])
    raw = (data_dir / WAT_GZ).read_bytes()
    cut = raw[: 4808 + 600]  # stops inside the gzip member of the 0pointer.de record
    table, stats = run(good + cut, cfg)
    assert table.column("text").to_pylist() == ["First good page"]
    assert sum(stats.errors.values()) >= 1
    assert set(stats.errors) <= {"truncated_record", "truncated_member"}


def test_corrupt_member_mid_file_costs_only_itself(data_dir, cfg):
    good = wat_record([{"path": "IMG@/src", "url": "http://example.com/a.jpg", "alt": "Before the damage"}])
    raw = (data_dir / WAT_GZ).read_bytes()
    clean, _ = run(good + raw, cfg)
    table, stats = run(good + raw[:4808] + b"\x1f\x8b\x08\x00" + os.urandom(400) + raw[4808:], cfg)
    assert "Before the damage" in table.column("text").to_pylist()
    assert table.column("text").to_pylist() == clean.column("text").to_pylist()  # later records kept
    assert len(clean) == 3
    assert dict(stats.errors) == {"gzip": 1}
    assert stats.error_samples[0]["input"] == "bad.warc.gz"
    assert stats.error_samples[0]["message"].startswith(f"offset {len(good) + 4808}:")


def test_broken_json_then_good_record(cfg):
    bad = wat_record([], payload=b'{"Envelope": {"IMG@/src": [1, 2')
    good = wat_record([{"path": "IMG@/src", "url": "/b.jpg", "alt": "After broken JSON"}])
    table, stats = run(bad + good, cfg)
    assert table.column("url").to_pylist() == ["http://example.com/b.jpg"]
    assert stats.errors["wat_json"] == 1


def test_unexpected_json_shapes(cfg):
    recs = [
        wat_record([], payload=b'["IMG@", 1]'),
        wat_record([], payload=b'{"Envelope": {"Payload-Metadata": {"HTTP-Response-Metadata": '
                              b'{"HTML-Metadata": {"Links": [1, null, {"path": "IMG@/src", "url": 5}]}}}}}'),
        wat_record([{"path": "IMG@/src", "url": "x.jpg", "alt": 12345}]),
    ]
    table, stats = run(b"".join(recs), cfg)
    assert table.num_rows == 0
    # links that are not objects: the full parse counts a wat_layout error; the fast path
    # (which only reads IMG link objects) skips the bad one. Either way: no rows, no raise.
    assert set(stats.errors) <= {"wat_layout"}
    assert stats.dropped["empty_text"] == 1  # alt that is a number


def test_non_utf8_alt_and_control_chars(cfg, warc_bytes):
    html = ('<html><head><meta charset="windows-1252"></head><body>'
            '<img src="a.jpg" alt="Caf\xe9 cr\xe8me br\xfbl\xe9e"></body></html>').encode("cp1252")
    html2 = b'<html><body><img src="b.jpg" alt="Bad \xff\xfe bytes\x01\x02 and\ttabs here"></body></html>'
    table, stats = run(warc_bytes([("http://e.com/1", html), ("http://e.com/2", html2)]), cfg)
    assert table.column("text").to_pylist() == ["Café crème brûlée", "Bad ÿþ bytes and tabs here"]
    assert not stats.errors


def test_mojibake_is_fixed(cfg):
    rec = wat_record([{"path": "IMG@/src", "url": "a.jpg", "alt": "The Mona Lisa doesnâ€™t have eyebrows"}])
    table, _ = run(rec, cfg)
    assert table.column("text").to_pylist() == ["The Mona Lisa doesn’t have eyebrows"]


def test_one_megabyte_alt(cfg):
    rec = wat_record([{"path": "IMG@/src", "url": "a.jpg", "alt": "x" * 1_000_000},
                      {"path": "IMG@/src", "url": "b.jpg", "alt": "Normal caption"}])
    table, stats = run(rec, cfg)
    assert table.column("text").to_pylist() == ["Normal caption"]
    assert stats.dropped["text_too_long"] == 1


def test_huge_html_record_is_skipped(cfg, warc_bytes):
    cfg.max_record_bytes = 1000
    html = "<html><body>" + "<p>filler</p>" * 200 + '<img src="a.jpg" alt="Never seen"></body></html>'
    table, stats = run(warc_bytes([("http://e.com/", html)]), cfg)
    assert table.num_rows == 0 and dict(stats.errors) == {"too_large": 1}
    assert stats.error_samples[0]["message"].startswith("offset 0: Content-Length")


def test_gzip_content_encoding_header_on_decoded_body(cfg, data_dir):
    # Common Crawl keeps "Content-Encoding: gzip" on bodies it stored decoded; FastWARC's
    # own decoding aborts the whole stream there. All 13 records must be read.
    name = "warc/CC-MAIN-20140820021334-00006-ip-10-180-136-8.ec2.internal.warc.gz"
    with open(data_dir / name, "rb") as f:
        stats = Stats()
        list(extract_stream(f, name, cfg, stats))
    assert sum(v for k, v in stats.counts.items() if k.startswith("records.")) == 13
    assert not stats.errors
