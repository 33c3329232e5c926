"""The compiled WAT loop (udfs/extract/_hotloop.c) against the pure-Python loop: the same rows.

extract runs `crawlpairs.udfs.extract._hotloop` when it is importable (built by `pip install -e .`)
and its Python loop otherwise. Both must give identical rows (every column, in order) and
identical counters on every real crawl file in the shared data, on a WAT built from every
real HTML page of the shared WARCs, and on generated link objects aimed at the places where
the C code takes a shortcut or hands a link back to Python (spaces, `../`, character
references, JSON escapes, odd schemes and hosts, duplicate keys, non-string values).
"""

from __future__ import annotations

import gzip
import importlib.util
import io
import json
import os
import random
import sys
from pathlib import Path

import pyarrow as pa
import pytest

from crawlpairs.config import ExtractConfig
from crawlpairs.stats import Stats
from crawlpairs.udfs.extract import candidates as ex
from crawlpairs.udfs.extract import langid, warcread

REPO = Path(__file__).resolve().parents[2]

if os.environ.get("CRAWLPAIRS_EXTRACT_ENGINE", "").lower() == "python":
    pytest.skip("CRAWLPAIRS_EXTRACT_ENGINE=python: the compiled loop is off", allow_module_level=True)


def test_the_compiled_loop_is_built() -> None:
    """`pip install -e .` builds it (setup.py); a missing C compiler would leave extract on
    its Python loop, correct but slower: CI must notice."""
    assert ex.engine() == "compiled", "crawlpairs.udfs.extract._hotloop is not importable: run `pip install -e .`"


def run(data: bytes, name: str, cfg: ExtractConfig, compiled: bool) -> tuple[list[dict], dict]:
    saved = ex._hot, warcread._hot, langid._hot
    if not compiled:  # the page loop, the reader's record head and language ID's loop in Python
        ex._hot = warcread._hot = langid._hot = None
    try:
        stats = Stats()
        batches = list(ex.extract_stream(io.BytesIO(data), name, cfg, stats, batch_rows=700))
    finally:
        ex._hot, warcread._hot, langid._hot = saved
    rows = pa.Table.from_batches(batches, ex.CANDIDATE_SCHEMA).to_pylist() if batches else []
    d = stats.to_dict()
    d["counts"] = {k: v for k, v in d["counts"].items() if not k.startswith(("engine.", "lid_engine."))}
    return rows, d


def assert_same(data: bytes, name: str, cfg: ExtractConfig) -> dict:
    """Both loops on `data`; returns the compiled run's stats."""
    rows_c, st_c = run(data, name, cfg, True)
    rows_p, st_p = run(data, name, cfg, False)
    assert len(rows_c) == len(rows_p), name
    for i, (a, b) in enumerate(zip(rows_c, rows_p, strict=True)):
        assert a == b, f"{name}: row {i} differs"
    compiled_pages = st_c["counts"].pop("pages.wat_compiled", 0)
    assert st_c == st_p, name
    st_c["counts"]["pages.wat_compiled"] = compiled_pages
    return st_c


CONFIGS = {
    "default": {},
    "alt_only": {"text_fallbacks": []},
    "loose": {"min_text_length": 1, "drop_extensions": ["jpg", "tar.gz"], "max_url_length": 60,
              "max_domain_length": 12, "allowed_schemes": ["http", "https", "ftp"], "max_links_per_page": 7},
    "no_dedup": {"exact_dedup": False, "max_text_length": 20},
}


def real_files(shared: Path) -> list[Path]:
    return sorted(p for p in (shared / "wat").iterdir() if ".warc" in p.name) + sorted(
        (shared / "warc").glob("*.warc.gz"))


