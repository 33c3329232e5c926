"""A benchmark WAT built from REAL HTML pages, in Common Crawl's WAT layout.

`crawlpairs.generate` writes statistically realistic pages, but its text is drawn word by
word from a vocabulary, so its WAT compresses about 2x where Common Crawl's compresses
about 6x: per compressed MB it holds a third of the JSON a real WAT holds, which makes
"MB/s of gzipped input" and the parse-everything floor look unlike production. This
writer takes the real HTML responses of the shared WARC files (archive.org 2008, Common
Crawl 2014 and 2020, a 2024 wget crawl), extracts their links the way ia-web-commons does
(Head: Title/Metas/Link/Scripts/Base; Links: A@/href, IMG@/src, FORM@/action, ...) and
writes, per page, the request / response / metadata record triplet with one gzip member
per record. Pages repeat (with distinct page URLs) to reach the requested size.
"""

from __future__ import annotations

import hashlib
import zlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
from fastwarc.warc import ArchiveIterator, WarcRecordType
from selectolax.lexbor import LexborHTMLParser

from crawlpairs.udfs.extract.html import decode_body, decode_html

SOURCES = (
    "warc/aut-example.warc.gz",
    "warc/dolma-sample-0000.warc.gz",
    "warc/resiliparse-CC-MAIN-2020-34.warc.gz",
    "warc/CC-MAIN-20140820021334-00006-ip-10-180-136-8.ec2.internal.warc.gz",
    "warc/resiliparse-clipped.warc.gz",
)


def _attrs(node, keys: tuple[str, ...]) -> dict[str, str]:
    a = node.attributes
    return {k: a[k] for k in keys if a.get(k)}


def html_metadata(html: str) -> dict:
    """Head + Links as ia-web-commons' WAT extractor records them (keys only when present)."""
    tree = LexborHTMLParser(html)
    head: dict = {}
    t = tree.css_first("title")
    if t is not None:
        head["Title"] = t.text(strip=True)
    metas = [dict((k, v) for k, v in m.attributes.items() if v) for m in tree.css("meta")]
    if metas:
        head["Metas"] = metas
    links = [{"path": "LINK@/href", "url": n.attributes["href"], **_attrs(n, ("rel", "type"))}
             for n in tree.css("link[href]")]
    if links:
        head["Link"] = links
    scripts = [{"path": "SCRIPT@/src", "url": n.attributes["src"], **_attrs(n, ("type",))}
               for n in tree.css("script[src]")]
    if scripts:
        head["Scripts"] = scripts
    b = tree.css_first("base[href]")
    if b is not None:
        head["Base"] = b.attributes["href"]
    out = []
    for n in tree.css("a[href], img[src], form[action], iframe[src], area[href], embed[src]"):
        tag = n.tag.upper()
        if tag == "IMG":
            out.append({"path": "IMG@/src", "url": n.attributes["src"], **_attrs(n, ("alt", "title"))})
        elif tag in ("A", "AREA"):
            d = {"path": f"{tag}@/href", "url": n.attributes["href"]}
            text = n.text(strip=True)
            if text:
                d["text"] = text[:500]
            d.update(_attrs(n, ("title", "rel", "target")))
            out.append(d)
        elif tag == "FORM":
            out.append({"path": "FORM@/action", "url": n.attributes["action"], **_attrs(n, ("method",))})
        else:
            out.append({"path": f"{tag}@/src", "url": n.attributes["src"]})
    md: dict = {"Head": head}
    if out:
        md["Links"] = out
    return md


