"""Page license from its links: Creative Commons licenses and the Public Domain Mark.

A page declares a license with `rel="license"` links (the CC license chooser emits
them) or, more loosely, by linking a creativecommons.org deed. A `rel=license` link
wins over a plain link; otherwise the first CC deed linked from the page is taken.
Only creativecommons.org deed URLs are normalised: other `rel=license` targets
(a site's own terms page) do not say anything we can act on, so they give null.
"""

from __future__ import annotations

from collections.abc import Iterable

from crawlpairs.udfs.urls import host_of

_CC_CODES = {
    "by": "cc-by",
    "by-sa": "cc-by-sa",
    "by-nd": "cc-by-nd",
    "by-nc": "cc-by-nc",
    "by-nc-sa": "cc-by-nc-sa",
    "by-nc-nd": "cc-by-nc-nd",
    "by-nd-nc": "cc-by-nc-nd",  # old 1.0 spelling
    "by-sa-nc": "cc-by-nc-sa",
}


def normalise_license_url(url: str) -> str | None:
    """`https://creativecommons.org/licenses/by-sa/4.0/` -> `cc-by-sa`; None if not a CC deed."""
    host = host_of(url)
    if not (host == "creativecommons.org" or host.endswith(".creativecommons.org")):
        return None
    rest = url[url.find("://") + 3 :]
    slash = rest.find("/")
    path = rest[slash:].split("?", 1)[0].split("#", 1)[0] if slash >= 0 else ""
    parts = [p for p in path.lower().split("/") if p]
    if len(parts) < 2:
        return None
    if parts[0] == "licenses":
        return _CC_CODES.get(parts[1])
    if parts[0] == "publicdomain":
        if parts[1] == "zero":
            return "cc0"
        if parts[1] == "mark":
            return "pdm"
    return None


def detect_license(links: Iterable[tuple[str, str | None]]) -> tuple[str | None, str | None]:
    """(license, license_url) from (absolute url, rel) pairs; (None, None) if none found."""
    first: tuple[str, str] | None = None
    for url, rel in links:
        if "creativecommons.org" not in url:
            continue
        code = normalise_license_url(url)
        if code is None:
            continue
        if rel and "license" in rel.lower().split():
            return code, url
        if first is None:
            first = (code, url)
    return first if first else (None, None)
