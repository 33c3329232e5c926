"""Bad input never raises: it is counted in stats, and rows found before the damage survive."""

from __future__ import annotations

import gzip
import io
import os
import random
import re
import subprocess
import sys
import zlib
from pathlib import Path

import orjson
import pyarrow as pa
import pytest

from crawlpairs.stats import Stats
from crawlpairs.udfs.extract.candidates import CANDIDATE_SCHEMA, extract_stream

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


# -- one bad member costs one record: lying lengths, corrupt members, bombs --------------

def split_members(data: bytes) -> list[bytes]:
    out, pos = [], 0
    while pos < len(data):
        d = zlib.decompressobj(31)
        d.decompress(data[pos:])
        end = len(data) - len(d.unused_data)
        out.append(data[pos:end])
        pos = end
    return out


def relength(member: bytes, length: int) -> bytes:
    """The same record with a lying Content-Length."""
    raw = gzip.decompress(member)
    return gzip.compress(re.sub(rb"Content-Length: \d+", b"Content-Length: %d" % length, raw, count=1))


def pairs(table: pa.Table) -> list[tuple]:
    return list(zip(*(table.column(c).to_pylist() for c in ("page_url", "url", "text")), strict=True))


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    from crawlpairs.generate import generate

    out = tmp_path_factory.mktemp("badgen")
    res = generate(str(out), kind="both", files=1, pages_per_file=120, seed=3, layout="flat", write_truth=False)
    return Path(res.wat_files[0]).read_bytes(), Path(res.warc_files[0]).read_bytes()


