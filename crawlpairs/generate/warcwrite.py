"""The WARC/WAT writer: builds one WARC file and the WAT describing it, record by record, in step.

Every record is its own gzip member, as Common Crawl writes them; the WAT's `Container` fields
(offset, deflate length, CRC, inflated length) are those of the WARC member just built, so a
WAT record locates its WARC record whether or not the WARC is kept.
"""

from __future__ import annotations

import base64
import hashlib
import random
import struct
import zlib
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import orjson

try:  # ISA-L's deflate is 3-5x faster than zlib at similar ratios; fall back if absent
    from isal import isal_zlib as _deflate_mod

    _DEFLATE_LEVEL = 2
except ImportError:  # pragma: no cover - isal is a core dependency
    _deflate_mod = zlib  # type: ignore[assignment]
    _DEFLATE_LEVEL = 3

from crawlpairs.generate.rand import ch, ri
from crawlpairs.generate.vocab import ISO3, LANG_NAMES

if TYPE_CHECKING:
    from crawlpairs.generate.pages import Site


def _b32sha1(data: bytes) -> str:
    return "sha1:" + base64.b32encode(hashlib.sha1(data).digest()).decode()


def _signed32(x: int) -> int:
    return x - (1 << 32) if x >= (1 << 31) else x


def gzip_member(data: bytes) -> tuple[bytes, int]:
    """One gzip member (10-byte header, mtime 0, fast deflate, 8-byte footer); returns (member, deflate length)."""
    c = _deflate_mod.compressobj(_DEFLATE_LEVEL, zlib.DEFLATED, -15)
    body = c.compress(data) + c.flush()
    crc = zlib.crc32(data)
    return (
        b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff" + body + struct.pack("<II", crc, len(data) & 0xFFFFFFFF),
        len(body),
    )


def _warc_record(headers: list[tuple[str, str]], block: bytes) -> tuple[bytes, bytes]:
    """(full record bytes, header bytes) with Content-Length added."""
    head = (
        "WARC/1.0\r\n"
        + "".join(f"{k}: {v}\r\n" for k, v in headers)
        + f"Content-Length: {len(block)}\r\n\r\n"
    )
    hb = head.encode("utf-8")
    return hb + block + b"\r\n\r\n", hb


def _uuid(rng: random.Random) -> str:
    h = f"{rng.getrandbits(128):032x}"
    return f"<urn:uuid:{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) % 4]}{h[17:20]}-{h[20:32]}>"


