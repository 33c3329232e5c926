"""The pieces: text cleanup, URL handling, license normalisation, language ID."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from crawlpairs.udfs.extract import langid
from crawlpairs.udfs.extract.candidates import crawl_from_path, make_uid
from crawlpairs.udfs.extract.license import detect_license, normalise_license_url
from crawlpairs.udfs.extract.text import clean_text
from crawlpairs.udfs.urls import extension_of, host_of, resolve


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("  A  dog\n\trunning ", "A dog running"),
        ("Fish &amp; chips &lt;3", "Fish & chips <3"),
        ("doesnâ€™t", "doesn’t"),
        ("zero\u200bwidth\x00nul\x7fdel", "zerowidth nul del"),
        ("\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645", "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645"),  # ZWNJ kept
        ("“curly” quotes kept", "“curly” quotes kept"),
        ("\u00a0nbsp\u3000ideographic space\u00a0", "nbsp ideographic space"),
    ],
)
def test_clean_text(raw, clean):
    assert clean_text(raw) == clean


@pytest.mark.parametrize(
    ("base", "href", "url"),
    [
        ("http://a.com/x/y.html", "z.jpg", "http://a.com/x/z.jpg"),
        ("http://a.com/x/y.html", "/z.jpg", "http://a.com/z.jpg"),
        ("https://a.com/x/", "//b.com/z.jpg", "https://b.com/z.jpg"),
        ("http://a.com/x/", " \n z.jpg\t", "http://a.com/x/z.jpg"),
        ("http://a.com/x/", "img\\z.jpg", "http://a.com/x/img/z.jpg"),
        ("http://a.com/x/", "HTTP://B.com/Z.JPG", "HTTP://B.com/Z.JPG"),
        ("http://a.com/x/", "data:image/png;base64,AA", "data:image/png;base64,AA"),
        ("http://a.com/x/", "javascript:void(0)", "javascript:void(0)"),
        ("http://a.com/x/", "z.jpg#frag", "http://a.com/x/z.jpg"),
        ("http://a.com/x/", "", ""),
    ],
)
def test_resolve(base, href, url):
    assert resolve(base, href) == url


def test_host_and_extension():
    assert host_of("http://user:pw@WWW.Example.COM.:8080/a.jpg") == "www.example.com"
    assert host_of("https://[::1]:8443/x") == "[::1]"
    assert host_of("http://a.com?x=1") == "a.com"
    assert extension_of("http://a.com/b/c.JPG?x=1.gif#y.svg") == "jpg"
    assert extension_of("http://a.com/b.c/d") == ""
    assert extension_of("http://a.gif") == ""


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("https://creativecommons.org/licenses/by/4.0/", "cc-by"),
        ("http://creativecommons.org/licenses/by-sa/3.0/deed.de", "cc-by-sa"),
        ("https://creativecommons.org/licenses/by-nd/2.0", "cc-by-nd"),
        ("https://creativecommons.org/licenses/by-nc/4.0/", "cc-by-nc"),
        ("https://creativecommons.org/licenses/by-nc-sa/4.0/legalcode", "cc-by-nc-sa"),
        ("https://creativecommons.org/licenses/by-nc-nd/3.0/us/", "cc-by-nc-nd"),
        ("http://creativecommons.org/licenses/by-nd-nc/1.0/", "cc-by-nc-nd"),
        ("https://creativecommons.org/publicdomain/zero/1.0/", "cc0"),
        ("https://creativecommons.org/publicdomain/mark/1.0/", "pdm"),
        ("https://CreativeCommons.org/Licenses/BY/4.0/", "cc-by"),
        ("https://creativecommons.org/about/", None),
        ("https://creativecommons.org/images/public/somerights20.png", None),
        ("https://example.com/licenses/by/4.0/", None),
        ("https://creativecommons.org.evil.com/licenses/by/4.0/", None),
    ],
)
def test_normalise_license_url(url, code):
    assert normalise_license_url(url) == code


def test_rel_license_wins_over_plain_link():
    links = [
        ("https://creativecommons.org/licenses/by-nc/4.0/", None),
        ("https://example.com/terms", "license"),
        ("https://creativecommons.org/publicdomain/zero/1.0/", "nofollow license"),
    ]
    assert detect_license(links) == ("cc0", "https://creativecommons.org/publicdomain/zero/1.0/")
    assert detect_license(links[:2]) == ("cc-by-nc", "https://creativecommons.org/licenses/by-nc/4.0/")
    assert detect_license([("https://example.com/terms", "license")]) == (None, None)


def test_uid_is_stable():
    # sha256("http://a.com/x.jpg" TAB "A cat")[:16 bytes], written out: it must never change
    assert make_uid("http://a.com/x.jpg", "A cat") == "fbbccb6b34a14ef05a454943355a2869"
    assert make_uid("http://a.com/x.jpg", "A cat ") != make_uid("http://a.com/x.jpg", "A cat")


def test_crawl_from_path():
    assert crawl_from_path("s3://commoncrawl/crawl-data/CC-MAIN-2024-33/segments/x.wat.gz") == "CC-MAIN-2024-33"
    assert crawl_from_path("CC-MAIN-20140820021334-00006-ip-10-180-136-8.ec2.internal.warc.wat") is None


def test_langid_on_real_captions(data_dir):
    uri = str(data_dir / "models/lid.176.ftz")
    table = pq.read_table(data_dir / "captions/test_10000.parquet", columns=["TEXT"])
    texts = [clean_text(t) for t in table.column("TEXT").to_pylist()[:2000] if t]
    langs, scores = langid.predict(texts, uri)
    assert len(langs) == len(texts) == len(scores) and scores.dtype.name == "float32"
    assert float(scores.min()) >= 0.0 and float(scores.max()) <= 1.0
    # LAION's alt text is mostly English: most captions come out as en
    assert langs.count("en") > 0.5 * len(texts)
    fixed = ["A man riding a red bicycle down the street", "Ein Hund spielt im Garten mit einem Ball",
             "Une maison au bord de la mer", "Una casa en la playa con palmeras", ""]
    langs, scores = langid.predict(fixed, uri)
    assert langs == ["en", "de", "fr", "es", None]
    assert scores[4] == 0.0
    assert langid.load_model(uri) is langid.load_model(uri)  # loaded once per process


@pytest.mark.integration
def test_lid_model_from_s3_on_the_configured_endpoint(data_dir, lid_model, cfg, s3_server, tmp_path, monkeypatch):
    """An s3:// `--lid-model` is fetched from `storage.s3_endpoint` (SeaweedFS here), not AWS."""
    import io

    import pyarrow as pa

    from crawlpairs import storage
    from crawlpairs.stats import Stats
    from crawlpairs.udfs.extract.candidates import CANDIDATE_SCHEMA, extract_stream

    monkeypatch.setenv("CRAWLPAIRS_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    uri = s3_server.uri("models", f"{tmp_path.name}-lid.176.ftz")  # a fresh key: not in langid's cache
    storage.write_bytes(uri, Path(lid_model).read_bytes(), s3_server.storage)
    wat = data_dir / "wat/CC-MAIN-20140820021334-00006-ip-10-180-136-8.ec2.internal.warc.wat"

    def languages(model: str) -> tuple[list, Stats]:
        cfg.lid_model, stats = model, Stats()
        batches = extract_stream(io.BytesIO(wat.read_bytes()), str(wat), cfg, stats, storage=s3_server.storage)
        return pa.Table.from_batches(list(batches), schema=CANDIDATE_SCHEMA).column("language").to_pylist(), stats

    local, _ = languages(lid_model)
    remote, stats = languages(uri)
    assert remote == local and len(local) == 2 and local[0] == "en"
    assert not stats.errors
    assert langid.load_model(uri) is langid.load_model(uri, s3_server.storage)  # once per process


def test_shortcuts_lose_nothing_on_real_captions(data_dir, lid_model):
    """What docs/extract.md claims for the 10,000 real captions: ftfy only on suspected
    mojibake gives what ftfy on every non-ASCII text gives, and language ID on the first
    `MAX_CHARS` characters gives the labels of the whole text."""
    import html

    from crawlpairs.udfs.extract import text as textmod

    def ftfy_always(raw: str) -> str:
        t = html.unescape(raw) if "&" in raw else raw
        if not t.isascii():
            t = textmod._INVISIBLE.sub("", textmod._CONTROL.sub(" ", textmod.ftfy.fix_text(t, textmod._FTFY)))
        return " ".join(textmod._CONTROL.sub(" ", t).split())

    raw = [t for t in pq.read_table(data_dir / "captions/test_10000.parquet", columns=["TEXT"]).column("TEXT")
           .to_pylist() if t]
    assert len(raw) > 9000
    non_ascii = [t for t in raw if not t.isascii()]
    assert len(non_ascii) > 300
    assert [clean_text(t) for t in non_ascii] == [ftfy_always(t) for t in non_ascii]
    texts = [clean_text(t) for t in raw]
    assert sum(len(t) > langid.MAX_CHARS for t in texts) > 20  # the cut happens
    model = langid.load_model(lid_model)
    langs, _ = langid.predict(texts, lid_model)
    assert langs == [model.predict(t, k=1)[0][0][9:] if t else None for t in texts]
