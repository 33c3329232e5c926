"""crawlpairs.generate: real parsers read what it writes, and its ground truth is right.

The truth is checked against an independent count: the generated HTML parsed with
BeautifulSoup and the WAT's `IMG@/src` links read back with FastWARC, each run
through LAION's default rules as written here (not the generator's own code).
"""

from __future__ import annotations

import gzip
import hashlib
import html
import io
import json
import math
import os
import threading
import unicodedata
import zlib
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urljoin, urlsplit
from urllib.request import urlopen

import pandas as pd
import pyarrow.parquet as pq
import pytest
from bs4 import BeautifulSoup
from fastwarc.warc import ArchiveIterator, WarcRecordType
from warcio.archiveiterator import ArchiveIterator as WarcioIterator

from crawlpairs.config import ExtractConfig
from crawlpairs.generate import GenerateResult, GenerateStage, generate

# ---------------------------------------------------------------------------------------------
# an independent implementation of the rules the truth claims to follow


def clean(text: str) -> str:
    """Decoded text with control/format characters as spaces, whitespace collapsed."""
    t = "".join(" " if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") else c for c in text)
    return " ".join(t.split())


def judge(
    src: str | None, alt: str | None, page_url: str, base: str | None
) -> tuple[str | None, str | None, str]:
    """(fault, url, text) for one <img> by LAION's default filters; attribute values already decoded."""
    src = (src or "").strip()
    text = clean(alt) if alt is not None else ""
    if src.lower().startswith(("data:", "javascript:")):
        return "scheme", None, text
    url = urljoin(base or page_url, src)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        return "scheme", None, text
    if len(url) > 2000:
        return "url_too_long", url, text
    if len(parts.hostname or "") > 60:
        return "domain_too_long", url, text
    last = parts.path.rsplit("/", 1)[-1]
    if "." in last and last.rsplit(".", 1)[1].lower() in ("svg", "gif"):
        return "extension", url, text
    if alt is None:
        return "no_alt", url, text
    if not text:
        return "empty_alt", url, text
    if len(text) < 5:
        return "text_too_short", url, text
    if len(text) > 4000:
        return "text_too_long", url, text
    return None, url, text


def warc_pages(path: str) -> list[tuple[str, bytes]]:
    pages = []
    with open(path, "rb") as fh:
        for rec in WarcioIterator(fh):
            if rec.rec_type == "response":
                assert rec.http_headers.get_statuscode() == "200"
                pages.append((rec.rec_headers.get_header("WARC-Target-URI"), rec.content_stream().read()))
    return pages


def wat_docs(path: str) -> list[dict]:
    docs = []
    with open(path, "rb") as fh:
        for rec in ArchiveIterator(fh, record_types=WarcRecordType.metadata, parse_http=False):
            docs.append(json.loads(rec.reader.read()))
    return docs


def html_meta(doc: dict) -> dict | None:
    return doc["Envelope"]["Payload-Metadata"].get("HTTP-Response-Metadata", {}).get("HTML-Metadata")


@pytest.fixture(scope="module")
def both(tmp_path_factory) -> GenerateResult:
    out = tmp_path_factory.mktemp("both")
    return generate(str(out), kind="both", files=2, pages_per_file=60, seed=3)


# ---------------------------------------------------------------------------------------------


def test_records_parse_with_fastwarc_and_warcio(both):
    assert len(both.wat_files) == len(both.warc_files) == 2
    n_wat = n_warc = 0
    for path in both.wat_files + both.warc_files:
        raw = Path(path).read_bytes()
        fast = []
        with open(path, "rb") as fh:
            for rec in ArchiveIterator(fh, parse_http=False):
                fast.append((str(rec.record_type), rec.headers.get("WARC-Record-ID")))
                assert rec.verify_block_digest() if rec.headers.get("WARC-Block-Digest") else True
                rec.reader.read()
        with open(path, "rb") as fh:
            slow = [r.rec_headers.get_header("WARC-Record-ID") for r in WarcioIterator(fh)]
        assert [rid for _, rid in fast] == slow
        # one gzip member per record, like Common Crawl's files
        members, data = 0, raw
        while data:
            d = zlib.decompressobj(31)
            d.decompress(data)
            data = d.unused_data
            members += 1
        assert members == len(fast)
        assert fast[0][0] == "warcinfo"
        if path.endswith(".wat.gz"):
            n_wat += len(fast)
            assert {t for t, _ in fast[1:]} == {"metadata"}
        else:
            n_warc += len(fast)
            types = [t for t, _ in fast[1:]]
            assert types == ["request", "response", "metadata"] * 60
    assert (n_wat, n_warc) == (both.wat_records, both.warc_records) == (2 * (2 + 3 * 60), 2 * (1 + 3 * 60))


def test_wat_container_points_into_the_warc(both):
    """Container.Offset/Gzip-Metadata of each WAT record locate the described WARC record."""
    for wat, warc in zip(both.wat_files, both.warc_files, strict=True):
        blob = Path(warc).read_bytes()
        docs = wat_docs(wat)
        assert len(docs) == 1 + 3 * 60
        for doc in docs[:40]:
            c = doc["Container"]
            assert c["Filename"] == Path(warc).name
            off = int(c["Offset"])
            g = c["Gzip-Metadata"]
            n = int(g["Header-Length"]) + int(g["Deflate-Length"]) + int(g["Footer-Length"])
            rec = gzip.decompress(blob[off : off + n])
            assert len(rec) == int(g["Inflated-Length"])
            rid = doc["Envelope"]["WARC-Header-Metadata"]["WARC-Record-ID"]
            assert f"WARC-Record-ID: {rid}\r\n".encode() in rec


def _key_paths(obj, prefix="") -> set[str]:
    """Key paths with list indices as [] and free-form maps (HTTP headers, warcinfo fields) as *."""
    out: set[str] = set()
    if isinstance(obj, dict):
        for k, v in obj.items():
            key = "*" if prefix.endswith(("/Headers", "/WARC-Info-Metadata")) else k
            out |= _key_paths(v, f"{prefix}/{key}")
    elif isinstance(obj, list):
        for v in obj:
            out |= _key_paths(v, prefix + "[]")
    else:
        out.add(prefix)
    return out


def _real_wat_docs(shared: Path) -> dict[str, list[dict]]:
    """The real files' JSON records, read member by member (one of them has LF line ends)."""
    docs: dict[str, list[dict]] = {}
    for name in (
        "noalt-CC-MAIN-2023-14.warc.wat.gz",
        "whirlwind.warc.wat.gz",
        "CC-MAIN-20140820021334-00006-ip-10-180-136-8.ec2.internal.warc.wat.gz",
    ):
        data = (shared / "wat" / name).read_bytes()
        while data:
            d = zlib.decompressobj(31)
            rec = d.decompress(data)
            data = d.unused_data
            body = rec.split(b"\r\n\r\n", 1)[-1] if b"\r\n\r\n" in rec[:4000] else rec.split(b"\n\n", 1)[-1]
            if body.strip().startswith(b"{"):
                doc = json.loads(body)
                docs.setdefault(doc["Envelope"]["WARC-Header-Metadata"]["WARC-Type"], []).append(doc)
    return docs


def test_wat_json_has_the_layout_of_real_common_crawl_wat(both, shared_data):
    real = _real_wat_docs(shared_data)
    gen: dict[str, list[dict]] = {}
    for doc in wat_docs(both.wat_files[0]):
        gen.setdefault(doc["Envelope"]["WARC-Header-Metadata"]["WARC-Type"], []).append(doc)
    assert set(gen) == {"warcinfo", "request", "response", "metadata"}
    gen_paths = {t: set().union(*(_key_paths(d) for d in ds)) for t, ds in gen.items()}
    real_paths = {t: set().union(*(_key_paths(d) for d in ds)) for t, ds in real.items()}
    # every key path of the modern (2023/2024) real records is there ...
    modern = set().union(
        *(_key_paths(d) for ds in real.values() for d in ds if d["Envelope"]["Format"] == "WARC/1.0")
    )
    old_only = {p for p in modern if "TD@" in p}
    for t in ("request", "response"):
        want = {p for p in modern if _key_paths_type(p, real, t)} - old_only
        assert want - gen_paths[t] == set(), t
    # ... and nothing is invented beyond what real WATs (any year) or ia-web-commons emit
    allowed_extra = {
        "/Envelope/Payload-Metadata/HTTP-Response-Metadata/HTML-Metadata/Head/Base",  # <base href>
        "/Envelope/Payload-Metadata/HTTP-Response-Metadata/HTML-Metadata/Head/Metas[]/property",
        "/Envelope/Payload-Metadata/HTTP-Response-Metadata/HTML-Metadata/Links[]/rel",  # A rel=license
        "/Envelope/Payload-Metadata/HTTP-Response-Metadata/HTML-Metadata/Links[]/method",  # FORM
        "/Envelope/Payload-Metadata/WARC-Metadata-Metadata/Metadata-Records[]/Name",
        "/Envelope/Payload-Metadata/WARC-Metadata-Metadata/Metadata-Records[]/Value",
    }
    everything_real = set().union(*real_paths.values())
    for t, paths in gen_paths.items():
        assert paths - everything_real - allowed_extra == set(), t
    # the link paths ia-web-commons uses
    links = [link for d in gen["response"] for link in html_meta(d)["Links"]]
    assert {"IMG@/src", "A@/href", "FORM@/action"} <= {x["path"] for x in links}
    assert all(set(x) <= {"path", "url", "alt", "title", "text", "target", "rel", "method"} for x in links)


def _key_paths_type(path: str, real: dict[str, list[dict]], wtype: str) -> bool:
    return any(path in _key_paths(d) for d in real.get(wtype, []) if d["Envelope"]["Format"] == "WARC/1.0")


def test_warcinfo_carries_the_crawl_id(both):
    for path in both.wat_files + both.warc_files:
        with open(path, "rb") as fh:
            first = next(iter(ArchiveIterator(fh, parse_http=False)))
            assert b"isPartOf: CC-MAIN-2024-33\r\n" in first.reader.read()
    doc = wat_docs(both.wat_files[0])[0]
    assert doc["Envelope"]["Payload-Metadata"]["WARC-Info-Metadata"]["isPartOf"] == "CC-MAIN-2024-33"


def test_ground_truth_matches_html_parsed_with_bs4(both):
    truth = pq.read_table(both.truth_path).to_pandas()
    faults: dict[str | None, int] = {}
    pairs, with_alt, title_fb, fig_fb, lazy = [], 0, 0, 0, 0
    rows = []
    for warc in both.warc_files:
        for page_url, body in warc_pages(warc):
            soup = BeautifulSoup(body, "html.parser")
            base_tag = soup.find("base")
            base = urljoin(page_url, base_tag["href"]) if base_tag else None
            for img in soup.find_all("img"):
                fault, url, text = judge(img.get("src"), img.get("alt"), page_url, base)
                faults[fault] = faults.get(fault, 0) + 1
                rows.append((page_url, url, fault))
                with_alt += bool(text)
                if fault is None:
                    pairs.append((url, text))
                elif fault in ("no_alt", "empty_alt"):
                    fig = img.find_parent("figure")
                    cap = fig.find("figcaption") if fig else None
                    if len(clean(img.get("title") or "")) >= 5:
                        title_fb += 1
                    elif cap is not None and len(clean(cap.get_text())) >= 5:
                        fig_fb += 1
                elif fault == "scheme" and img.get("data-src"):
                    lazy += 1
    assert len(rows) == both.img_tags == len(truth)
    assert faults.get(None, 0) == both.pairs_expected
    assert {k: v for k, v in faults.items() if k} == {k: v for k, v in both.drops.items() if v}
    assert with_alt == both.imgs_with_alt
    assert len(set(pairs)) == both.unique_pairs_expected
    assert len(pairs) - len(set(pairs)) == both.duplicate_pairs
    assert (title_fb, fig_fb, lazy) == (
        both.title_fallback_pairs,
        both.figcaption_fallback_pairs,
        both.lazy_pairs,
    )
    # row by row, the truth table says the same
    assert [(p, u, f) for p, u, f in rows] == list(zip(truth.page_url, truth.url, truth.fault, strict=True))
    # a realistic mix
    assert 0.4 <= with_alt / len(rows) <= 0.65
    assert both.pairs_expected > 0.2 * both.img_tags
    assert all(v > 0 for k, v in both.drops.items() if k != "text_too_long")


def test_truth_clears_extract_config_defaults_with_a_margin(both):
    """Faults sit beyond ExtractConfig's default limits and surviving pairs inside them, each with
    the margin docs/generate.md states, so any reasonable cleanup agrees on the verdict."""
    d = ExtractConfig()
    t = pq.read_table(both.truth_path).to_pandas()

    def rows(fault):
        return t[t.fault.isna()] if fault is None else t[t.fault == fault]

    def host_len(url):
        return len(urlsplit(url).hostname or "")

    ok = rows(None)
    assert len(ok) == both.pairs_expected > 0
    assert ok.url.str.len().max() <= d.max_url_length
    assert max(map(host_len, ok.url)) <= d.max_domain_length
    assert d.min_text_length + 3 <= ok.text.str.len().min() and ok.text.str.len().max() <= d.max_text_length
    assert not {u.rsplit("/", 1)[-1].rsplit(".", 1)[-1].lower() for u in ok.url} & set(d.drop_extensions)
    assert (rows("url_too_long").url.str.len() > d.max_url_length + 100).all()
    assert min(map(host_len, rows("domain_too_long").url)) >= d.max_domain_length + 10
    assert (rows("text_too_short").text.str.len() <= d.min_text_length - 2).all()
    assert (rows("text_too_long").text.str.len() > d.max_text_length + 500).all()
    exts = {u.split("?")[0].rsplit(".", 1)[-1].lower() for u in rows("extension").url}
    assert exts and exts <= set(d.drop_extensions)


def test_wat_links_give_the_same_truth(both):
    """Raw WAT attribute values (entities not decoded, as ia-web-commons writes them) decode to the truth."""
    truth = pq.read_table(both.truth_path).to_pandas()
    got = []
    for wat in both.wat_files:
        for doc in wat_docs(wat):
            hm = html_meta(doc)
            if hm is None:
                continue
            page_url = doc["Envelope"]["WARC-Header-Metadata"]["WARC-Target-URI"]
            base = hm["Head"].get("Base")
            for link in hm["Links"]:
                if link["path"] == "IMG@/src":
                    alt = html.unescape(link["alt"]) if "alt" in link else None
                    fault, url, text = judge(html.unescape(link["url"]), alt, page_url, base)
                    got.append((page_url, url, fault, text if fault is None else None))
    want = list(
        zip(
            truth.page_url,
            truth.url,
            truth.fault,
            [t if f is None else None for t, f in zip(truth.text, truth.fault, strict=True)],
            strict=True,
        )
    )
    assert len(got) == both.img_tags
    assert [g[:3] for g in got] == [w[:3] for w in want]
    assert [g[3] for g in got] == [None if w[3] is None else clean(w[3]) for w in want]


def test_licenses_and_bases_are_present(both):
    truth = pq.read_table(both.truth_path).to_pandas()
    assert sum(both.pages_with_license.values()) > 0
    assert set(both.pages_with_license) <= {"cc-by", "cc-by-sa", "cc-by-nc", "cc0", "pdm"}
    assert both.pages_with_base > 0
    lic_pages = set(truth.page_url[truth.license.notna()])
    for warc in both.warc_files:
        for page_url, body in warc_pages(warc):
            soup = BeautifulSoup(body, "html.parser")
            has = soup.find(["a", "link"], rel="license") is not None
            if page_url in set(truth.page_url):
                assert has == (page_url in lic_pages)


def _digest_tree(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name not in ("_generate.json",)
    }


def test_deterministic_from_the_seed(tmp_path):
    a = generate(str(tmp_path / "a"), kind="both", files=2, pages_per_file=25, seed=5)
    generate(str(tmp_path / "b"), kind="both", files=2, pages_per_file=25, seed=5, workers=2)
    generate(str(tmp_path / "c"), kind="both", files=2, pages_per_file=25, seed=6)
    da, db, dc = _digest_tree(tmp_path / "a"), _digest_tree(tmp_path / "b"), _digest_tree(tmp_path / "c")
    assert da == db  # byte-identical, also when files are made in parallel
    assert set(da) != set(dc) or da != dc
    # a file depends only on (seed, crawl, index): the WAT-only run writes the same WAT bytes
    w = generate(str(tmp_path / "w"), kind="wat", files=2, pages_per_file=25, seed=5)
    assert [Path(p).read_bytes() for p in w.wat_files] == [Path(p).read_bytes() for p in a.wat_files]
    assert a.pairs_expected == w.pairs_expected


def test_shared_fraction_is_exact(tmp_path):
    a = generate(str(tmp_path / "a"), kind="wat", files=2, pages_per_file=80, seed=1, crawl="CC-MAIN-2024-22")
    b = generate(
        str(tmp_path / "b"),
        kind="wat",
        files=3,
        pages_per_file=50,
        seed=2,
        shared_pairs_from=str(tmp_path / "a"),
        shared_fraction=0.3,
    )
    ta = pq.read_table(a.truth_path).to_pandas()
    tb = pq.read_table(b.truth_path).to_pandas()
    pa_ = set(zip(ta.url[ta.fault.isna()], ta.text[ta.fault.isna()], strict=True))
    ok = tb[tb.fault.isna()]
    shared = 0
    expected = 0
    for _, grp in ok.groupby("file", sort=False):
        uniq = list(dict.fromkeys(zip(grp.url, grp.text, strict=True)))  # first-seen order
        shared_here = sum(1 for p in uniq if p in pa_)
        shared += shared_here
        expected += math.floor(0.3 * len(uniq))
        assert shared_here == math.floor(0.3 * len(uniq))
    assert shared == expected == b.shared_pairs
    assert b.unique_pairs_expected == len(set(zip(ok.url, ok.text, strict=True)))
    assert abs(shared / b.unique_pairs_expected - 0.3) <= 3 / b.unique_pairs_expected
    # the same again from the same seeds
    b2 = generate(
        str(tmp_path / "b2"),
        kind="wat",
        files=3,
        pages_per_file=50,
        seed=2,
        shared_pairs_from=a,
        shared_fraction=0.3,
    )
    assert [Path(p).read_bytes() for p in b2.wat_files] == [Path(p).read_bytes() for p in b.wat_files]
    # no sharing asked: nothing in common
    c = generate(str(tmp_path / "c"), kind="wat", files=1, pages_per_file=50, seed=2, shared_pairs_from=a)
    tc = pq.read_table(c.truth_path).to_pandas()
    assert not set(zip(tc.url[tc.fault.isna()], tc.text[tc.fault.isna()], strict=True)) & pa_
    with pytest.raises(ValueError, match="too few pairs"):
        generate(
            str(tmp_path / "d"),
            kind="wat",
            files=1,
            pages_per_file=400,
            seed=2,
            shared_pairs_from=a,
            shared_fraction=0.9,
        )


def test_paths_listing_and_layouts(tmp_path):
    res = generate(
        str(tmp_path / "cc"), kind="both", files=3, pages_per_file=5, seed=1, crawl="CC-MAIN-2023-14"
    )
    for listing, files in (("wat.paths.gz", res.wat_files), ("warc.paths.gz", res.warc_files)):
        rel = gzip.decompress((tmp_path / "cc" / listing).read_bytes()).decode().split()
        assert [str(tmp_path / "cc" / r) for r in rel] == files
        assert (tmp_path / "cc" / "crawl-data" / "CC-MAIN-2023-14" / listing).read_bytes() == (
            tmp_path / "cc" / listing
        ).read_bytes()
        for r in rel:
            parts = r.split("/")
            assert parts[:3] == ["crawl-data", "CC-MAIN-2023-14", "segments"] and parts[4] in ("wat", "warc")
            assert parts[-1].startswith("CC-MAIN-2023040") and parts[-1].endswith(
                (".warc.wat.gz",) if parts[4] == "wat" else (".warc.gz",)
            )
            assert f"-{rel.index(r):05d}-ip-" in parts[-1]
    flat = generate(str(tmp_path / "flat"), kind="wat", files=2, pages_per_file=5, seed=1, layout="flat")
    assert [Path(p).parent for p in flat.wat_files] == [tmp_path / "flat"] * 2
    assert gzip.decompress((tmp_path / "flat" / "wat.paths.gz").read_bytes()).decode().split() == [
        Path(p).name for p in flat.wat_files
    ]


def test_works_without_shared_data(tmp_path, monkeypatch):
    import crawlpairs.generate.vocab as vocab

    monkeypatch.setenv("CRAWLPAIRS_SHARED_DATA", str(tmp_path / "nothing-here"))
    monkeypatch.setattr(vocab, "_CAPTION_CACHE", {})
    assert vocab.find_captions(None) is None
    res = generate(str(tmp_path / "o"), kind="wat", files=1, pages_per_file=40, seed=1)
    truth = pq.read_table(res.truth_path).to_pandas()
    texts = set(truth.text[truth.fault.isna()])
    assert res.pairs_expected > 50
    assert min(len(t) for t in texts) >= 8  # clear of the 5-character limit, also in CJK
    assert any(any("\u3040" <= ch <= "\u9fff" for ch in t) for t in texts)  # CJK from the built-in list
    assert any(any("\u0400" <= ch <= "\u04ff" for ch in t) for t in texts)  # Cyrillic
    with pytest.raises(FileNotFoundError):
        generate(str(tmp_path / "p"), files=1, pages_per_file=1, captions_path=str(tmp_path / "missing"))


def test_uses_real_captions_when_given(tmp_path, shared_data):
    import pyarrow.parquet as pq_

    res = generate(
        str(tmp_path / "o"), kind="wat", files=1, pages_per_file=40, seed=1, captions_path=str(shared_data)
    )
    real = set(pq_.read_table(shared_data / "captions" / "test_10000.parquet").column("TEXT").to_pylist())
    truth = pq.read_table(res.truth_path).to_pandas()
    texts = truth.text[truth.fault.isna()]
    assert sum(t in real for t in texts) > 0.2 * len(texts)


def test_images_for_a_loopback_server(tmp_path):
    from PIL import Image

    server = ThreadingHTTPServer(
        ("127.0.0.1", 0), partial(SimpleHTTPRequestHandler, directory=str(tmp_path / "img"))
    )
    base = f"http://127.0.0.1:{server.server_address[1]}"
    res = generate(
        str(tmp_path / "o"),
        kind="wat",
        files=1,
        pages_per_file=30,
        seed=4,
        image_base_url=base,
        images_dir=str(tmp_path / "img"),
    )
    truth = pq.read_table(res.truth_path).to_pandas()
    ok = truth[truth.fault.isna()]
    assert all(u.startswith(base + "/img/") for u in ok.url)
    served = truth[truth.image_file.notna()]
    assert res.images_written == served.image_file.nunique() > 0.9 * ok.url.nunique()
    assert ok.image_file.isna().sum() > 0 or len(ok) < 50  # a few 404s on purpose
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        for url, rel in list(zip(served.url.fillna(served.lazy_url), served.image_file, strict=True))[:5]:
            assert url == f"{base}/{rel}"
            with urlopen(url, timeout=5) as resp:
                data = resp.read()
            assert len(data) > 5000
            Image.open(io.BytesIO(data)).verify()
    finally:
        server.shutdown()
        server.server_close()


def test_cli_stage(tmp_path):
    from crawlpairs.stage import main

    out = tmp_path / "cli"
    rc = main(
        GenerateStage,
        ["--output", str(out), "--kind", "wat", "--files", "2", "--pages-per-file", "10", "--seed", "1"],
    )
    assert rc == 0
    stats = json.loads((out / "_stats.json").read_text())
    assert stats["counts"]["files_written"] == 2 and stats["counts"]["pages"] == 20
    assert len(gzip.decompress((out / "wat.paths.gz").read_bytes()).decode().split()) == 2
    assert main(GenerateStage, ["--output", str(tmp_path / "x"), "--crawl", "CC-MAIN-24"]) == 2


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError):
        generate(str(tmp_path), kind="html")
    with pytest.raises(ValueError):
        generate(str(tmp_path), shared_fraction=0.5)
    with pytest.raises(ValueError):
        generate(str(tmp_path), crawl="CC-MAIN-2024-60")
    with pytest.raises(ValueError):
        generate(str(tmp_path), image_base_url="http://127.0.0.1:1")
    assert not os.listdir(tmp_path)


