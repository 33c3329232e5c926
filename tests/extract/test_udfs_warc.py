"""WARC HTML extraction: real WARCs checked against an independent bs4 count, and the
things WAT loses (srcset, lazy loading, <base>, figcaption) on hand-written WARCs."""

from __future__ import annotations

import io
from urllib.parse import urljoin, urlsplit

import pyarrow as pa
import pytest

from crawlpairs.stats import Stats
from crawlpairs.udfs.extract.candidates import CANDIDATE_SCHEMA, extract_stream


def run_bytes(data: bytes, cfg, name="mem.warc.gz"):
    stats = Stats()
    batches = list(extract_stream(io.BytesIO(data), name, cfg, stats))
    return pa.Table.from_batches(batches, schema=CANDIDATE_SCHEMA).to_pylist(), stats


def browser_url(url: str) -> str | None:
    """The WHATWG parser's serialisation (ada, no fast path), fragment dropped."""
    import ada_url

    try:
        u = ada_url.URL(url)
    except ValueError:
        return None
    u.hash = ""
    return u.href


def laion_pairs_bs4(path) -> list[tuple[str, str, str]]:
    """Independent reference: warcio + BeautifulSoup(lxml), `<img src>` + non-empty alt,
    resolved against <base>/page URL, LAION's filters, exact dedup per page."""
    import html as htmlmod
    import re
    import warnings

    import ftfy
    from bs4 import BeautifulSoup
    from warcio.archiveiterator import ArchiveIterator

    out = []
    with open(path, "rb") as f:
        for rec in ArchiveIterator(f):
            if rec.rec_type != "response" or rec.http_headers is None:
                continue
            if "html" not in (rec.http_headers.get_header("Content-Type") or "").lower():
                continue
            page = rec.rec_headers.get_header("WARC-Target-URI").strip("<>")
            body = rec.content_stream().read()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                soup = BeautifulSoup(body, "lxml")
            base = page
            b = soup.find("base", href=True)
            if b and b["href"].strip():
                base = urljoin(page, b["href"].strip())
            seen = set()
            for img in soup.find_all("img"):
                alt, src = img.get("alt"), img.get("srcset") or img.get("src")
                if not alt or not alt.strip() or not src:
                    continue
                if img.get("srcset"):  # largest candidate by w / x, like ours
                    cands = [c.split() for c in re.split(r",\s+", img["srcset"].strip()) if c.strip()]

                    def key(c):
                        d = c[1].lower() if len(c) > 1 else "1x"
                        return (1, float(d[:-1])) if d.endswith("w") else (0, float(d[:-1] or 1))

                    src = max(cands, key=key)[0]
                url = urljoin(base, src.strip()).split("#")[0]
                parts = urlsplit(url)
                if parts.scheme not in ("http", "https"):
                    continue
                url = browser_url(url)  # what a browser requests (WHATWG), as extract keeps it
                if url is None or len(url) > 2000:
                    continue
                host = (parts.hostname or "").rstrip(".")
                if not host or len(host) > 60:
                    continue
                if parts.path.rsplit("/", 1)[-1].rsplit(".", 1)[-1].lower() in ("svg", "gif") and "." in parts.path.rsplit("/", 1)[-1]:
                    continue
                text = " ".join(ftfy.fix_text(htmlmod.unescape(alt)).split())
                if len(text) < 5 or (url, text) in seen:
                    continue
                seen.add((url, text))
                out.append((page, url, text))
    return out


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        # counts computed by laion_pairs_bs4 (bs4 + lxml + warcio), and the same pairs as ours
        ("warc/aut-example.warc.gz", 323),  # 666 alt images: 289 repeats in page, 47 gif/svg
        ("warc/dolma-sample-0000.warc.gz", 48),  # 170 alt images: 121 svg/gif, 12 non-http
        ("warc/resiliparse-CC-MAIN-2020-34.warc.gz", 16),
        ("warc/CC-MAIN-20140820021334-00006-ip-10-180-136-8.ec2.internal.warc.gz", 857),
        ("warc/resiliparse-clipped.warc.gz", 6),
    ],
)
def test_real_warc_matches_independent_bs4(data_dir, cfg, name, expected):
    cfg.text_fallbacks = []  # alt only, like the reference
    ref = laion_pairs_bs4(data_dir / name)
    stats = Stats()
    with open(data_dir / name, "rb") as f:
        table = pa.Table.from_batches(list(extract_stream(f, name, cfg, stats)), schema=CANDIDATE_SCHEMA)
    ours = list(zip(table.column("page_url").to_pylist(), table.column("url").to_pylist(),
                    table.column("text").to_pylist(), strict=True))
    assert len(ref) == expected
    assert sorted(ours) == sorted(ref)
    c = stats.counts
    assert c["pairs_kept"] == expected
    assert c["pairs_found"] == c["pairs_kept"] + sum(stats.dropped.values())
    # the clipped file ends 13 KB short of its record's Content-Length: the page up to the cut
    # is still read, and the cut is counted
    assert dict(stats.errors) == ({"truncated_record": 1} if "clipped" in name else {})


