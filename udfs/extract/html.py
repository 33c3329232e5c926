"""WARC HTML responses -> `<img>` candidates, with what WAT loses.

Parsed with selectolax's lexbor backend (a real HTML5 parser, ~10x faster than bs4).
Beyond `src` + `alt` this takes:
- `srcset`: the largest candidate (by `w`, else `x` descriptor) replaces `src`: the
  same picture, at the resolution worth downloading for training;
- lazy loading: when `src` is missing or a placeholder (a `data:` URI, an empty
  value, a blank/spacer/1x1/pixel/placeholder/lazy image name), the first of
  `data-srcset`, `data-src`, `data-lazy-src`, `data-original`, ... that is set;
- `<base href>` as the resolution base;
- text fallbacks when `alt` is missing or empty, in the configured order: the `title`
  attribute, and the `<figcaption>` of the enclosing `<figure>` (both are text a human
  wrote about this image); `text_source` says which one was used.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence
from typing import NamedTuple

from selectolax.lexbor import LexborHTMLParser

from crawlpairs.udfs.urls import clean_href, resolve

LAZY_ATTRS = (
    "data-srcset",
    "data-lazy-srcset",
    "data-src",
    "data-lazy-src",
    "data-original",
    "data-lazy",
    "data-url",
    "data-hi-res-src",
    "data-full-src",
    "data-echo",
    "lazy-src",
)
_PLACEHOLDER_NAME = re.compile(
    r"(?:^|[/_.-])(?:blank|spacer|pixel|1x1|transparent|clear|empty|placeholder|lazy|loading|grey|gray)"
    r"[^/]*\.(?:gif|png|svg|jpe?g|webp)$",
    re.IGNORECASE,
)
_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_:.-]+)""", re.IGNORECASE)


class HtmlImage(NamedTuple):
    url: str  # raw attribute value (resolved by the caller)
    texts: list[tuple[str, str]]  # (raw text, text_source) in priority order; source: alt|title|figcaption
    width: int | None
    height: int | None


class HtmlPage(NamedTuple):
    base: str
    images: list[HtmlImage]
    license_links: list[tuple[str, str | None]]  # (absolute url, rel)


_CHUNK_LINE = re.compile(rb"[0-9a-fA-F]{1,8}[ \t;]*[^\r\n]*\r?\n")


def dechunk(body: bytes) -> bytes:
    """Undo HTTP chunked transfer coding if `body` really is chunked (else return it as is)."""
    out, pos = [], 0
    while True:
        m = _CHUNK_LINE.match(body, pos)
        if m is None:
            return body if not out else b"".join(out)
        size = int(m.group(0).split(b";")[0].strip(), 16)
        start = m.end()
        if size == 0:
            return b"".join(out)
        out.append(body[start : start + size])
        pos = start + size
        if body[pos : pos + 2] == b"\r\n":
            pos += 2
        elif body[pos : pos + 1] == b"\n":
            pos += 1


def decode_body(body: bytes, transfer_encoding: str | None, content_encoding: str | None, limit: int) -> bytes:
    """HTTP body as the server meant it, trusting headers only when the bytes agree.

    Common Crawl keeps `Content-Encoding: gzip` on bodies it already decoded, so a
    header alone proves nothing: gzip is undone only when the gzip magic is there,
    and a failure leaves the body as it was (FastWARC's own decoding aborts the stream).
    """
    if transfer_encoding and "chunked" in transfer_encoding.lower():
        body = dechunk(body)
    if content_encoding:
        ce = content_encoding.lower()
        try:
            if ("gzip" in ce and body[:2] == b"\x1f\x8b") or "deflate" in ce:
                d = zlib.decompressobj(47 if "gzip" in ce else 15)
                body = d.decompress(body, limit)
            elif "br" in ce:
                import brotli  # optional; only wget-style WARCs keep brotli bodies

                body = brotli.decompress(body)[:limit]
        except Exception:  # noqa: BLE001 - not really encoded, or damaged: parse what we have
            pass
    return body


