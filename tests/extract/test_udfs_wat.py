"""WAT extraction on real Common Crawl WAT records (expected values read off the files)."""

from __future__ import annotations

import gzip
import io

import orjson
import pyarrow as pa
import pytest

from crawlpairs.stats import Stats
from crawlpairs.udfs.extract.candidates import CANDIDATE_SCHEMA, extract_stream, make_uid

WAT_2014 = "wat/CC-MAIN-20140820021334-00006-ip-10-180-136-8.ec2.internal.warc.wat"


def run(path, cfg, **kw):
    stats = Stats()
    with open(path, "rb") as f:
        batches = list(extract_stream(f, str(path), cfg, stats, **kw))
    table = pa.Table.from_batches(batches, schema=CANDIDATE_SCHEMA)
    return table, stats


def wat_record(doc: dict, target: str, gz: bool = True) -> bytes:
    """One WAT metadata record around `doc`'s JSON, framed as Common Crawl writes it."""
    body = orjson.dumps(doc)
    rec = (f"WARC/1.0\r\nWARC-Type: metadata\r\nWARC-Target-URI: {target}\r\n"
           f"WARC-Date: 2024-05-01T10:00:00Z\r\nContent-Type: application/json\r\n"
           f"Content-Length: {len(body)}\r\n\r\n").encode() + body + b"\r\n\r\n"
    return gzip.compress(rec) if gz else rec


def test_2014_wat_four_alt_images(data_dir, cfg):
    # The 0pointer.de page (record at byte 9590 of the plain WAT) has 4 IMG@/src links with
    # alt: "496", "Previous", "Next", "Creative Commons License"; LAION's 5-char minimum
    # keeps 2. The page links creativecommons.org/licenses/by-sa/3.0/.
    table, stats = run(data_dir / WAT_2014, cfg, crawl="CC-MAIN-2014-35")
    assert table.schema == CANDIDATE_SCHEMA
    rows = table.to_pylist()
    assert [(r["url"], r["text"]) for r in rows] == [
        ("http://0pointer.de/photos/galleries/Australia/thumbs/img-495.jpg", "Previous"),
        ("http://creativecommons.org/images/public/somerights20.png", "Creative Commons License"),
    ]
    r = rows[0]
    assert r["page_url"] == "http://0pointer.de/photos/?gallery=Australia&photo=496"
    assert r["page_domain"] == "0pointer.de" and r["image_domain"] == "0pointer.de"
    assert r["license"] == "cc-by-sa"
    assert r["license_url"] == "http://creativecommons.org/licenses/by-sa/3.0/"
    assert r["crawl"] == "CC-MAIN-2014-35"
    assert r["source_offset"] == 9590
    assert r["text_source"] == "alt"
    assert r["fetch_time"].isoformat() == "2014-08-21T05:52:58+00:00"
    assert r["uid"] == make_uid(r["url"], r["text"]) and len(r["uid"]) == 32
    assert r["language"] == "en"
    c = stats.counts
    assert c["files_read"] == 1 and c["records.warcinfo"] == 1 and c["records.metadata"] == 8
    assert c["pairs_found"] == 4 and c["pairs_kept"] == 2
    assert dict(stats.dropped) == {"text_too_short": 2}
    assert not stats.errors


def test_gz_and_plain_give_same_rows(data_dir, cfg):
    plain, _ = run(data_dir / WAT_2014, cfg)
    gz, _ = run(data_dir / (WAT_2014 + ".gz"), cfg)
    drop = ["source_file", "source_offset"]
    assert plain.drop_columns(drop).to_pylist() == gz.drop_columns(drop).to_pylist()
    # offsets point at the gzip member in the compressed file: range-fetchable
    assert gz.column("source_offset").to_pylist() == [4808, 4808]


def test_record_offset_is_range_fetchable(data_dir, cfg):
    import zlib

    table, _ = run(data_dir / (WAT_2014 + ".gz"), cfg)
    off = table.column("source_offset")[0].as_py()
    raw = (data_dir / (WAT_2014 + ".gz")).read_bytes()[off:]
    member = zlib.decompressobj(31).decompress(raw)
    assert member.startswith(b"WARC/1.0\r\nWARC-Type: metadata")
    assert b"img-495.jpg" in member