def realwat_module():
    spec = importlib.util.spec_from_file_location("bench_realwat", REPO / "bench" / "extract" / "realwat.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("bench_realwat", mod)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def real_pages_wat(shared_data: Path, tmp_path_factory) -> bytes:
    """Every real HTML page of the shared WARCs once (and once more with varied texts), as a
    WAT in Common Crawl's layout (bench/extract/realwat.py)."""
    realwat = realwat_module()
    pages = realwat.load_pages(shared_data)
    path = tmp_path_factory.mktemp("realwat") / "real-pages.warc.wat.gz"
    realwat.write_wat(path, pages, 2 * len(pages), 0)
    return path.read_bytes()


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_same_rows_on_every_real_file(shared_data: Path, lid_model: str, config: str) -> None:
    files = real_files(shared_data)
    assert len(files) >= 8
    compiled = 0
    for path in files:
        cfg = ExtractConfig(lid_model=lid_model, **CONFIGS[config])
        st = assert_same(path.read_bytes(), str(path), cfg)
        compiled += st["counts"]["pages.wat_compiled"]
    assert compiled >= 2  # the real WATs' pages with images went through the C loop


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_same_rows_on_every_real_page_as_wat(real_pages_wat: bytes, lid_model: str, config: str) -> None:
    cfg = ExtractConfig(lid_model=lid_model, **CONFIGS[config])
    st = assert_same(real_pages_wat, "real-pages.warc.wat.gz", cfg)
    assert st["counts"]["pages.wat"] > 250
    assert st["counts"]["pages.wat_compiled"] == st["counts"]["pages.wat"]
    assert st["counts"]["pairs_kept"] > (0 if config == "loose" else 200)


def test_batches_stay_near_batch_rows(real_pages_wat: bytes) -> None:
    """Both loops hand rows on every `batch_rows` (the compiled one once kept them all to the
    file's end): memory per file is bounded by the batch, not by the file."""
    for compiled in (True, False):
        saved = ex._hot, warcread._hot
        if not compiled:
            ex._hot = warcread._hot = None
        try:
            sizes = [b.num_rows for b in ex.extract_stream(io.BytesIO(real_pages_wat), "x", ExtractConfig(lid_model=None),
                                                         Stats(), batch_rows=200)]
        finally:
            ex._hot, warcread._hot = saved
        assert len(sizes) >= sum(sizes) // 400 and len(sizes) > 3, (compiled, sizes)
        # a batch closes after the page that fills it (a page holds at most max_links_per_page rows)
        assert max(sizes[:-1]) <= 200 + ExtractConfig().max_links_per_page, (compiled, sizes)


# ---- generated link objects: the shortcuts and the hand-backs -------------------------------

BASES = ["http://example.com/a/b/page.html?x=1", "https://www.Example.org/", "http://ex.com", "http://ex.com/dir/",
         "http://xn--bcher-kva.example/d/", "http://exa mple.com/", "http://1.2.3.4/x/", "http://ex.com/a/./b/",
         "http://ex.com/a%2e/b/", "http://ex.com/ä/b/", "ftp://ex.com/a/", "", "http://[::1]/a/"]
HREF_PARTS = ["/", "./", "../", "a", "b.jpg", "c.JPG", "x.gif", "y.svg?z=1", "img", " ", "%20", "%2e", "%2E", ".",
              "..", "?q=1", "#frag", "&amp;", "&", ";", "&#47;", "\\", "\t", "\n", "é", "ü", "日本", "'", '"', "<",
              ">", "`", "{", "}", "|", "^", ":", "@", "xn--", "HTTP://", "http://", "https://", "//", "data:",
              "javascript:", "ftp://", "mailto:", "http://Ex.com/", "http://ex.com:80/", "http://u@ex.com/",
              "http://0x7f.1/", "http://ex.com./", "http://ex..com/", "http://-a.com/", "http://ex.1com/",
              "http://" + "d" * 70 + ".com/", "/" + "p" * 80, "a.tar.gz", "%41", "~", "$", "[", "]"]
TEXTS = ["a photo", "  spaced   out  ", "tiny", "", "   ", "Ünïcödé caption", "caf\u00c3\u00a9 mojibake", "x" * 30,
         "ctrl\x01char", "tab\there", "amp &amp; co", "bare & amp", "\u200bzero width", "A" * 200, "日本語のキャプション",
         "emoji 😀 here", "line\nbreak", "quote \" inside", "back\\slash", "nbsp\u00a0here"]


def _record(body: bytes, target: str) -> bytes:
    head = (f"WARC/1.0\r\nWARC-Type: metadata\r\nWARC-Target-URI: {target}\r\nWARC-Date: 2024-08-12T00:00:00Z\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    return gzip.compress(head + body + b"\r\n\r\n", 6)


def _page_json(page_url: str, base: str | None, links: list[str]) -> bytes:
    head = '"Head":{"Title":"t"' + (f',"Base":{json.dumps(base)}' if base is not None else "") + "}"
    return ('{"Envelope":{"WARC-Header-Metadata":{"WARC-Target-URI":' + json.dumps(page_url) + '},'
            '"Payload-Metadata":{"HTTP-Response-Metadata":{"HTML-Metadata":{' + head + ',"Links":['
            + ",".join(links) + "]}}}}}").encode()


def _link(rng: random.Random) -> str:
    href = "".join(rng.choice(HREF_PARTS) for _ in range(rng.randint(0, 6)))
    fields = ['"path":"IMG@/src"', f'"url":{json.dumps(href, ensure_ascii=rng.random() < 0.5)}']
    if rng.random() < 0.85:
        fields.append(f'"alt":{json.dumps(rng.choice(TEXTS), ensure_ascii=rng.random() < 0.5)}')
    if rng.random() < 0.3:
        fields.append(f'"title":{json.dumps(rng.choice(TEXTS), ensure_ascii=rng.random() < 0.5)}')
    r = rng.random()
    if r < 0.02:
        fields.append('"width":100')  # a non-string value: the C parser hands the page back
    elif r < 0.04:
        fields.append(f'"alt":{json.dumps(rng.choice(TEXTS))}')  # duplicate key: the last wins
    elif r < 0.05:
        fields[1] = fields[1].replace("/", "\\/")  # JSON escape of "/"
    rng.shuffle(fields)
    return "{" + ",".join(fields) + "}"


def generated_wat(seed: int, pages: int = 150) -> bytes:
    rng = random.Random(seed)
    out = []
    for k in range(pages):
        page_url = rng.choice(BASES[:5]) + f"?p={k}"
        base = rng.choice(BASES) if rng.random() < 0.4 else None
        links = [_link(rng) for _ in range(rng.randint(0, 25))]
        links.insert(rng.randint(0, len(links)), '{"path":"A@/href","url":"http://creativecommons.org/licenses/by/4.0/",'
                     '"rel":"license"}' if rng.random() < 0.1 else '{"path":"A@/href","url":"/x"}')
        out.append(_record(_page_json(page_url, base, links), page_url))
    return b"".join(out)


@pytest.mark.parametrize("seed", range(4))
def test_same_rows_on_generated_links(lid_model: str, seed: int) -> None:
    data = generated_wat(seed)
    for config in sorted(CONFIGS):
        st = assert_same(data, f"generated-{seed}.warc.wat.gz", ExtractConfig(lid_model=None, **CONFIGS[config]))
        assert st["counts"]["pages.wat"] > 100
        # pages with a non-string value take the Python loop; most take the C loop
        assert 0 < st["counts"]["pages.wat_compiled"] < st["counts"]["pages.wat"]
    st = assert_same(data, f"generated-{seed}.warc.wat.gz", ExtractConfig(lid_model=lid_model))
    assert st["counts"]["pairs_kept"] > 50


def test_the_digest_is_sha256() -> None:
    import hashlib

    from crawlpairs.udfs.extract import _hotloop

    rng = random.Random(5)
    for n in [*range(0, 200), 1000, 4096, 100_003]:
        data = bytes(rng.randrange(256) for _ in range(n))
        want = hashlib.sha256(data).digest()
        # the compression function the CPU has (SHA-NI where it exists), and the portable one
        assert _hotloop.sha256(data) == want, (n, _hotloop.SHA256)
        assert _hotloop.sha256(data, True) == want, n


def python_record_head(out: bytes, maxrec: int) -> tuple[bytes, bytes, str] | None:
    """warcread's fast-path decision in Python (as it was before `_hotloop.record`)."""
    if not out.startswith(b"WARC/"):
        return None
    nl = out.find(b"\n", 0, 32)
    if not (nl > 0 and out[nl - 1] == 13):
        return None
    i = out.find(b"\r\n\r\n", 0, warcread.MAX_HEADER_BYTES)
    hdr = out[:i] if i > 0 else b""
    clen = warcread._content_length(hdr)
    stop = i + 4 + clen
    if i > 0 and 0 <= clen <= maxrec and stop <= len(out) and (stop == len(out) or not out[stop:].strip(b"\r\n")):
        return hdr, out[i + 4 : stop], warcread._rtype(hdr)
    return None


def test_record_head_in_c_decides_as_the_python_code() -> None:
    """`_hotloop.record` (warcread's fast path) on members aimed at its shortcuts: whenever it
    answers, the answer is the Python code's; it declines (None) only where Python's own
    spelling checks would fall back to a regex or refuse the record."""
    from crawlpairs.udfs.extract import _hotloop

    rng = random.Random(11)
    types = ["metadata", "response", "Metadata", "re-quest", "", "warcinfo", "résumé"]
    lengths = ["{n}", " {n}", "{n} ", "0{n}", "+{n}", "{n}x", "", "9" * 19, "{n}\r\nContent-Length: 3"]
    answered = declined = 0
    for _ in range(3000):
        body = bytes(rng.choice(b"ab\r\n{}") for _ in range(rng.randrange(0, 40)))
        n = len(body) + (0 if rng.random() < 0.8 else rng.choice([-1, 1, -40]))
        lines = [rng.choice(["WARC/1.0"] * 6 + ["WARC/1.1", "warc/1.0", "WARC/1.0 " + "x" * 30])]
        if rng.random() < 0.9:
            lines.append(f"WARC-Type: {rng.choice(types)}" if rng.random() < 0.9 else "warc-type:metadata")
        if rng.random() < 0.95:
            name = "Content-Length: " if rng.random() < 0.85 else rng.choice(["content-length: ", "Content-Length:"])
            spelling = lengths[0] if rng.random() < 0.7 else rng.choice(lengths)
            lines.append(name + spelling.format(n=max(n, 0)))
        lines.append("WARC-Target-URI: http://ex.com/")
        rng.shuffle(lines[1:])
        eol = b"\r\n" if rng.random() < 0.95 else b"\n"
        head = eol.join(x.encode() for x in lines) + eol + eol
        tail = rng.choice([b"\r\n\r\n"] * 6 + [b"", b"\n", b"\r\n\r\nx", b" \r\n"])
        member = head + body + tail
        maxrec = 1 << 20 if rng.random() < 0.9 else rng.choice([10, 0])
        got = _hotloop.record(member, maxrec, warcread.MAX_HEADER_BYTES)
        want = python_record_head(member, maxrec)
        if got is None:
            declined += 1
            if want is not None:  # Python accepted through a fallback C leaves to it
                k = want[0].find(b"\r\nContent-Length: ")
                value = want[0][k + 18 :].split(b"\r", 1)[0] if k >= 0 else b""
                assert k < 0 or not value.isdigit() or len(value) > 18, member
        else:
            answered += 1
            hdr, payload, rtype = got
            assert (hdr, payload, rtype if rtype is not None else warcread._rtype(hdr)) == want, member
    assert answered > 600 and declined > 600  # both branches well exercised


def python_flags(payload: bytes) -> tuple[int, int]:
    """What `_hotloop.flags` answers, in Python: IMG@ (1); only with it: "Base" (2) at its
    first offset, creativecommons.org (4), the payload's last 8 bytes end in "}" (8)."""
    if b"IMG@" not in payload:
        return 0, -1
    base = payload.find(b'"Base"')
    return (1 | (2 if base >= 0 else 0) | (4 if b"creativecommons.org" in payload else 0)
            | (8 if payload[-8:].rstrip().endswith(b"}") else 0)), base


@pytest.mark.parametrize("avx2", [True, False])
def test_flags_scan_finds_what_python_finds(shared_data: Path, real_pages_wat: bytes, avx2: bool) -> None:
    """The pair-filtered SIMD scan (AVX2 where the CPU has it, else SSE2) on every real payload
    and on needles placed at every offset near the ends of short buffers, where the vector
    loop hands over to the scalar tail."""
    from crawlpairs.udfs.extract import _hotloop

    was = _hotloop.set_avx2(avx2)
    try:
        payloads = []
        for data in [real_pages_wat, *(p.read_bytes() for p in sorted((shared_data / "wat").glob("*.wat.gz")))]:
            payloads += [bytes(r.payload) for r in warcread.iter_records(
                io.BytesIO(data), "x", warcread.Caps(1 << 24, 1 << 28), Stats())]
        rng = random.Random(8)
        needles = [b"IMG@", b'"Base"', b"creativecommons.org", b"IMG", b'"Bas"', b"creativecommons.or", b"}", b"G@"]
        for n in range(0, 120):
            for _ in range(6):
                buf = bytearray(rng.choice(b'ab"{}:, \n') for _ in range(n))
                for needle in rng.sample(needles, rng.randrange(0, 4)):
                    at = rng.randrange(0, n + 1)
                    buf[at:at] = needle
                payloads.append(bytes(buf))
        assert sum(1 for p in payloads if b"IMG@" in p) > 300
        for p in payloads:
            assert _hotloop.flags(p) == python_flags(p), p[:200]
            assert _hotloop.flags(memoryview(p)) == python_flags(p)
    finally:
        _hotloop.set_avx2(was)


def test_same_rows_without_avx2(real_pages_wat: bytes, lid_model: str) -> None:
    """The SSE2 scans (a CPU without AVX2) give the same rows as the Python loop."""
    from crawlpairs.udfs.extract import _hotloop

    was = _hotloop.set_avx2(False)
    try:
        st = assert_same(real_pages_wat, "real-pages.warc.wat.gz", ExtractConfig(lid_model=lid_model))
    finally:
        _hotloop.set_avx2(was)
    assert st["counts"]["pages.wat_compiled"] == st["counts"]["pages.wat"] > 250


def read_all(data: bytes, compiled: bool, skip: dict | None = None) -> tuple[list[tuple], dict]:
    saved = warcread._hot
    if not compiled:
        warcread._hot = None
    try:
        stats = Stats()
        recs = [(r.offset, r.rtype, r.header, bytes(r.payload), r.truncated) for r in warcread.iter_records(
            io.BytesIO(data), "x", warcread.Caps(1 << 20, 1 << 24), stats, skip)]
    finally:
        warcread._hot = saved
    return recs, stats.to_dict()


def test_member_reader_in_c_reads_what_python_reads(shared_data: Path, real_pages_wat: bytes) -> None:
    """`_hotloop.members` (many gzip members a call) against the Python reader on the real files
    and on damaged copies (flipped bytes, a cut, junk between members, a member over the 64 KB
    window): the same records at the same offsets and the same errors; with skip_plain_metadata
    it leaves out exactly the metadata records without IMG@ and counts them."""
    files = [real_pages_wat, *(p.read_bytes() for p in real_files(shared_data))]
    rng = random.Random(4)
    variants = []
    for data in files[:4]:
        variants.append(data)
        b = bytearray(data)
        for _ in range(3):
            i = rng.randrange(len(b))
            b[i] ^= 0x5A
        variants.append(bytes(b))
        variants.append(data[: len(data) * 2 // 3])
        cut = data.find(b"\x1f\x8b\x08", len(data) // 2)
        variants.append(data[:cut] + b"junk between members" + data[cut:])
    big = json.dumps({"Envelope": {"x": "".join(rng.choice("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789") for _ in range(400_000))}}).encode()
    variants.append(files[0][:5000] + _record(big, "http://ex.com/big") + files[0][5000:20000])
    for data in variants:
        assert read_all(data, True) == read_all(data, False)
        skip: dict = {}
        recs, stats = read_all(data, True, skip)
        want, want_stats = read_all(data, False)
        left_out = [r for r in want if r not in recs]
        assert [r for r in want if r in recs] == recs and stats == want_stats
        assert all(r[1] == "metadata" and b"IMG@" not in r[3] for r in left_out)
        assert skip.get("metadata", 0) == len(left_out)
        if data is files[0]:  # the C reader took every member of an undamaged file
            assert left_out == [r for r in want if r[1] == "metadata" and b"IMG@" not in r[3]]


EDGE_HREFS = [
    "http://ex.com/a b.jpg#f", "http://ex.com/a .jpg #f", "http://ex.com/a.jpg #f", "/^x.jpg", "/a.jpg?^b",
    "a b.jpg", "  ../x y.jpg  ", "../../../../up.jpg", "./a/./b.jpg", "../a/../b.jpg", "HTTP://EX.COM/a.jpg",
    "http://ex.com/a&amp;b.jpg", "http://ex.com/a&b;c.jpg", "http://ex.com/a&b.jpg", "http://ex.com/%2e%2e/a.jpg",
    "http://xn--bcher-kva.example/a.jpg", "http://ex.com:8080/a.jpg", "http://ex.com./a.jpg", "http://1.2.3.4/a.jpg",
    "http://ex.com/a.GIF", "http://ex.com/a.gif?x", "http://ex.com/.gif", "http://ex.gif/", "data:image/png;base64,AA",
    "javascript:void(0)", "ftp://ex.com/a.jpg", "//cdn.ex.com/a.jpg", "?q=1", "#top", "", " ", "http://ex.com/a\tb.jpg",
    "http://ex.com/é.jpg", "http://ex.com/a\\b.jpg", "http://ex.com/a%7Bb%7D.jpg", "http://ex.com/a`b<c>.jpg", "http://ex.com/a|b[c].jpg",
]


def test_same_rows_on_edge_hrefs() -> None:
    """The hand-picked places where the C fast path stops (or once differed from the Python loop).
    (A raw brace in a string makes the whole page take the Python loop, as scan_page does.)"""
    pages = []
    for k, base in enumerate(BASES[:5] + ["http://ex.com/a/b/c/d/"]):
        links = [
            "{" + f'"path":"IMG@/src","url":{json.dumps(h)},"alt":{json.dumps(f"edge case {i} photo")}' + "}"
            for i, h in enumerate(EDGE_HREFS)
        ]
        pages.append(_record(_page_json(base + f"?k={k}", None, links), base + f"?k={k}"))
    data = b"".join(pages)
    for config in sorted(CONFIGS):
        st = assert_same(data, "edges.warc.wat.gz", ExtractConfig(lid_model=None, **CONFIGS[config]))
        assert st["counts"]["pages.wat_compiled"] == st["counts"]["pages.wat"] == 6


def test_language_id_loop_in_c_equals_python(lid_model: str) -> None:
    """`_hotloop.lid` against langid's Python loop: newlines, the 300-character cut, empty and
    repeated texts, scripts fastText scores differently."""
    rng = random.Random(3)
    texts = ["", "a\nb", "Bonjour tout le monde", "Привет мир\nкак дела", "x" * 1000, "日本語のテキスト" * 60,
             "ok", "ok", "\n", " ", "Hello world " * 40 + "\nend"]
    words = ["the", "chat", "Hund", "gato", "мир", "猫", "12", "é", "\n"]
    texts += [" ".join(rng.choice(words) for _ in range(rng.randrange(1, 90))) for _ in range(300)]
    saved = langid._hot
    try:
        langs_c, scores_c = langid.predict(texts, lid_model)
        langid._hot = None
        langs_p, scores_p = langid.predict(texts, lid_model)
    finally:
        langid._hot = saved
    assert saved is not None
    assert langs_c == langs_p
    assert scores_c.tobytes() == scores_p.tobytes()
    assert langs_c[0] is None and langs_c[2] == "fr" and scores_c[0] == 0


def test_language_id_over_a_column_equals_predict(shared_data: Path, lid_model: str) -> None:
    """`langid.predict_column` (the compiled predictor over the C columns' text buffer, each
    distinct text once through a hash table of its bytes) against `predict` on the texts:
    real captions, repeats, empty text, newlines, the 300-character cut inside multi-byte
    characters."""
    import pyarrow.parquet as pq

    caps = pq.read_table(shared_data / "captions" / "test_10000.parquet").column(0).to_pylist()[:3000]
    texts = [t for t in caps if isinstance(t, str)]
    texts += ["", "a\nb", "ok", "ok", "", "é" * 299 + "日本" * 10, "x" * 1000, "日本語のテキスト" * 60, "\n", texts[5]]
    arr = pa.array(texts, pa.string())
    offsets, data = arr.buffers()[1].to_pybytes(), arr.buffers()[2].to_pybytes()
    codes, labels, scores = langid.predict_column(offsets, data, len(texts), lid_model)
    want_langs, want_scores = langid.predict(texts, lid_model)
    assert [codes[i] if i >= 0 else None for i in labels] == want_langs
    assert scores.tobytes() == want_scores.tobytes()
    assert want_langs.count(None) >= 2 and len(set(want_langs)) > 5


def test_the_compiled_predictor_gives_the_librarys_labels_and_scores(shared_data: Path, lid_model: str) -> None:
    """`lid_model` in _hotloop.c (fastText inference for lid.176.ftz) against the fastText
    library itself, bit for bit: 10,000 real captions, odd tokens and separators (`</s>`,
    `__label__`, NUL, vertical tab, NBSP), long words, and 3,000 random strings over many scripts."""
    import numpy as np
    import pyarrow.parquet as pq

    caps = pq.read_table(shared_data / "captions" / "test_10000.parquet").column("TEXT").to_pylist()
    texts = [c or "" for c in caps] + list(langid.CHECK_TEXTS) + [
        "", " ", "\n", "</s>", "a </s> b", "__label__en", "__label__zz word", "a\x00b\x0bc\x0cd\re", "\u00a0nb\u00a0sp",
        "w" * 2000, "é" * 300, "e\u0301" * 50, "😀" * 20]
    rng = random.Random(11)
    alphabet = list("abcxyz ABC019.,'\t\r\n<>/_") + list("éüßçдфжяΑβγ日本語中文한국어") + ["😀", "\u0301", "\u00a0", "\x00",
                                                                                        "</s>", "__label__"]
    texts += ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 400))) for _ in range(3000)]
    model = langid.load_model(lid_model)
    assert langid.engine(lid_model) == "compiled"
    native = langid._NATIVE[lid_model]
    ours, theirs = np.zeros(len(texts), np.float32), np.zeros(len(texts), np.float32)
    langs_ours = langid._hot.lid(texts, model.f.predict, langid.MAX_CHARS, ours, native)
    langs_theirs = langid._hot.lid(texts, model.f.predict, langid.MAX_CHARS, theirs)
    assert langs_ours == langs_theirs
    assert ours.tobytes() == theirs.tobytes()
    assert langs_ours.count("en") > 1000 and langs_ours[len(caps)] == "en"


def test_a_model_the_compiled_predictor_does_not_handle_stays_with_the_library(lid_model: str, tmp_path: Path,
                                                                               real_pages_wat: bytes) -> None:
    """A model file it cannot parse whole (here: cut short, or with bytes after its end) is
    refused with a reason; langid then predicts with the library, same answers."""
    data = Path(lid_model).read_bytes()
    for bad in (data[: len(data) // 2], data + b"\0", b"not a model"):
        with pytest.raises(ValueError):
            langid._hot.lid_model(bad)
    # the library loads a model with one trailing byte; the C predictor refuses it: fastText predicts
    padded = tmp_path / "padded.ftz"
    padded.write_bytes(data + b"\0")
    assert langid.engine(str(padded)) == "fasttext"
    assert langid.predict(["a photo of a cat", "Ein Hund"], str(padded))[0] == ["en", "de"]
    assert langid.predict_column(b"", b"", 0, str(padded)) is None  # extract then predicts on the texts
    # ... and extract's rows are the same as with the compiled predictor
    lib = run(real_pages_wat, "x.wat.gz", ExtractConfig(lid_model=str(padded)), True)[0]
    native = run(real_pages_wat, "x.wat.gz", ExtractConfig(lid_model=lid_model), True)[0]
    assert len(lib) > 100 and lib == native



def test_file_dedup_in_c_keeps_what_the_set_keeps() -> None:
    """extract's per-file dedup (`FileDedup`: the uids in C) against the Python set: the first of
    each uid in file order across batches survives, on sliced arrays too; a uid that is not 32
    bytes is refused."""
    rng = random.Random(2)
    pool = [f"{rng.getrandbits(128):032x}" for _ in range(3000)]
    batches = [pa.array([rng.choice(pool) for _ in range(rng.randrange(0, 2500))], pa.string()) for _ in range(8)]
    batches.append(batches[1].slice(17, 900))  # an array with an offset
    masks = {}
    for compiled in (True, False):
        saved = ex._hot
        if not compiled:
            ex._hot = None
        try:
            dedup = ex.FileDedup()
            masks[compiled] = [dedup.keep(b) for b in batches]
        finally:
            ex._hot = saved
    assert masks[True][0] is not None  # repeats within the first batch already
    want, seen = [], set()
    for b in batches:
        keep = [u not in seen and not seen.add(u) for u in b.to_pylist()]
        want.append(None if all(keep) else keep)
    for compiled in (True, False):
        assert [m if m is None else m.to_pylist() for m in masks[compiled]] == want
    with pytest.raises(ValueError):
        ex.FileDedup().keep(pa.array(["short"]))


def test_a_build_without_simd_scans_the_same(tmp_path: Path, real_pages_wat: bytes) -> None:
    """The extension as a CPU without SSE2 / AVX2 / SHA-NI builds it (ARM, e.g. Graviton): its
    scalar scans and portable SHA-256 give `flags`' and the digest's answers on every real payload."""
    import hashlib
    import shutil
    import subprocess
    import sysconfig

    from crawlpairs.udfs.extract import _hotloop

    if shutil.which("gcc") is None:
        pytest.skip("no gcc here")
    src = (REPO / "udfs" / "extract" / "_hotloop.c").read_text()
    assert "#define HAVE_SHANI_CODE 1" in src
    scalar = tmp_path / "_hotloop.c"
    scalar.write_text("#undef __SSE2__\n" + src.replace("#define HAVE_SHANI_CODE 1", ""))
    so = tmp_path / "_hotloop.so"
    subprocess.run(["gcc", "-O2", "-std=gnu11", "-ffp-contract=off", "-shared", "-fPIC",
                    f"-I{sysconfig.get_paths()['include']}", str(scalar), "-o", str(so), "-lm"], check=True)
    spec = importlib.util.spec_from_file_location("scalar_build._hotloop", so)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.SHA256 == "portable" and not mod.set_avx2(True)
    payloads = [bytes(r.payload) for r in warcread.iter_records(io.BytesIO(real_pages_wat), "x",
                                                                warcread.Caps(1 << 24, 1 << 28), Stats())]
    assert sum(1 for p in payloads if b"IMG@" in p) > 250
    for p in payloads:
        assert mod.flags(p) == _hotloop.flags(p) == python_flags(p)
    for p in payloads[:300]:
        assert mod.sha256(p) == hashlib.sha256(p).digest()