def victim(members: list[bytes], rtype: bytes, needle: bytes) -> int:
    """A member in the middle of the file of this WARC-Type whose record holds `needle`."""
    for i in range(len(members) // 2, len(members)):
        raw = gzip.decompress(members[i])
        if b"WARC-Type: " + rtype in raw[:400] and needle in raw:
            return i
    raise AssertionError("no such record")


@pytest.mark.parametrize("kind", ["wat", "warc"])
@pytest.mark.parametrize("length", [2_000_000_000, 20_000_000, "plus_5000"])
def test_lying_length_costs_nothing_after_it(generated, cfg, kind, length):
    cfg.lid_model = None
    data = generated[0] if kind == "wat" else generated[1]
    members = split_members(data)
    i = victim(members, b"metadata" if kind == "wat" else b"response", b"IMG@" if kind == "wat" else b"<img")
    real = int(re.search(rb"Content-Length: (\d+)", gzip.decompress(members[i])).group(1))
    lie = real + 5000 if length == "plus_5000" else length
    bad = b"".join(members[:i] + [relength(members[i], lie)] + members[i + 1 :])
    clean, _ = run(data, cfg)
    table, stats = run(bad, cfg)
    # every later record is read; the lying record's own page is read up to its member's end
    assert pairs(table) == pairs(clean) and len(clean) > 100
    assert dict(stats.errors) == {"truncated_record": 1}
    assert stats.error_samples[0]["message"].startswith(f"offset {sum(map(len, members[:i]))}: Content-Length {lie}")


def test_lying_length_in_uncompressed_wat(data_dir, cfg):
    raw = (data_dir / "wat/CC-MAIN-20140820021334-00006-ip-10-180-136-8.ec2.internal.warc.wat").read_bytes()
    clean, _ = run(raw, cfg, "x.wat")
    first_meta = raw.index(b"WARC-Type: metadata")
    at = raw.index(b"Content-Length: ", first_meta)
    end = raw.index(b"\r\n", at)
    bad = raw[:at] + b"Content-Length: 2000000000" + raw[end:]
    table, stats = run(bad, cfg, "x.wat")
    assert pairs(table) == pairs(clean) and len(clean) == 2
    assert dict(stats.errors) == {"bad_length": 1}


def test_corrupt_member_in_generated_file(generated, cfg):
    cfg.lid_model = None
    members = split_members(generated[0])
    i = victim(members, b"metadata", b"IMG@")
    m = bytearray(members[i])
    m[len(m) // 2 : len(m) // 2 + 16] = bytes(16)  # zeroed bytes mid-member: CRC or deflate fails
    clean, _ = run(generated[0], cfg)
    table, stats = run(b"".join(members[:i] + [bytes(m)] + members[i + 1 :]), cfg)
    lost = sum(map(len, members[:i]))
    want = [p for p, off in zip(pairs(clean), clean.column("source_offset").to_pylist(), strict=True) if off != lost]
    assert pairs(table) == want and len(want) < len(clean)
    assert dict(stats.errors) == {"gzip": 1}
    assert stats.error_samples[0]["message"].startswith(f"offset {lost}:")


def test_bad_json_mid_file_keeps_the_rest(generated, cfg):
    cfg.lid_model = None
    members = split_members(generated[0])
    i = victim(members, b"metadata", b"IMG@")
    broken = wat_record([], payload=b'{"Envelope": {"IMG@/src": "x", ')
    clean, _ = run(generated[0], cfg)
    table, stats = run(b"".join(members[:i] + [broken] + members[i + 1 :]), cfg)
    offset = sum(map(len, members[:i]))
    want = [p for p, off in zip(pairs(clean), clean.column("source_offset").to_pylist(), strict=True) if off != offset]
    assert pairs(table) == want
    assert dict(stats.errors) == {"wat_json": 1}


def test_too_many_links_are_capped(cfg):
    cfg.max_links_per_page = 10
    links = [{"path": "IMG@/src", "url": f"/{n}.jpg", "alt": f"Picture number {n}"} for n in range(30)]
    table, stats = run(wat_record(links), cfg)
    assert table.num_rows == 10 and stats.dropped["too_many_links"] == 20
    assert stats.counts["pairs_found"] == stats.counts["pairs_kept"] + sum(stats.dropped.values()) == 30


# VmHWM, not ru_maxrss: Linux keeps ru_maxrss across fork + exec, so a child of a big pytest
# process would report its parent's peak; VmHWM belongs to the child's own address space.
BOMB_CHILD = """
import re, sys
from crawlpairs.config import ExtractConfig
from crawlpairs.stats import Stats
from crawlpairs.udfs.extract.candidates import extract_stream
stats = Stats()
with open(sys.argv[1], "rb") as fh:
    rows = sum(b.num_rows for b in extract_stream(fh, sys.argv[1], ExtractConfig(lid_model=None), stats))
hwm_kib = int(re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1))
print(rows, dict(stats.errors), hwm_kib // 1024)
"""


@pytest.mark.parametrize("declared", ["huge", "small"])
def test_decompression_bomb_is_bounded(tmp_path, declared):
    """A WAT member inflating to 512 MiB of zeros: skipped in bounded chunks, the next record read.

    Run in a fresh process so its peak RSS is this read's alone (before: the whole payload
    was read into memory)."""
    from support.faults import write_zero_bomb

    good = wat_record([{"path": "IMG@/src", "url": "http://example.com/a.jpg", "alt": "Before the bomb"}])
    after = wat_record([{"path": "IMG@/src", "url": "http://example.com/b.jpg", "alt": "After the bomb"}])
    size = 512 << 20  # twice max_inflate_bytes
    clen = size if declared == "huge" else 100
    head = (f"WARC/1.0\r\nWARC-Type: metadata\r\nContent-Type: application/json\r\n"
            f"Content-Length: {clen}\r\n\r\n").encode()
    path = tmp_path / "bomb.wat.gz"
    with open(path, "wb") as fh:
        fh.write(good)
        assert write_zero_bomb(fh, head, size) < 1 << 20  # 512 MiB inflated from ~0.5 MB
        fh.write(after)
    proc = subprocess.run([sys.executable, "-c", BOMB_CHILD, str(path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows, errors, peak_mib = proc.stdout.split(" ", 1)[0], proc.stdout.split(" ", 1)[1].rsplit(" ", 1)[0], int(
        proc.stdout.rsplit(" ", 1)[1])
    assert rows == "2"
    assert errors == "{'member_too_large': 1}"
    assert peak_mib < 400, f"peak RSS {peak_mib} MiB"
