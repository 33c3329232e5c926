"""WAT metadata records -> the page's `<img>` links, base URL and license links.

Common Crawl's WAT JSON layout: `Envelope.Payload-Metadata.HTTP-Response-Metadata.
HTML-Metadata` holds `Links` (each `{"path": "IMG@/src", "url": ..., "alt": ...}`)
and `Head` (`Base`, `Link`, `Metas`). URLs in WAT are raw attribute text: HTML
character references are still in them (`?a=1&amp;b=2`) and are decoded here.
Two of three WAT records (requests, metadata) never hold `IMG@` links; callers skip
them with a byte search before handing the payload to `parse_page`.
"""

from __future__ import annotations

import html
import re
from typing import Any, NamedTuple

import orjson

_CHARREF = re.compile(r"&(?:#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});")


def decode_attr_url(url: str) -> str:
    """Decode character references the way an HTML parser does for a URL attribute.

    Only references ending in `;` are decoded: in attribute values the spec leaves
    `&copy=1` (legacy reference without `;` before `=`/alnum) alone, unlike `html.unescape`.
    """
    if "&" in url and ";" in url:
        return _CHARREF.sub(lambda m: html.unescape(m.group(0)), url)
    return url


class WatLayoutError(ValueError):
    """Valid JSON, but not in Common Crawl's WAT layout (e.g. a link that is not an object)."""


class WatPage(NamedTuple):
    page_url: str | None
    base: str | None  # Head.Base as written (resolved by the caller)
    images: list[tuple[str, list[tuple[str, str]]]]  # (raw url, [(raw text, text_source), ...])
    license_links: list[tuple[str, str | None]]  # (raw url, rel) of creativecommons.org links


def _texts(link: dict, with_title: bool) -> list[tuple[str, str]]:
    """An IMG link's candidate texts in priority order: non-blank `alt`, then `title`."""
    alt = link.get("alt")
    cands = [(alt, "alt")] if alt.__class__ is str and alt and not alt.isspace() else []
    if with_title:
        title = link.get("title")
        if title.__class__ is str and title and not title.isspace():
            cands.append((title, "title"))
    return cands


def parse_page(payload: bytes, with_title: bool = False) -> WatPage | None:
    """Images and license links of one WAT metadata record; None if it describes no HTML page.

    Raises orjson.JSONDecodeError (a ValueError) or WatLayoutError for
    broken records: the caller counts them. The hot loop trusts the layout and lets a
    wrong shape surface as an exception instead of checking types on every link.
    """
    doc = orjson.loads(payload)
    try:
        env = doc["Envelope"]
        meta = env["Payload-Metadata"]["HTTP-Response-Metadata"]["HTML-Metadata"]
    except (KeyError, TypeError):
        return None
    try:
        page_url = env.get("WARC-Header-Metadata", {}).get("WARC-Target-URI")
        head = meta.get("Head") or {}
        base = head.get("Base")
        images: list[tuple[str, list[tuple[str, str]]]] = []
        for link in meta.get("Links") or ():
            if link.get("path") != "IMG@/src":
                continue
            url = link.get("url")
            if url.__class__ is not str:
                continue
            images.append((url, _texts(link, with_title)))
        lic: list[tuple[str, str | None]] = []
        if b"creativecommons.org" in payload:
            _cc_links(head.get("Link") or (), lic)
            _cc_links(meta.get("Links") or (), lic)
    except (AttributeError, TypeError) as exc:
        raise WatLayoutError(f"unexpected WAT layout: {exc}") from None
    return WatPage(
        page_url if page_url.__class__ is str else None,
        base if base.__class__ is str and base.strip() else None,
        images,
        lic,
    )


_IMG = b'"IMG@/src"'
_BASE = re.compile(rb'"Base"\s*:\s*("(?:[^"\\]|\\.)*")')


def scan_page(payload: bytes, with_title: bool = False) -> WatPage:
    """The images of a WAT record without parsing the whole document (the fast path).

    Link objects are flat, so each `"IMG@/src"` occurrence is cut out between the nearest
    `{` before and `}` after it and parsed alone. Anything unexpected (a brace inside a
    string, an escaped match) makes the slice invalid JSON, and then ValueError tells the
    caller to use `parse_page`. License links are cut out the same way around each
    `creativecommons.org`. `page_url` is left to the record's WARC-Target-URI header (the
    same value). Checked equal to `parse_page` on every record of the test and bench WATs.
    """
    find, rfind, loads = payload.find, payload.rfind, orjson.loads
    images: list[tuple[str, list[tuple[str, str]]]] = []
    i = find(_IMG)
    while i >= 0:
        start, end = rfind(b"{", 0, i), find(b"}", i)
        if start < 0 or end < 0 or payload[i - 1] == 92:  # 92: backslash
            raise ValueError("no flat link object around IMG@/src")
        link = loads(payload[start : end + 1])
        if link.__class__ is not dict or link.get("path") != "IMG@/src":
            raise ValueError("IMG@/src outside a link object")
        url = link.get("url")
        if url.__class__ is str:
            images.append((url, _texts(link, with_title)))
        i = find(_IMG, end)
    base, lic = scan_extras(payload, b'"Base"' in payload, b"creativecommons.org" in payload)
    return WatPage(None, base, images, lic)


def scan_extras(payload: bytes, has_base: bool, has_cc: bool, base_at: int = 0
                ) -> tuple[str | None, list[tuple[str, str | None]]]:
    """`scan_page`'s Head.Base and license links; the caller says whether `"Base"` and
    `creativecommons.org` occur in the payload (the compiled engine finds both in one pass,
    and where the first `"Base"` is: no match of `_BASE` starts before it).
    ValueError when a cut-out is not valid JSON (then the whole page takes `parse_page`)."""
    lic: list[tuple[str, str | None]] = []
    if has_cc:
        _scan_cc_links(payload, lic)
    base = None
    if has_base:
        m = _BASE.search(payload, base_at)
        if m:
            b = orjson.loads(m.group(1))
            base = b if b.strip() else None
    return base, lic


_CC = b"creativecommons.org"


def _scan_cc_links(payload: bytes, out: list[tuple[str, str | None]]) -> None:
    """`parse_page`'s license links (Head.Link first, then Links) from the flat objects
    around each creativecommons.org mention; ValueError if a mention is not inside one."""
    head: list[tuple[str, str | None]] = []
    body: list[tuple[str, str | None]] = []
    find, rfind = payload.find, payload.rfind
    i = find(_CC)
    while i >= 0:
        start, end = rfind(b"{", 0, i), find(b"}", i)
        if start < 0 or end < 0:
            raise ValueError("creativecommons.org outside an object")
        obj = orjson.loads(payload[start : end + 1])
        if obj.__class__ is not dict:
            raise ValueError("creativecommons.org outside an object")
        path, url = obj.get("path"), obj.get("url")
        if path.__class__ is str and url.__class__ is str and "creativecommons.org" in url and (
            path != "IMG@/src" and not path.startswith("SCRIPT@")
        ):
            rel = obj.get("rel")
            (head if path.startswith("LINK@") else body).append((url, rel if isinstance(rel, str) else None))
        i = find(_CC, end)
    out.extend(head)
    out.extend(body)


def _cc_links(links: Any, out: list[tuple[str, str | None]]) -> None:
    for link in links:
        if isinstance(link, dict) and link.get("path") != "IMG@/src":
            url = link.get("url")
            if isinstance(url, str) and "creativecommons.org" in url:
                rel = link.get("rel")
                out.append((url, rel if isinstance(rel, str) else None))