def test_min_text_length_is_configurable(data_dir, cfg):
    cfg.min_text_length = 3
    table, stats = run(data_dir / WAT_2014, cfg)
    assert table.column("text").to_pylist() == ["496", "Previous", "Next", "Creative Commons License"]
    assert stats.counts["pairs_kept"] == 4 and not stats.dropped


def test_crawl_from_path_or_unknown(data_dir, cfg, tmp_path):
    table, _ = run(data_dir / WAT_2014, cfg)
    assert set(table.column("crawl").to_pylist()) == {"unknown"}  # no isPartOf, no id in path
    p = tmp_path / "crawl-data" / "CC-MAIN-2014-35" / "segments"
    p.mkdir(parents=True)
    (p / "x.wat").write_bytes((data_dir / WAT_2014).read_bytes())
    table, _ = run(p / "x.wat", cfg)
    assert set(table.column("crawl").to_pylist()) == {"CC-MAIN-2014-35"}
    cfg.crawl = "CC-MAIN-2099-01"
    table, _ = run(p / "x.wat", cfg)
    assert set(table.column("crawl").to_pylist()) == {"CC-MAIN-2099-01"}


def test_noalt_wat_gives_no_pairs(data_dir, cfg):
    # one real 2023 page with 27 IMG@/src links, none with alt (file uses LF line ends)
    table, stats = run(data_dir / "wat/noalt-CC-MAIN-2023-14.warc.wat.gz", cfg)
    assert table.num_rows == 0
    assert stats.counts["pairs_found"] == 27 and stats.counts["pairs_kept"] == 0
    assert dict(stats.dropped) == {"empty_text": 27}
    assert not stats.errors


def test_whirlwind_request_record_has_no_images(data_dir, cfg):
    table, stats = run(data_dir / "wat/whirlwind.warc.wat.gz", cfg)
    assert table.num_rows == 0
    assert stats.counts["records.warcinfo"] == 1 and stats.counts["records.metadata"] == 1
    assert stats.counts["pairs_found"] == 0 and not stats.errors


def test_truncated_wat_is_counted_not_raised(data_dir, cfg):
    table, stats = run(data_dir / "wat/truncated-CC-MAIN-2023-14.warc.wat.gz", cfg)
    assert table.num_rows == 0
    assert stats.errors["wat_json"] == 1
    sample = stats.error_samples[0]
    assert sample["input"].endswith("truncated-CC-MAIN-2023-14.warc.wat.gz")


def test_wat_title_fallback_and_entities(cfg):
    # A WAT record written like Common Crawl's, with entity-escaped URL and alt and a Head.Base.
    doc = {
        "Envelope": {
            "WARC-Header-Metadata": {"WARC-Target-URI": "http://example.com/a/page.html"},
            "Payload-Metadata": {
                "HTTP-Response-Metadata": {
                    "HTML-Metadata": {
                        "Head": {"Base": "http://cdn.example.org/base/",
                                 "Link": [{"path": "LINK@/href", "rel": "license",
                                           "url": "https://creativecommons.org/publicdomain/zero/1.0/"}]},
                        "Links": [
                            {"path": "IMG@/src", "url": "img.jpg?a=1&amp;b=2", "alt": "Fish &amp; chips"},
                            {"path": "IMG@/src", "url": "t.png", "title": "A red bicycle"},
                            {"path": "IMG@/src", "url": "javascript:void(0)", "alt": "a script link"},
                            {"path": "IMG@/src", "url": "data:image/png;base64,xx", "alt": "inline image"},
                            {"path": "IMG@/src", "url": "icon.svg", "alt": "an svg icon"},
                            {"path": "IMG@/src", "url": "img.jpg?a=1&b=2", "alt": "Fish  & chips"},
                        ],
                    }
                }
            },
        }
    }
    rec = wat_record(doc, "http://example.com/a/page.html", gz=False)
    stats = Stats()
    rows = pa.Table.from_batches(list(extract_stream(io.BytesIO(rec), "mem.wat", cfg, stats)),
                                 schema=CANDIDATE_SCHEMA).to_pylist()
    got = [(r["url"], r["text"], r["text_source"], r["license"]) for r in rows]
    assert got == [
        ("http://cdn.example.org/base/img.jpg?a=1&b=2", "Fish & chips", "alt", "cc0"),
        ("http://cdn.example.org/base/t.png", "A red bicycle", "title", "cc0"),
    ]
    assert dict(stats.dropped) == {"scheme": 1, "data_uri": 1, "extension": 1, "duplicate_in_page": 1}
    assert stats.counts["pairs_found"] == 6


