"""Extraction against the ground truth of generated Common Crawl files (crawlpairs.generate).

The generator writes a WAT and the WARC it describes from the same pages and records,
per `<img>`, what a LAION-rule extractor must produce; these tests check every pair,
text source, drop count and page license against that truth.
"""

from __future__ import annotations

import re

import ada_url
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from crawlpairs.stats import Stats
from crawlpairs.udfs.extract.candidates import CANDIDATE_SCHEMA, extract_stream
from crawlpairs.udfs.extract.text import clean_text

generate = pytest.importorskip("crawlpairs.generate")


@pytest.fixture(scope="module")
def generated(tmp_path_factory, data_dir):
    out = tmp_path_factory.mktemp("gen")
    res = generate.generate(str(out), kind="both", files=1, pages_per_file=150, seed=11, layout="flat")
    truth = pq.read_table(res.truth_path).to_pandas()
    return res, truth


def extract(path, cfg):
    stats = Stats()
    with open(path, "rb") as f:
        table = pa.Table.from_batches(list(extract_stream(f, path, cfg, stats)), schema=CANDIDATE_SCHEMA)
    return table.to_pandas(), stats


def squash(text: str) -> str:
    """Text as our cleanup would leave it, without whitespace. The truth's cleanup is simpler:
    it keeps mojibake ("â€”") and bidi controls that we repair or drop, and turns U+200B into a
    space where we remove it ("Log\u200bo" reads "Logo"); beyond that the texts must agree."""
    return "".join(clean_text(text).split())


def unsized(url: str) -> str:
    """URL without a WordPress size suffix (`x-768x512.jpg` -> `x.jpg`): from WARC we take the
    largest `srcset` candidate, the truth records `src`; both name the same picture."""
    return re.sub(r"(?:-\d+x\d+)+(?=\.\w+(?:\?|$))", "", url)


def browser(url: str) -> str:
    """The truth's URL as a browser requests it (WHATWG, by the ada parser), as extract keeps it."""
    u = ada_url.URL(url)
    u.hash = ""
    return u.href


def expected_pairs(truth, fallbacks: bool, lazy: bool):
    """(page_url, url, text, text_source) a correct extractor keeps, one per (page, url, text)."""
    rows = set()
    for r in truth.itertuples():
        if r.fault is None:
            rows.add((r.page_url, unsized(browser(r.url)), squash(r.text), "alt"))
        elif lazy and r.fault == "scheme" and r.lazy_url and r.text:  # data: placeholder + data-src
            rows.add((r.page_url, unsized(browser(r.lazy_url)), squash(r.text), "alt"))
        elif fallbacks and r.fault in ("no_alt", "empty_alt"):
            for text, source in ((r.title_text, "title"), (r.figcaption_text if lazy else None, "figcaption")):
                if text is not None and len(text) >= 5:
                    rows.add((r.page_url, unsized(browser(r.url)), squash(text), source))
                    break
    return rows


@pytest.mark.parametrize("fallbacks", [False, True])
def test_wat_matches_truth(generated, cfg, fallbacks):
    res, truth = generated
    cfg.text_fallbacks = ["title", "figcaption"] if fallbacks else []
    cfg.lid_model = None
    df, stats = extract(res.wat_files[0], cfg)
    got = set(zip(df.page_url, df.url.map(unsized), df.text.map(squash), df.text_source, strict=True))
    assert got == expected_pairs(truth, fallbacks, lazy=False)
    assert len(got) == len(df)  # no duplicate rows within a page
    assert stats.counts["pairs_found"] == res.img_tags
    if not fallbacks:
        d = res.drops
        assert stats.dropped["empty_text"] == d["no_alt"] + d["empty_alt"]
        assert stats.dropped["data_uri"] + stats.dropped["scheme"] == d["scheme"]
        for reason in ("extension", "url_too_long", "domain_too_long", "text_too_short", "text_too_long"):
            assert stats.dropped[reason] == d[reason], reason
    assert not stats.errors


def test_warc_matches_truth_with_lazy_and_figcaption(generated, cfg):
    res, truth = generated
    cfg.lid_model = None
    df, stats = extract(res.warc_files[0], cfg)
    got = set(zip(df.page_url, df.url.map(unsized), df.text.map(squash), df.text_source, strict=True))
    assert got == expected_pairs(truth, fallbacks=True, lazy=True)
    assert (df.text_source == "figcaption").sum() == res.figcaption_fallback_pairs
    assert (df.text_source == "title").sum() == res.title_fallback_pairs
    assert not stats.errors


def test_license_matches_truth(generated, cfg):
    res, truth = generated
    cfg.lid_model = None
    df, _ = extract(res.wat_files[0], cfg)
    lic = {(p, browser(u) if u else u): lc for p, u, lc in zip(truth.page_url, truth.url, truth.license, strict=True)}
    mismatched = [(p, u, lc, lic.get((p, u))) for p, u, lc in zip(df.page_url, df.url, df.license, strict=True)
                  if lc != lic.get((p, u))]
    assert mismatched == []
    assert df.license.notna().sum() > 0


def test_fast_scan_equals_full_parse(generated, data_dir):
    """The fast path (cut out IMG/license link objects) must give what the full parse gives."""
    from fastwarc.warc import ArchiveIterator

    from crawlpairs.udfs.extract.wat import parse_page, scan_page

    res, _ = generated
    files = [res.wat_files[0], *map(str, (data_dir / "wat").glob("*.wat*"))]
    checked = 0
    for path in files:
        with open(path, "rb") as f:
            for rec in ArchiveIterator(f, parse_http=False, quirks_mode=True):
                payload = rec.reader.read()
                if b"IMG@" not in payload:
                    continue
                try:
                    full = parse_page(payload, True)
                except ValueError:
                    continue
                try:
                    fast = scan_page(payload, True)
                except ValueError:
                    continue  # the caller falls back to the full parse
                assert (fast.images, fast.base, fast.license_links) == (full.images, full.base, full.license_links)
                checked += 1
    assert checked > 100