def test_noise_is_labelled_and_reversible(both):
    """`noise` says how an alt was dirtied; `caption` is the text before that (ftfy undoes mojibake)."""
    import ftfy

    truth = pq.read_table(both.truth_path).to_pandas()
    more = pq.read_table(
        generate(str(Path(both.out_dir) / "more"), kind="wat", files=1, pages_per_file=300, seed=9).truth_path
    ).to_pandas()
    t = pd.concat([truth, more])
    kinds = set(t.noise.dropna())
    assert kinds == {"entities", "mojibake", "control", "whitespace"}
    moj = t[t.noise == "mojibake"]
    fixed = sum(
        ftfy.fix_text(x, uncurl_quotes=False) == c for x, c in zip(moj.text, moj.caption, strict=True)
    )
    assert fixed == len(moj) > 0  # docs/generate.md: ftfy gives back the caption for those rows
    ent = t[t.noise == "entities"]
    assert all("&" in a for a in ent.alt) and all(
        x == clean(c) for x, c in zip(ent.text, ent.caption, strict=True)
    )
    ws = t[t.noise == "whitespace"]
    assert all(x == " ".join(c.split()) for x, c in zip(ws.text, ws.caption, strict=True))


def test_same_bytes_whatever_ran_before_in_the_process(tmp_path, monkeypatch, shared_data):
    """Per-process caches (captions, corpus, sites) never leak between captions sources."""
    first = generate(
        str(tmp_path / "1"), kind="wat", files=1, pages_per_file=30, seed=8, captions_path=str(shared_data)
    )
    monkeypatch.setenv("CRAWLPAIRS_SHARED_DATA", str(tmp_path / "nothing-here"))
    generate(str(tmp_path / "fallback"), kind="wat", files=1, pages_per_file=30, seed=8)
    again = generate(
        str(tmp_path / "2"), kind="wat", files=1, pages_per_file=30, seed=8, captions_path=str(shared_data)
    )
    assert Path(first.wat_files[0]).read_bytes() == Path(again.wat_files[0]).read_bytes()