def _fmt_date(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def _http_date(dt: datetime) -> str:
    return dt.strftime("%a, %d %b %Y %H:%M:%S GMT")


class Writer:
    """Builds one WARC and its WAT in step (the WAT describes the WARC's records)."""

    def __init__(
        self,
        *,
        crawl: str,
        week: datetime,
        hostname: str,
        warc_name: str,
        wat_name: str,
        seed: int,
        want_warc: bool,
        want_wat: bool,
    ) -> None:
        """`seed` drives record ids and timings only (the page content has its own rng); `week` is
        the Monday of the crawl's ISO week. Both files' records are built even when only one is kept:
        the WAT's Container fields need the WARC's gzip members."""
        self.crawl = crawl
        self.week = week
        self.hostname = hostname
        self.warc_name = warc_name
        self.wat_name = wat_name
        self.want_warc = want_warc
        self.want_wat = want_wat
        self.warc_chunks: list[bytes] = []
        self.wat_chunks: list[bytes] = []
        self.warc_offset = 0
        self.wat_records = 0
        self.warc_records = 0
        self.rng = random.Random(seed)  # ids and timings, separate from content
        self.t = week + timedelta(days=ri(self.rng, 0, 5), seconds=ri(self.rng, 0, 86399))
        self.warcinfo_id = _uuid(self.rng)

    def _emit_warc(self, rec: bytes) -> dict[str, Any]:
        member, dlen = gzip_member(rec)
        container = {
            "Filename": self.warc_name,
            "Compressed": True,
            "Offset": str(self.warc_offset),
            "Gzip-Metadata": {
                "Deflate-Length": str(dlen),
                "Header-Length": "10",
                "Footer-Length": "8",
                "Inflated-CRC": str(_signed32(zlib.crc32(rec))),
                "Inflated-Length": str(len(rec)),
            },
        }
        self.warc_offset += len(member)
        self.warc_records += 1
        if self.want_warc:
            self.warc_chunks.append(member)
        return container

    def _emit_wat(self, target: str, date_s: str, refers_to: str, doc: dict[str, Any]) -> None:
        body = orjson.dumps(doc)
        digest = _b32sha1(body)
        headers = [
            ("WARC-Type", "metadata"),
            ("WARC-Target-URI", target),
            ("WARC-Date", date_s),
            ("WARC-Record-ID", _uuid(self.rng)),
            ("WARC-Refers-To", refers_to),
            ("Content-Type", "application/json"),
        ]
        head = "WARC/1.0\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers)
        head += f"Content-Length: {len(body)}\r\nWARC-Payload-Digest: {digest}\r\nWARC-Block-Digest: {digest}\r\n\r\n"
        rec = head.encode("utf-8") + body + b"\r\n\r\n"
        self.wat_records += 1
        if self.want_wat:
            self.wat_chunks.append(gzip_member(rec)[0])

    def _page_record(
        self,
        headers: list[tuple[str, str]],
        block: bytes,
        block_digest: str,
        actual_type: str,
        meta_key: str,
        meta: dict[str, Any],
    ) -> None:
        """Write one WARC record of a page and the WAT record describing it. The WAT's
        WARC-Header-Metadata repeats the WARC headers with Content-Length after WARC-Record-ID,
        as ia-web-commons writes it; Payload-Metadata holds `meta_key: meta` (the
        HTTP-Request/HTTP-Response/WARC-Metadata part) between the type and the block sizes."""
        rec, hb = _warc_record(headers, block)
        container = self._emit_warc(rec)
        header_meta = dict(headers[:3])  # WARC-Type, WARC-Date, WARC-Record-ID
        header_meta["Content-Length"] = str(len(block))
        header_meta.update(headers[3:])
        doc = {
            "Container": container,
            "Envelope": {
                "Payload-Metadata": {
                    "Actual-Content-Type": actual_type,
                    meta_key: meta,
                    "Actual-Content-Length": str(len(block)),
                    "Trailing-Slop-Length": "4",
                    "Block-Digest": block_digest,
                },
                "Format": "WARC/1.0",
                "WARC-Header-Length": str(len(hb)),
                "WARC-Header-Metadata": header_meta,
            },
        }
        self._emit_wat(
            header_meta["WARC-Target-URI"], header_meta["WARC-Date"], header_meta["WARC-Record-ID"], doc
        )

    def start(self) -> None:
        """The WARC's warcinfo, the WAT's own warcinfo and the WAT record describing the first."""
        info = (
            f"isPartOf: {self.crawl}\r\npublisher: Common Crawl\r\n"
            f"description: Wide crawl of the web for {self.week.strftime('%B %Y')}\r\n"
            f"operator: Common Crawl Admin (info@commoncrawl.org)\r\nhostname: {self.hostname}\r\n"
            "software: Apache Nutch 1.20 (modified, https://github.com/commoncrawl/nutch/)\r\n"
            "robots: checked via crawler-commons 1.5-SNAPSHOT (https://github.com/crawler-commons/crawler-commons)\r\n"
            "format: WARC File Format 1.1\r\n"
            "conformsTo: https://iipc.github.io/warc-specifications/specifications/warc-format/warc-1.1/\r\n"
        ).encode()
        date_s = _fmt_date(self.t)
        rec, hb = _warc_record(
            [
                ("WARC-Type", "warcinfo"),
                ("WARC-Date", date_s),
                ("WARC-Record-ID", self.warcinfo_id),
                ("Content-Type", "application/warc-fields"),
                ("WARC-Filename", self.warc_name),
            ],
            info,
        )
        container = self._emit_warc(rec)
        # the WAT's own warcinfo (carries isPartOf too, so a reader can get the crawl id from either)
        extracted = self.t + timedelta(days=6)
        winfo = (
            "Software-Info: ia-web-commons.1.1.10-SNAPSHOT-20240513074037\r\n"
            f"Extracted-Date: {_http_date(extracted)}\r\nip: 10.67.{ri(self.rng, 0, 255)}.{ri(self.rng, 1, 254)}\r\n"
            f"hostname: {self.hostname}\r\nformat: WARC File Format 1.0\r\n"
            "conformsTo: http://bibnum.bnf.fr/WARC/WARC_ISO_28500_version1_latestdraft.pdf\r\n"
            f"isPartOf: {self.crawl}\r\n"
        ).encode()
        wrec, _ = _warc_record(
            [
                ("WARC-Type", "warcinfo"),
                ("WARC-Date", _fmt_date(extracted)),
                ("WARC-Filename", self.wat_name),
                ("WARC-Record-ID", _uuid(self.rng)),
                ("Content-Type", "application/warc-fields"),
                ("WARC-Block-Digest", _b32sha1(winfo)),
            ],
            winfo,
        )
        self.wat_records += 1
        if self.want_wat:
            self.wat_chunks.append(gzip_member(wrec)[0])
        fields = {}
        for line in info.decode().split("\r\n"):
            if ": " in line:
                k, v = line.split(": ", 1)
                fields[k] = v
        doc = {
            "Container": container,
            "Envelope": {
                "Format": "WARC/1.0",
                "WARC-Header-Length": str(len(hb)),
                "Block-Digest": _b32sha1(info),
                "Actual-Content-Length": str(len(info)),
                "WARC-Header-Metadata": {
                    "WARC-Type": "warcinfo",
                    "WARC-Date": date_s,
                    "WARC-Record-ID": self.warcinfo_id,
                    "Content-Length": str(len(info)),
                    "Content-Type": "application/warc-fields",
                    "WARC-Filename": self.warc_name,
                },
                "Payload-Metadata": {
                    "Actual-Content-Type": "application/warc-fields",
                    "WARC-Info-Metadata": fields,
                    "Actual-Content-Length": str(len(info)),
                    "Trailing-Slop-Length": "4",
                },
            },
        }
        self._emit_wat(self.warc_name, date_s, self.warcinfo_id, doc)

    def add_page(self, page: dict[str, Any]) -> None:
        """A page's request, response and metadata records (FileGen.page's dict), each with its WAT record."""
        rng = self.rng
        site: Site = page["site"]
        url = page["url"]
        self.t += timedelta(seconds=ri(rng, 0, 40))
        date_s = _fmt_date(self.t)
        ip = f"{ri(rng, 1, 223)}.{ri(rng, 0, 255)}.{ri(rng, 0, 255)}.{ri(rng, 1, 254)}"
        parts = urlsplit(url)
        host = parts.netloc
        rpath = parts.path + (f"?{parts.query}" if parts.query else "")
        # request
        req_headers = {
            "User-Agent": "CCBot/2.0 (https://commoncrawl.org/faq/)",
            "Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
            "Accept-Language": "en-US,en;q=0.5",
            "Accept-Encoding": "br,gzip",
            "Host": host,
            "Connection": "Keep-Alive",
        }
        req_head = (
            f"GET {rpath} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in req_headers.items()) + "\r\n"
        )
        req_block = req_head.encode("utf-8")
        req_id, resp_id, meta_id = _uuid(rng), _uuid(rng), _uuid(rng)
        self._page_record(
            [
                ("WARC-Type", "request"),
                ("WARC-Date", date_s),
                ("WARC-Record-ID", req_id),
                ("Content-Type", "application/http; msgtype=request"),
                ("WARC-Warcinfo-ID", self.warcinfo_id),
                ("WARC-IP-Address", ip),
                ("WARC-Target-URI", url),
            ],
            req_block,
            _b32sha1(req_block),
            "application/http; msgtype=request",
            "HTTP-Request-Metadata",
            {
                "Request-Message": {"Method": "GET", "Path": rpath, "Version": "HTTP/1.1"},
                "Headers-Length": str(len(req_block) - 2),
                "Headers": req_headers,
                "Entity-Length": "0",
                "Entity-Digest": "sha1:3I42H3S6NNFQ2MSVX7XZKYAYSCX5QBYJ",  # sha1 of nothing
                "Entity-Trailing-Slop-Length": "0",
            },
        )
        # response
        body = page["html"]
        fetched = self.t - timedelta(seconds=ri(rng, 0, 5))
        resp_headers: dict[str, str] = {
            "Date": _http_date(fetched),
            "Content-Type": "text/html; charset=UTF-8",
        }
        resp_headers["Server"] = site.server
        if site.powered:
            resp_headers["X-Powered-By"] = site.powered
        if rng.random() < 0.6:
            resp_headers["Last-Modified"] = _http_date(fetched - timedelta(days=ri(rng, 1, 2000)))
        if rng.random() < 0.5:
            resp_headers["ETag"] = f'W/"{rng.getrandbits(48):x}-{rng.getrandbits(32):x}"'
        resp_headers["Vary"] = "Accept-Encoding"
        resp_headers["Cache-Control"] = ch(rng, ["max-age=0", "no-cache", "max-age=3600, public", "private"])
        if rng.random() < 0.2:
            resp_headers["Set-Cookie"] = f"PHPSESSID={rng.getrandbits(96):024x}; path=/; HttpOnly"
        resp_headers["X-Crawler-Content-Encoding"] = "gzip"
        resp_headers["Content-Length"] = str(len(body))
        resp_head = "HTTP/1.1 200 OK\r\n" + "".join(f"{k}: {v}\r\n" for k, v in resp_headers.items()) + "\r\n"
        rh = resp_head.encode("utf-8")
        block = rh + body
        payload_digest = _b32sha1(body)
        block_digest = _b32sha1(block)
        self._page_record(
            [
                ("WARC-Type", "response"),
                ("WARC-Date", date_s),
                ("WARC-Record-ID", resp_id),
                ("Content-Type", "application/http; msgtype=response"),
                ("WARC-Warcinfo-ID", self.warcinfo_id),
                ("WARC-Concurrent-To", req_id),
                ("WARC-IP-Address", ip),
                ("WARC-Target-URI", url),
                ("WARC-Payload-Digest", payload_digest),
                ("WARC-Block-Digest", block_digest),
                ("WARC-Identified-Payload-Type", "text/html"),
            ],
            block,
            block_digest,
            "application/http; msgtype=response",
            "HTTP-Response-Metadata",
            {
                "Response-Message": {"Status": "200", "Version": "HTTP/1.1", "Reason": "OK"},
                "Headers-Length": str(len(rh)),
                "Headers": resp_headers,
                "HTML-Metadata": page["html_meta"],
                "Entity-Length": str(len(body)),
                "Entity-Digest": payload_digest,
                "Entity-Trailing-Slop-Length": "0",
            },
        )
        # metadata
        lang = site.lang
        cld2 = (
            f'{{"reliable":true,"text-bytes":{len(body) // 3},"languages":[{{"code":"{lang}",'
            f'"code-iso-639-3":"{ISO3.get(lang, "eng")}","text-covered":0.{ri(rng, 70, 99):02d},'
            f'"score":{ri(rng, 300, 1900)}.0,"name":"{LANG_NAMES.get(lang, "ENGLISH")}"}}]}}'
        )
        fetch_ms = str(ri(rng, 20, 4000))
        mblock = f"fetchTimeMs: {fetch_ms}\r\ncharset-detected: UTF-8\r\nlanguages-cld2: {cld2}\r\n".encode()
        self._page_record(
            [
                ("WARC-Type", "metadata"),
                ("WARC-Date", date_s),
                ("WARC-Record-ID", meta_id),
                ("Content-Type", "application/warc-fields"),
                ("WARC-Warcinfo-ID", self.warcinfo_id),
                ("WARC-Concurrent-To", resp_id),
                ("WARC-Target-URI", url),
            ],
            mblock,
            _b32sha1(mblock),
            "application/metadata-fields",
            "WARC-Metadata-Metadata",
            {
                "Metadata-Records": [
                    {"Name": "fetchTimeMs", "Value": fetch_ms},
                    {"Name": "charset-detected", "Value": "UTF-8"},
                    {"Name": "languages-cld2", "Value": cld2},
                ]
            },
        )
