"""normalize_url: WHATWG serialisation (ada) with a fast path that must give the same answer."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from urllib.parse import urlsplit

import ada_url
import pyarrow.parquet as pq
import pytest

from crawlpairs.udfs import urls
from crawlpairs.udfs.urls import normalize_url


def _reference(url: str) -> str | None:
    """The parser alone, no fast path: what normalize_url must always equal."""
    try:
        href = ada_url.URL(url)
    except ValueError:
        return None
    if href.protocol not in ("http:", "https:"):
        return None
    href.hash = ""
    return href.href


def _variants(url: str) -> list[str]:
    """Spellings that must leave the fast path or change the result."""
    p = urlsplit(url)
    host = p.hostname or ""
    rest = url[len(f"{p.scheme}://{p.netloc}"):] or "/"
    return [
        url,
        url + "#frag ment",
        url.replace("://", "://" + "u:p@", 1),
        f"{p.scheme.upper()}://{host.upper()}{rest}",
        f"{p.scheme}://{host}:{443 if p.scheme == 'https' else 80}{rest}",
        f"{p.scheme}://{host}:8080{rest}",
        f"{p.scheme}://{host}.{rest}",
        f"{p.scheme}://{host}/a/../b/./{rest.lstrip('/')}",
        f"{p.scheme}://{host}/%2e%2E/{rest.lstrip('/')}",
        f"{p.scheme}://{host}{rest} x",
        f"{p.scheme}://{host}{rest}?q='a'{{b}}`c`",
        f"{p.scheme}://{host}{rest}\\x",
        f"{p.scheme}://{host}{rest}é",
        f"{p.scheme}://{host}",
    ]


@pytest.fixture(scope="module")
def caption_urls(shared_data: Path) -> list[str]:
    t = pq.read_table(shared_data / "captions" / "test_10000.parquet", columns=["URL"])
    return [u for u in t.column("URL").to_pylist() if u]


def test_fast_path_equals_the_parser_on_real_urls(caption_urls: list[str]) -> None:
    """10,000 real image URLs, and 13 altered spellings of every 4th: normalize_url == ada + fragment dropped."""
    fast = 0
    for i, url in enumerate(caption_urls):
        for v in _variants(url) if i % 4 == 0 else [url]:
            assert normalize_url(v) == _reference(v), v
        fast += urls._CLEAN.fullmatch(url) is not None
    assert fast > len(caption_urls) * 0.8  # the fast path is taken for most real URLs


def test_browser_spelling() -> None:
    assert (normalize_url("http://0pointer.de/photos/galleries/Thailand 2011-01/thumbs/img-246.jpg")
            == "http://0pointer.de/photos/galleries/Thailand%202011-01/thumbs/img-246.jpg")
    assert normalize_url("HTTP://Bücher.DE:80/a b/../c.jpg?x=ü y#top") == "http://xn--bcher-kva.de/c.jpg?x=%C3%BC%20y"
    assert normalize_url("https://example.com") == "https://example.com/"
    assert normalize_url("http:\\\\example.com\\a\\b.jpg") == "http://example.com/a/b.jpg"
    for bad in ("not a url", "http://", "http://exa mple.com/", "ftp://example.com/a.jpg", "data:image/png;base64,AA",
                "http://[::1/", "http://1.2.3.4.5/", "http://999.1.1.1/", "javascript:alert(1)"):
        assert normalize_url(bad) is None, bad
    assert normalize_url(None) is None  # type: ignore[arg-type]  # a null cell never raises
    assert normalize_url("http://a.example/x\ud800y.jpg") == "http://a.example/x%EF%BF%BDy.jpg"  # lone surrogate
    assert normalize_url("http://a.example/\ud83d\ude00.jpg") == "http://a.example/%F0%9F%98%80.jpg"  # a pair


@pytest.mark.parametrize("spelling", [
    "１２７.０.０.１", "①②⑦.0.0.1", "127.1", "0x7f.1", "0177.0.0.1", "2130706433", "0x7f000001",
    "127.0.0.1.", "%31%32%37.0.0.1", "127。0。0。1",
])
def test_ipv4_spellings_become_one_dotted_quad(spelling: str) -> None:
    out = normalize_url(f"http://{spelling}:81/a.jpg")
    assert out == "http://127.0.0.1:81/a.jpg"
    assert ipaddress.ip_address(urlsplit(out).hostname) == ipaddress.ip_address("127.0.0.1")


def test_normalised_urls_are_fixed_points(caption_urls: list[str]) -> None:
    for url in caption_urls[:2000]:
        out = normalize_url(url)
        if out is not None:
            assert normalize_url(out) == out
            assert ada_url.check_url(out)


def test_every_real_row_has_a_url_a_strict_parser_accepts(shared_data: Path) -> None:
    """All real WARC/WAT files: each kept url is valid WHATWG, already in its normal form, no spaces."""
    import pyarrow as pa

    from crawlpairs.config import ExtractConfig
    from crawlpairs.stats import Stats
    from crawlpairs.udfs.extract.candidates import CANDIDATE_SCHEMA, extract_stream

    files = sorted([*(shared_data / "warc").glob("*.warc.gz"), *(shared_data / "wat").glob("*.wat*")])
    got: list[str] = []
    for f in files:
        with open(f, "rb") as fh:
            batches = list(extract_stream(fh, str(f), ExtractConfig(lid_model=None), Stats()))
        got += pa.Table.from_batches(batches, schema=CANDIDATE_SCHEMA).column("url").to_pylist()
    assert len(got) > 1000
    bad = [u for u in got if not ada_url.check_url(u) or ada_url.normalize_url(u) != u or " " in u]
    assert bad == []
    assert sum("Thailand%202011-01" in u for u in got) > 100  # the gallery with spaces in its path


def test_unusable_url_is_a_counted_drop_never_a_row(warc_bytes) -> None:
    import io

    from crawlpairs.config import ExtractConfig
    from crawlpairs.stats import Stats
    from crawlpairs.udfs.extract.candidates import extract_stream

    html = ('<html><body><img src="http://exa mple.com/a.jpg" alt="space in the host">'
            '<img src="http://999.1.1.1/b.jpg" alt="not an IPv4 address">'
            '<img src="/ok dir/c.jpg#x" alt="a good one here"></body></html>')
    stats = Stats()
    rows = [r for b in extract_stream(io.BytesIO(warc_bytes([("http://Example.com/p/", html)])), "mem",
                                      ExtractConfig(lid_model=None), stats) for r in b.to_pylist()]
    assert [r["url"] for r in rows] == ["http://example.com/ok%20dir/c.jpg"]
    assert stats.dropped["bad_url"] == 2


def test_fast_path_equals_the_parser_for_every_character_it_accepts() -> None:
    """Each character of the fast path's class, in a path and in a query, gives ada's own result (the
    URL standard encodes `^` in a path but not in a query: the fast path once kept it in both)."""
    for c in "!$&()*+,-./09:;=?@AZ[]^_az|~%":
        for url in (f"http://ex.com/a{c}b", f"http://ex.com/a?x{c}b"):
            url = url.replace("%", "%41")
            assert normalize_url(url) == _reference(url), url