# Pins the generator's output across refactors (computed with the single-module generate.py at
# e1f0623, before it became a package): the same arguments must keep giving the same bytes, or
# every benchmark and truth count made from a seed silently changes. The WARC's gzip bytes feed
# the WAT's Container fields, so a new deflate library (isal) also changes these: then check the
# inflated records are unchanged and re-pin deliberately, saying why in the commit.
PINNED = {
    "captions": (
        "ecba50dfb0b99272b247a8e84b81c6ffac89b904fc34e84f9da742ef22cbfdc4",  # WAT + WARC bytes
        "9406bf03cd041b0e20df8c8ea60ec207da0c71fef8ec946106e57ad89afac7a0",  # _truth.parquet rows
    ),
    "builtin": (  # no shared data: the built-in word list (package data) makes the captions
        "7d5c70d28e11c03eeb7ff3f43da733bf2860ae55fff6816a1a66b07a8ba896eb",
        "afe837837a4831ebb59be55bbf6decd71dd1f973af41b0215a211e1926440eea",
    ),
}


@pytest.mark.parametrize("source", sorted(PINNED))
def test_output_is_pinned_for_a_fixed_seed(tmp_path, monkeypatch, shared_data, source):
    kw: dict = {}
    if source == "captions":
        kw["captions_path"] = str(shared_data)
    else:
        monkeypatch.setenv("CRAWLPAIRS_SHARED_DATA", str(tmp_path / "nothing-here"))
    res = generate(
        str(tmp_path / "o"), kind="both", files=1, pages_per_file=12, seed=20240833, layout="flat", **kw
    )
    files = hashlib.sha256(b"".join(Path(p).read_bytes() for p in res.wat_files + res.warc_files))
    rows = pq.read_table(res.truth_path).to_pydict()  # rows, not Parquet bytes (pyarrow writes its version)
    truth = hashlib.sha256(json.dumps(rows, sort_keys=True).encode())
    assert (files.hexdigest(), truth.hexdigest()) == PINNED[source]


def test_word_lists_ship_as_package_data():
    """A non-editable install carries crawlpairs/generate/data/*.json (pyproject's package-data)."""
    import fnmatch
    import tomllib
    from importlib.resources import files

    import crawlpairs.generate

    setup = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "crawlpairs.generate" in setup["packages"]
    globs = setup["package-data"]["crawlpairs.generate"]
    shipped = sorted(
        p.name for p in files(crawlpairs.generate).joinpath("data").iterdir() if p.name.endswith(".json")
    )
    assert shipped == ["domains.json", "fallback_words.json", "web.json"]
    assert all(any(fnmatch.fnmatch(f"data/{n}", g) for g in globs) for n in shipped)