def decode_html(body: bytes, http_charset: str | None) -> str:
    """Text of an HTML body: HTTP charset, else `<meta charset>`, else UTF-8, else cp1252."""
    candidates = []
    if http_charset:
        candidates.append(http_charset.strip().strip("\"'"))
    m = _META_CHARSET.search(body, 0, 4096)
    if m:
        candidates.append(m.group(1).decode("ascii", "replace"))
    candidates.append("utf-8")
    for enc in candidates:
        try:
            return body.decode(enc)
        except (LookupError, UnicodeDecodeError):
            continue
    return body.decode("cp1252", "replace")


def is_placeholder(src: str) -> bool:
    """True if `src` is not the real picture (lazy-loading placeholder or nothing)."""
    s = src.strip()
    if not s or s in ("#", "about:blank"):
        return True
    if s[:5].lower() == "data:":
        return True
    return bool(_PLACEHOLDER_NAME.search(s.split("?", 1)[0]))


def largest_srcset(srcset: str) -> str | None:
    """URL of the largest candidate of a `srcset` (by width, else density); None if empty."""
    best, best_key = None, (-1, -1.0)
    for part in _split_srcset(srcset):
        bits = part.split()
        if not bits:
            continue
        url, key = bits[0], (0, 1.0)
        for d in bits[1:]:
            d = d.lower()
            try:
                if d.endswith("w"):
                    key = (1, float(d[:-1]))
                elif d.endswith("x"):
                    key = (0, float(d[:-1]))
            except ValueError:
                continue
        if key > best_key:
            best, best_key = url, key
    return best


def _split_srcset(srcset: str) -> list[str]:
    # Candidates are comma-separated, but a URL may itself contain commas (not followed
    # by whitespace in practice): split on ", " / ",\n" and on commas that follow a descriptor.
    return [p for p in re.split(r",\s+|(?<=[0-9][wx]),", srcset.strip()) if p.strip()]


def _dim(value: str | None) -> int | None:
    if value:
        v = value.strip().lower().removesuffix("px")
        if v.isdigit() and len(v) < 7:
            return int(v)
    return None


def _may_clean_to_empty(alt: str) -> bool:
    """True unless `alt` plainly has a letter or digit that cleanup cannot remove."""
    return "&" in alt or not any(c.isalnum() for c in alt[:64])


def _figcaption(node) -> str | None:
    parent = node.parent
    for _ in range(6):
        if parent is None:
            return None
        if parent.tag == "figure":
            cap = parent.css_first("figcaption")
            return cap.text(separator=" ") if cap is not None else None
        if parent.tag in ("body", "html"):
            return None
        parent = parent.parent
    return None


def parse_html(html: str, page_url: str, fallbacks: Sequence[str] = ("title", "figcaption")) -> HtmlPage:
    """All `<img>` candidates of a page; text is raw (cleaned by the caller)."""
    tree = LexborHTMLParser(html)
    base = page_url
    bnode = tree.css_first("base[href]")
    if bnode is not None:
        href = bnode.attributes.get("href")
        if href and clean_href(href):
            resolved = resolve(page_url, href)
            if resolved[:4].lower() == "http":
                base = resolved
    images: list[HtmlImage] = []
    for node in tree.css("img"):
        attrs = node.attributes
        src = attrs.get("src") or ""
        url = None
        srcset = attrs.get("srcset")
        if srcset:
            url = largest_srcset(srcset)
        if not url and is_placeholder(src):
            for name in LAZY_ATTRS:
                v = attrs.get(name)
                if v and v.strip():
                    url = largest_srcset(v) if name.endswith("srcset") else v
                    if url:
                        break
        if not url:
            url = src
        if not url or not url.strip():
            url = src  # nothing better: the filters will say why it is dropped
        alt = attrs.get("alt")
        texts = [(alt, "alt")] if alt and not alt.isspace() else []
        if fallbacks and (not texts or _may_clean_to_empty(alt)):
            for fb in fallbacks:
                if fb == "title":
                    t = attrs.get("title")
                elif fb == "figcaption":
                    t = _figcaption(node)
                else:
                    continue
                if t and not t.isspace():
                    texts.append((t, fb))
        images.append(HtmlImage(url, texts, _dim(attrs.get("width")), _dim(attrs.get("height"))))
    lic: list[tuple[str, str | None]] = []
    for node in tree.css('a[href*="creativecommons.org"], link[href*="creativecommons.org"]'):
        href = node.attributes.get("href") or ""
        lic.append((resolve(base, href), node.attributes.get("rel")))
    return HtmlPage(base, images, lic)