def load_pages(shared: Path) -> list[dict]:
    """(url, http headers, status, html metadata) of every HTML response in the shared WARCs."""
    pages = []
    for rel in SOURCES:
        with open(shared / rel, "rb") as f:
            for rec in ArchiveIterator(f, record_types=WarcRecordType.response, quirks_mode=True):
                if not rec.is_http or "html" not in (rec.http_content_type or ""):
                    continue
                hh = rec.http_headers
                body = decode_body(rec.reader.read(), hh.get("Transfer-Encoding"), hh.get("Content-Encoding"),
                                   10_000_000)
                if not body:
                    continue
                md = html_metadata(decode_html(body, rec.http_charset))
                pages.append({
                    "url": (rec.headers.get("WARC-Target-URI") or "").strip("<>"),
                    "headers": dict(hh.items()),
                    "status": str(hh.status_code or 200),
                    "length": len(body),
                    "md": md,
                })
    return pages


_WORDS = ("photo", "image", "view", "detail", "picture", "foto", "bild", "new", "old", "large", "small", "home")


def _vary_texts(md: dict, k: int) -> dict:
    """The page's HTML metadata with every alt/title made distinct per copy.

    Pages repeat to fill a file; without this each caption would appear ~50 times per file
    and per-batch work that runs once per distinct text (language ID) would look free.
    Real captions repeat far less. A word and the copy number are appended (keeps the
    language, changes the text); texts under 5 characters are left alone."""
    if k == 0:
        return md
    links = []
    for link in md.get("Links", ()):
        if link["path"] == "IMG@/src" and ("alt" in link or "title" in link):
            link = dict(link)
            for key in ("alt", "title"):
                v = link.get(key)
                if v and len(v.strip()) >= 5:  # short ones stay short (and filtered)
                    link[key] = f"{v} {_WORDS[k % len(_WORDS)]} {k}"
        links.append(link)
    return dict(md, Links=links)


def _member(data: bytes) -> bytes:
    c = zlib.compressobj(6, zlib.DEFLATED, 31)  # gzip, default level: as Common Crawl ships
    return c.compress(data) + c.flush()


