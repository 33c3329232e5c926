"""Image URL resolution and the URL-side filters (scheme, length, domain, extension).

Resolution follows the WHATWG URL standard where it differs from RFC 3986 in ways
that matter for `<img src>`: leading/trailing C0-control-or-space is stripped, tabs
and newlines inside are removed, and for http(s) a backslash is a path separator.
`urllib.parse.urljoin` does the rest (dot segments, scheme-relative `//host/x`).

`normalize_url` then gives the URL as a browser would request it: the WHATWG URL
standard's serialisation (ada, a compliant parser), without the fragment. extract and
download both use it, so every later stage, every user and the HTTP client see one
spelling of each URL, and the SSRF guard vets the host that is really connected to.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from urllib.parse import urljoin

import ada_url

_STRIP = "".join(chr(c) for c in range(0x21))  # C0 controls and space
_TAB_NL = str.maketrans("", "", "\t\n\r")


def clean_href(href: str) -> str:
    """Strip what browsers strip from an attribute URL before parsing it."""
    href = href.strip(_STRIP)
    if "\t" in href or "\n" in href or "\r" in href:
        href = href.translate(_TAB_NL)
    return href


def base_prefixes(base: str) -> tuple[str, str] | None:
    """(origin, directory) of a plain http(s) base URL, for `resolve`'s fast path; None if
    the base has anything (dot segments, backslashes, no path) that needs the full algorithm."""
    i = base.find("://")
    if i <= 0 or "\\" in base or "/." in base[i + 3 :]:
        return None
    end = len(base)
    for sep in "?#":
        j = base.find(sep, i + 3)
        if 0 <= j < end:
            end = j
    slash = base.find("/", i + 3, end)
    if slash < 0:
        origin = base[:end]
        return origin, origin + "/"
    return base[:slash], base[: base.rfind("/", slash, end) + 1]


def resolve(base: str, href: str, prefixes: tuple[str, str] | None = None) -> str:
    """Absolute URL of `href` on a page whose base URL is `base` ("" if it cannot be resolved).

    `prefixes` (from `base_prefixes(base)`, computed once per page) enables a fast path for
    the common relative forms (`/a/b.jpg`, `b.jpg`) that gives exactly what urljoin gives.
    """
    href = clean_href(href)
    if not href:
        return ""
    low = href[:8].lower()
    if low.startswith("http://") or low.startswith("https://"):
        absolute = href
    elif ":" in href and _has_scheme(href):
        return href  # data:, javascript:, mailto:, ftp: ... judged by the scheme filter
    elif prefixes is not None and "\\" not in href and href[0] not in "?#" and href[:2] != "//":
        if href[0] == ".":
            absolute = _climb(prefixes, href)
        else:
            absolute = prefixes[0] + href if href[0] == "/" else prefixes[1] + href
            if "/." in absolute:
                absolute = _remove_dot_segments(absolute)
    else:
        if "\\" in href:
            href = href.replace("\\", "/")
        try:
            absolute = urljoin(base, href)
        except ValueError:  # e.g. an invalid IPv6 literal in the base or href
            return ""
    if "\\" in absolute:
        absolute = absolute.replace("\\", "/")
    if "#" in absolute:  # the fragment never reaches the server: same image
        absolute = absolute.split("#", 1)[0]
    return absolute


def _climb(prefixes: tuple[str, str], href: str) -> str:
    """`prefixes[1] + href` with dot segments removed, for hrefs that start with `./` or
    `../` runs (old sites write `../images/x.gif` everywhere): pop directories off the
    base directory instead of splitting the whole path. Anything else goes to
    `_remove_dot_segments` (same result, checked on generated cases in the tests)."""
    i = up = 0
    while True:
        if href.startswith("../", i):
            up += 1
            i += 3
        elif href.startswith("./", i):
            i += 2
        else:
            break
    rest = href[i:]
    if i == 0 or "/." in rest or rest[:1] == ".":
        return _remove_dot_segments(prefixes[1] + href)
    d, root = prefixes[1], len(prefixes[0]) + 1  # d[root - 1] is the path's first "/"
    for _ in range(up):
        if len(d) <= root:
            break
        d = d[: d.rfind("/", root - 1, len(d) - 1) + 1]
    return d + rest


def _remove_dot_segments(url: str) -> str:
    """RFC 3986 5.2.4 on the path of an absolute URL (what urljoin does after merging)."""
    i = url.find("://") + 3
    end = len(url)
    for sep in "?#":
        j = url.find(sep, i)
        if 0 <= j < end:
            end = j
    slash = url.find("/", i, end)
    if slash < 0:
        return url
    segments = url[slash:end].split("/")[1:]
    out: list[str] = []
    for seg in segments:
        if seg == "..":
            if out:
                out.pop()
        elif seg != ".":
            out.append(seg)
    if segments and segments[-1] in (".", ".."):
        out.append("")  # "a/b/.." -> "a/": the result names a directory
    return url[:slash] + "/" + "/".join(out) + url[end:]


def _has_scheme(href: str) -> bool:
    """True if `href` starts with `scheme:` (then it is absolute, whatever the base)."""
    i = href.find(":")
    if i <= 0:
        return False
    scheme = href[:i]
    return bool(scheme) and scheme[0].isalpha() and all(c.isalnum() or c in "+-." for c in scheme)


def host_of(url: str) -> str:
    """Lower-case host of an absolute http(s) URL without userinfo or port ("" if none)."""
    i = url.find("://")
    if i < 0:
        return ""
    rest = url[i + 3 :]
    end = len(rest)
    for sep in "/?#":
        j = rest.find(sep)
        if 0 <= j < end:
            end = j
    netloc = rest[:end]
    if "@" in netloc:
        netloc = netloc.rsplit("@", 1)[1]
    if netloc.startswith("["):  # IPv6 literal
        j = netloc.find("]")
        return netloc[: j + 1].lower() if j > 0 else ""
    if ":" in netloc:
        netloc = netloc.split(":", 1)[0]
    return netloc.rstrip(".").lower()


def extension_of(url: str) -> str:
    """Lower-case extension of the last path segment ("" if none): `a/b.JPG?x=1` -> `jpg`."""
    end = len(url)
    q = url.find("?")
    if q >= 0:
        end = q
    h = url.find("#", 0, end)
    if h >= 0:
        end = h
    i = url.find("://")
    slash = url.rfind("/", i + 3 if i >= 0 else 0, end)
    if slash < 0:
        return ""  # only a host
    dot = url.rfind(".", slash + 1, end)
    return url[dot + 1 : end].lower() if dot >= 0 else ""


# A URL the WHATWG parser would return unchanged: lower-case http(s), a lower-case ASCII
# domain whose last label starts with a letter (so it is not an IPv4 number in any radix),
# no userinfo or port, a path, and only characters no percent-encode set touches. Checked
# against ada over real URLs in tests/extract/test_urls.py.
_HTTP = frozenset({"http", "https"})
# `^` is not in it: the URL standard percent-encodes it in a path (ada: /a^b -> /a%5Eb), not in a query.
_CLEAN = re.compile(r"https?://(?:[a-z0-9-]+\.)*[a-z][a-z0-9-]*\.?/[!$%&()*+,\-./0-9:;=?@A-Z\[\]_a-z|~]*")


def normalize_url(url: str, schemes: Collection[str] = _HTTP) -> str | None:
    """WHATWG serialisation of an absolute http(s) URL, fragment dropped; None if not valid.

    `schemes` (lower-case) widens what is accepted (extract's `allowed_schemes`, e.g. ftp).

    Spaces and other illegal characters are percent-encoded, hosts are IDNA-mapped to
    lower-case punycode (so Unicode digits become ASCII: `１２７.０.０.１` is `127.0.0.1`),
    IPv4 in any number form is written as a dotted quad, IPv6 in its short form, default
    ports and dot segments are removed. About 2 us for URLs that are already clean (the
    fast path above), 5-7 us through the parser (bench/urls). Lone surrogates (from
    broken HTML decoding) become U+FFFD first, as browsers turn DOM strings into USVs.
    """
    if not isinstance(url, str):
        return None
    if (_CLEAN.fullmatch(url) is not None and "/." not in url and "%2e" not in url and "%2E" not in url
            and "xn--" not in url and (schemes is _HTTP or url[: url.find(":")] in schemes)):
        return url
    try:
        href = ada_url.normalize_url(url)
    except ValueError:
        usv = url.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
        if usv == url:
            return None
        return normalize_url(usv, schemes)
    if href[: href.find(":")] not in schemes:
        return None
    # '#' is percent-encoded everywhere before the fragment, so the first one starts it
    i = href.find("#")
    return href if i < 0 else href[:i]