PAGE = """<!doctype html><html><head><title>t</title>{head}</head><body>{body}</body></html>"""


def page(body: str, head: str = "") -> str:
    return PAGE.format(head=head, body=body)


def test_srcset_largest_candidate(cfg, warc_bytes):
    html = page(
        '<img src="small.jpg" srcset="small.jpg 320w, medium.jpg 640w, large.jpg 1280w" alt="A cat on a mat">'
        '<img src="a.jpg" srcset="a.jpg, a@2x.jpg 2x, a@3x.jpg 3x" alt="Density descriptors">'
        '<img src="b.jpg" srcset="https://cdn.example.net/w_100,h_50/b.jpg 100w, https://cdn.example.net/w_800,h_400/b.jpg 800w" alt="Commas in URLs">'
    )
    rows, _ = run_bytes(warc_bytes([("http://example.com/p/index.html", html)]), cfg)
    assert [r["url"] for r in rows] == [
        "http://example.com/p/large.jpg",
        "http://example.com/p/a@3x.jpg",
        "https://cdn.example.net/w_800,h_400/b.jpg",
    ]


def test_lazy_loading_placeholders(cfg, warc_bytes):
    html = page(
        '<img src="data:image/gif;base64,R0lGODlhAQABAAAAACw=" data-src="/img/real1.jpg" alt="Lazy one here">'
        '<img src="/static/blank.gif" data-lazy-src="real2.jpg" alt="Lazy two here">'
        '<img data-original="real3.jpg" alt="No src at all">'
        '<img src="/img/spacer.gif" data-srcset="r4-small.jpg 1x, r4-big.jpg 2x" alt="Lazy srcset">'
        '<img src="real5.jpg" data-src="other.jpg" alt="Real src wins">'
        '<img src="data:image/png;base64,AAAA" alt="Inline only, no lazy attribute">'
    )
    rows, stats = run_bytes(warc_bytes([("https://example.com/a/b.html", html)]), cfg)
    assert [r["url"] for r in rows] == [
        "https://example.com/img/real1.jpg",
        "https://example.com/a/real2.jpg",
        "https://example.com/a/real3.jpg",
        "https://example.com/a/r4-big.jpg",
        "https://example.com/a/real5.jpg",
    ]
    assert stats.dropped["data_uri"] == 1


def test_base_href_and_whitespace(cfg, warc_bytes):
    html = page(
        '<img src="  pics/one.jpg\n" alt="Base resolved one">'
        '<img src="//other.example.org/two.jpg" alt="Scheme relative">'
        '<img src="pics\\three.jpg" alt="Backslash path">'
        '<img src="../up.jpg#frag" alt="Dot segments and fragment">',
        head='<base href="https://static.example.com/root/">',
    )
    rows, _ = run_bytes(warc_bytes([("http://example.com/x/y.html", html)]), cfg)
    assert [r["url"] for r in rows] == [
        "https://static.example.com/root/pics/one.jpg",
        "https://other.example.org/two.jpg",
        "https://static.example.com/root/pics/three.jpg",
        "https://static.example.com/up.jpg",
    ]


def test_text_fallbacks_marked(cfg, warc_bytes):
    html = page(
        '<figure><a href="/big"><img src="f1.jpg"></a><figcaption>A lighthouse at  dusk</figcaption></figure>'
        '<img src="t1.jpg" title="Tooltip title text">'
        '<figure><img src="both.jpg" alt="" title="Title wins by default"><figcaption>Caption</figcaption></figure>'
        '<img src="a1.jpg" alt="Alt text wins" title="not this">'
        '<img src="none.jpg">'
    )
    rows, stats = run_bytes(warc_bytes([("http://example.com/", html)]), cfg)
    assert [(r["url"].rsplit("/", 1)[1], r["text"], r["text_source"]) for r in rows] == [
        ("f1.jpg", "A lighthouse at dusk", "figcaption"),
        ("t1.jpg", "Tooltip title text", "title"),
        ("both.jpg", "Title wins by default", "title"),
        ("a1.jpg", "Alt text wins", "alt"),
    ]
    assert stats.dropped["empty_text"] == 1
    cfg.text_fallbacks = ["figcaption"]
    rows, _ = run_bytes(warc_bytes([("http://example.com/", html)]), cfg)
    assert [(r["text"], r["text_source"]) for r in rows] == [
        ("A lighthouse at dusk", "figcaption"), ("Caption", "figcaption"), ("Alt text wins", "alt")]
    cfg.text_fallbacks = []
    rows, _ = run_bytes(warc_bytes([("http://example.com/", html)]), cfg)
    assert [r["text_source"] for r in rows] == ["alt"]