def test_crawl_from_warcinfo_is_part_of(cfg):
    info = b"isPartOf: CC-MAIN-2024-22\r\npublisher: Common Crawl\r\n\r\n"
    warcinfo = (b"WARC/1.0\r\nWARC-Type: warcinfo\r\nContent-Type: application/warc-fields\r\n"
                b"Content-Length: " + str(len(info)).encode() + b"\r\n\r\n" + info + b"\r\n\r\n")
    doc = {"Envelope": {"WARC-Header-Metadata": {"WARC-Target-URI": "http://e.com/"},
                        "Payload-Metadata": {"HTTP-Response-Metadata": {"HTML-Metadata": {
                            "Links": [{"path": "IMG@/src", "url": "/a.jpg", "alt": "A caption here"}]}}}}}
    data = gzip.compress(warcinfo) + wat_record(doc, "http://e.com/")
    rows = pa.Table.from_batches(list(extract_stream(io.BytesIO(data), "x.wat.gz", cfg, Stats())),
                                 schema=CANDIDATE_SCHEMA).to_pylist()
    assert [(r["url"], r["crawl"]) for r in rows] == [("http://e.com/a.jpg", "CC-MAIN-2024-22")]
    # the argument wins over everything
    rows = pa.Table.from_batches(list(extract_stream(io.BytesIO(data), "x.wat.gz", cfg, Stats(),
                                                     crawl="CC-MAIN-2030-01")), schema=CANDIDATE_SCHEMA)
    assert rows.column("crawl").to_pylist() == ["CC-MAIN-2030-01"]


def test_batches_are_bounded(data_dir, cfg):
    cfg.min_text_length = 1
    stats = Stats()
    with open(data_dir / "warc/CC-MAIN-20140820021334-00006-ip-10-180-136-8.ec2.internal.warc.gz", "rb") as f:
        batches = list(extract_stream(f, "x", cfg, stats, batch_rows=100))
    assert len(batches) > 1 and sum(b.num_rows for b in batches) == stats.counts["pairs_kept"]
    assert all(b.schema == CANDIDATE_SCHEMA for b in batches)


def test_braces_and_quotes_in_alt_fall_back_to_full_parse(cfg):
    from crawlpairs.udfs.extract.wat import scan_page

    links = [{"alt": "curly {brace} and \"quotes\" here", "path": "IMG@/src", "url": "/a.jpg"},
             {"path": "IMG@/src", "url": "/b.jpg", "alt": "closing } first"},
             {"path": "A@/href", "url": "https://creativecommons.org/licenses/by/4.0/", "rel": "license"}]
    doc = {"Envelope": {"WARC-Header-Metadata": {"WARC-Target-URI": "http://e.com/"},
                        "Payload-Metadata": {"HTTP-Response-Metadata": {"HTML-Metadata": {"Links": links}}}}}
    with pytest.raises(ValueError):  # the cut-out does not parse: the caller falls back
        scan_page(orjson.dumps(doc))
    stats = Stats()
    rows = pa.Table.from_batches(list(extract_stream(io.BytesIO(wat_record(doc, "http://e.com/")), "x", cfg, stats)),
                                 schema=CANDIDATE_SCHEMA).to_pylist()
    assert [(r["url"], r["text"], r["license"]) for r in rows] == [
        ("http://e.com/a.jpg", 'curly {brace} and "quotes" here', "cc-by"),
        ("http://e.com/b.jpg", "closing } first", "cc-by"),
    ]
    assert not stats.errors