def _record(rtype: str, target: str, date: str, doc: dict) -> bytes:
    body = orjson.dumps(doc)
    rid = hashlib.sha1(body).hexdigest()
    head = (f"WARC/1.0\r\nWARC-Type: metadata\r\nWARC-Target-URI: {target}\r\nWARC-Date: {date}\r\n"
            f"WARC-Record-ID: <urn:uuid:{rid[:8]}-{rid[8:12]}-{rid[12:16]}-{rid[16:20]}-{rid[20:32]}>\r\n"
            f"WARC-Refers-To: <urn:uuid:{rid[32:40]}-0000-0000-0000-000000000000>\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    return _member(head + body + b"\r\n\r\n")


def write_wat(path: Path, pages: list[dict], n_pages: int, index: int) -> int:
    """One WAT of `n_pages` pages (cycling through `pages`); returns its size in bytes."""
    warc_name = f"CC-MAIN-20240812000000-{index:05d}-bench.warc.gz"
    t0 = datetime(2024, 8, 12, tzinfo=UTC)
    with open(path, "wb") as out:
        info = (b"Software-Info: bench/extract/realwat.py\r\nExtracted-Date: Mon, 12 Aug 2024 00:00:00 GMT\r\n"
                b"isPartOf: CC-MAIN-2024-33\r\n\r\n")
        out.write(_member(b"WARC/1.0\r\nWARC-Type: warcinfo\r\nWARC-Date: 2024-08-12T00:00:00Z\r\n"
                          b"WARC-Filename: " + warc_name.encode() + b"\r\nContent-Type: application/warc-fields\r\n"
                          b"Content-Length: " + str(len(info)).encode() + b"\r\n\r\n" + info + b"\r\n\r\n"))
        offset = 0
        for k in range(n_pages):
            p = pages[(k + index * 7919) % len(pages)]
            url = p["url"] + ("&" if "?" in p["url"] else "?") + f"cpb={index}-{k}"
            date = (t0 + timedelta(seconds=k * 3)).strftime("%Y-%m-%dT%H:%M:%SZ")
            host = url.split("/")[2] if url.count("/") >= 2 else ""
            container = {"Filename": warc_name, "Compressed": True, "Offset": str(offset),
                         "Gzip-Metadata": {"Deflate-Length": "512", "Header-Length": "10", "Footer-Length": "8",
                                           "Inflated-CRC": "-1", "Inflated-Length": "1024"}}
            whm = {"WARC-Type": "request", "WARC-Date": date, "Content-Length": "300",
                   "WARC-Target-URI": url, "Content-Type": "application/http; msgtype=request",
                   "WARC-Warcinfo-ID": "<urn:uuid:00000000-0000-0000-0000-000000000000>"}
            req = {"Container": container, "Envelope": {
                "Format": "WARC", "WARC-Header-Length": "350", "Actual-Content-Length": "300",
                "Block-Digest": "sha1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "WARC-Header-Metadata": whm,
                "Payload-Metadata": {"Actual-Content-Type": "application/http; msgtype=request",
                                     "HTTP-Request-Metadata": {
                                         "Request-Message": {"Method": "GET", "Path": "/" + url.split("/", 3)[-1],
                                                             "Version": "HTTP/1.1"},
                                         "Headers-Length": "300", "Entity-Length": "0",
                                         "Headers": {"Host": host, "User-Agent": "CCBot/2.0 (https://commoncrawl.org/faq/)",
                                                     "Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
                                                     "Accept-Language": "en-US,en;q=0.5", "Accept-Encoding": "br,gzip"}}}}}
            out.write(_record("request", url, date, req))
            md = _vary_texts(p["md"], index * n_pages + k)
            offset += 700
            resp = {"Container": dict(container, Offset=str(offset)), "Envelope": {
                "Format": "WARC", "WARC-Header-Length": "500", "Actual-Content-Length": str(p["length"]),
                "Block-Digest": "sha1:BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB",
                "WARC-Header-Metadata": dict(whm, **{"WARC-Type": "response",
                                                     "Content-Type": "application/http; msgtype=response",
                                                     "Content-Length": str(p["length"])}),
                "Payload-Metadata": {"Actual-Content-Type": "application/http; msgtype=response",
                                     "HTTP-Response-Metadata": {
                                         "Response-Message": {"Status": p["status"], "Version": "HTTP/1.1",
                                                              "Reason": "OK"},
                                         "Headers-Length": "400", "Headers": p["headers"],
                                         "Entity-Length": str(p["length"]), "Entity-Trailing-Slop-Bytes": "0",
                                         "HTML-Metadata": md}}}}
            out.write(_record("response", url, date, resp))
            offset += 5000
            meta = {"Container": dict(container, Offset=str(offset)), "Envelope": {
                "Format": "WARC", "WARC-Header-Length": "400", "Actual-Content-Length": "200",
                "Block-Digest": "sha1:CCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCC",
                "WARC-Header-Metadata": dict(whm, **{"WARC-Type": "metadata", "Content-Type": "application/warc-fields",
                                                     "Content-Length": "200"}),
                "Payload-Metadata": {"Actual-Content-Type": "application/metadata-fields",
                                     "WARC-Metadata-Metadata": {"Metadata-Records": [
                                         {"Name": "fetchTimeMs", "Value": str(100 + k % 900)},
                                         {"Name": "charset-detected", "Value": "UTF-8"},
                                         {"Name": "languages-cld2",
                                          "Value": '{"reliable":true,"text-bytes":4000,"languages":[{"code":"en","code-iso-639-3":"eng","text-covered":0.98,"score":950.0,"name":"ENGLISH"}]}'}]}}}}
            out.write(_record("metadata", url, date, meta))
            offset += 600
    return path.stat().st_size


def build(out_dir: Path, shared: Path, files: int, pages_per_file: int) -> list[str]:
    out_dir.mkdir(parents=True, exist_ok=True)
    pages = load_pages(shared)
    paths = []
    for i in range(files):
        p = out_dir / f"real-{i:02d}-{pages_per_file}.warc.wat.gz"
        if not p.exists():
            tmp = p.with_suffix(".tmp")
            write_wat(tmp, pages, pages_per_file, i)
            tmp.rename(p)
        paths.append(str(p))
    return paths