def test_width_height_and_license_from_html(cfg, warc_bytes):
    html = page(
        '<img src="p.jpg" width="640" height="480px" alt="Dimensions given">'
        '<a rel="license" href="https://creativecommons.org/licenses/by-nc-sa/4.0/">CC</a>'
    )
    rows, _ = run_bytes(warc_bytes([("http://example.com/", html)]), cfg)
    r = rows[0]
    assert (r["width"], r["height"]) == (640, 480)
    assert r["license"] == "cc-by-nc-sa"
    assert r["license_url"] == "https://creativecommons.org/licenses/by-nc-sa/4.0/"
    assert r["text_source"] == "alt"


def test_laion_filters_each_counted_and_configurable(cfg, warc_bytes):
    long_url = "http://example.com/" + "a" * 2100 + ".jpg"
    long_dom = "http://" + "d" * 70 + ".com/x.jpg"
    html = page(
        f'<img src="{long_url}" alt="Too long a URL">'
        f'<img src="{long_dom}" alt="Too long a domain">'
        '<img src="icon.SVG" alt="Vector icon">'
        '<img src="anim.gif?x=1" alt="Animated gif">'
        '<img src="ftp://example.com/x.jpg" alt="FTP scheme">'
        '<img src="ok.jpg" alt="abcd">'
        '<img src="ok.jpg" alt="   ">'
        '<img src="ok2.jpg" alt="Kept caption">'
        '<img src="ok2.jpg" alt="Kept   caption">'
    )
    data = warc_bytes([("http://example.com/", html)])
    rows, stats = run_bytes(data, cfg)
    assert [r["text"] for r in rows] == ["Kept caption"]
    assert dict(stats.dropped) == {
        "url_too_long": 1, "domain_too_long": 1, "extension": 2, "scheme": 1,
        "text_too_short": 1, "empty_text": 1, "duplicate_in_page": 1,
    }
    assert stats.counts["pairs_found"] == 9
    cfg.max_url_length, cfg.max_domain_length, cfg.drop_extensions = 5000, 100, []
    cfg.min_text_length, cfg.allowed_schemes, cfg.exact_dedup = 1, ["http", "https", "ftp"], False
    rows, stats = run_bytes(data, cfg)
    assert len(rows) == 8 and dict(stats.dropped) == {"empty_text": 1}


def test_non_html_and_plain_warc(cfg, warc_bytes):
    data = warc_bytes([("http://example.com/x.json", '{"a": "<img src=x.jpg alt=nothing>"}')],
                      gz=False, content_type="application/json")
    rows, stats = run_bytes(data, cfg, name="plain.warc")
    assert rows == [] and stats.counts["skipped.non_html"] == 1 and not stats.errors
    rows, stats = run_bytes(warc_bytes([("http://example.com/", page('<img src="p.jpg" alt="Plain WARC too">'))],
                                       gz=False), cfg)
    assert [r["text"] for r in rows] == ["Plain WARC too"]


def test_input_format_forced(data_dir, cfg):
    cfg.input_format = "wat"
    with open(data_dir / "warc/resiliparse-clipped.warc.gz", "rb") as f:
        assert list(extract_stream(f, "x", cfg, Stats())) == []


# -- framing: the layouts a WARC file may come in, read member by member -----------------

def _pages(n: int) -> list[tuple[str, str]]:
    return [(f"http://example.com/{i}", page(f'<img src="p{i}.jpg" alt="Picture number {i} here">')) for i in range(n)]


def test_one_gzip_stream_and_plain_read_like_per_record_members(cfg, warc_bytes):
    import gzip

    per_record = warc_bytes(_pages(6))
    plain = warc_bytes(_pages(6), gz=False)
    want, _ = run_bytes(per_record, cfg)
    assert len(want) == 6
    for data in (plain, gzip.compress(plain)):  # uncompressed, and gzipped as one stream
        rows, stats = run_bytes(data, cfg)
        assert [r["text"] for r in rows] == [r["text"] for r in want] and not stats.errors
    # offsets: where each record's member (or, uncompressed, its header) starts
    starts = [i for i in range(len(plain)) if plain.startswith(b"WARC/1.", i)]
    rows, _ = run_bytes(plain, cfg)
    assert {r["source_offset"] for r in rows} <= set(starts)


def test_junk_between_members_and_a_cut_last_member(cfg, warc_bytes):
    import zlib

    data = warc_bytes(_pages(5))
    members, pos = [], 0
    while pos < len(data):
        d = zlib.decompressobj(31)
        d.decompress(data[pos:])
        end = len(data) - len(d.unused_data)
        members.append(data[pos:end])
        pos = end
    # five response members: junk after the 2nd, the last member cut in half
    junk = b"\x00garbage\x1f\x8bnot a member" * 10
    bad = b"".join(members[:2]) + junk + b"".join(members[2:-1]) + members[-1][: len(members[-1]) // 2]
    rows, stats = run_bytes(bad, cfg)
    assert [r["text"] for r in rows][:4] == [f"Picture number {i} here" for i in range(4)]
    assert stats.errors["gzip"] == 1
    assert set(stats.errors) <= {"gzip", "truncated_record", "truncated_member"}
    assert sum(stats.errors.values()) == 2
