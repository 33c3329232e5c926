"""Opt-out signals and blocklists for the download stage (pure Python).

Checked in this order for every URL, so that the cheapest and most binding checks
run before any byte is requested:
  1. URL blocklist (Re-LAION style hashes of URLs) -> status `blocked`
  2. Do-Not-Train list (domains and URL hashes)    -> status `opt-out`
  3. robots.txt of the image host (dl_robots)      -> status `opt-out`
  4. response headers, before the body is read:
     X-Robots-Tag noai / noimageai (and noindex / noimageindex / none if configured),
     also in the `agent: directives` form, and TDMRep `tdm-reservation: 1` -> `opt-out`
  5. after download: image hash blocklist (MD5 / SHA-1 / SHA-256 of the bytes) -> `blocked`
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from urllib.parse import urlsplit

from crawlpairs.udfs.urls import normalize_url

HEX_LENGTHS = {32: "md5", 40: "sha1", 64: "sha256"}

AI_DIRECTIVES = frozenset({"noai", "noimageai"})
INDEX_DIRECTIVES = frozenset({"noindex", "noimageindex", "none"})


def url_hashes(url: str) -> dict[str, str]:
    """MD5, SHA-1 and SHA-256 hex digests of the exact URL string (UTF-8)."""
    b = url.encode("utf-8", "surrogatepass")
    return {"md5": hashlib.md5(b).hexdigest(), "sha1": hashlib.sha1(b).hexdigest(),
            "sha256": hashlib.sha256(b).hexdigest()}


def bytes_hashes(data: bytes) -> dict[str, str]:
    return {"md5": hashlib.md5(data).hexdigest(), "sha1": hashlib.sha1(data).hexdigest(),
            "sha256": hashlib.sha256(data).hexdigest()}


def list_entries(lines: Iterable[str]) -> list[str]:
    """Entries of a list file's lines: stripped, no blanks, no `#` comments."""
    out = []
    for line in lines:
        s = line.split("#", 1)[0].strip()
        if s:
            out.append(s)
    return out


def _is_hex_hash(s: str) -> bool:
    return len(s) in HEX_LENGTHS and all(c in "0123456789abcdefABCDEF" for c in s)


class HashList:
    """A set of MD5 / SHA-1 / SHA-256 hex digests; the length tells the algorithm."""

    def __init__(self, hashes: Iterable[str] = ()) -> None:
        self.by_alg: dict[str, set[str]] = {a: set() for a in HEX_LENGTHS.values()}
        for h in hashes:
            h = h.strip().lower()
            if _is_hex_hash(h):
                self.by_alg[HEX_LENGTHS[len(h)]].add(h)

    def __len__(self) -> int:
        return sum(len(s) for s in self.by_alg.values())

    def match(self, digests: Mapping[str, str]) -> str | None:
        """The algorithm whose digest is listed, or None."""
        for alg, values in self.by_alg.items():
            if values and digests.get(alg) in values:
                return alg
        return None

    def match_url(self, url: str) -> str | None:
        return self.match(url_hashes(url)) if len(self) else None

    def match_bytes(self, data: bytes) -> str | None:
        return self.match(bytes_hashes(data)) if len(self) else None


class DoNotTrain:
    """A local Do-Not-Train list: lines are domains (covering subdomains) or URL hashes."""

    def __init__(self, entries: Iterable[str] = ()) -> None:
        hashes, domains = [], set()
        for e in entries:
            if _is_hex_hash(e):
                hashes.append(e)
            else:
                d = e.lower().strip().rstrip(".")
                if "://" in d:
                    d = urlsplit(d).hostname or ""
                d = d.lstrip("*.").split("/", 1)[0]
                norm = normalize_url(f"http://{d}/") if d else None
                if norm:  # compare as requested: IDNA (punycode), lower case, as normalize_url spells hosts
                    d = (urlsplit(norm).hostname or d).rstrip(".")
                if d:
                    domains.add(d)
        self.hashes = HashList(hashes)
        self.domains = domains

    def match(self, url: str) -> str | None:
        """Why the URL is on the list (`domain example.com` / `url md5`), or None."""
        if self.domains:
            host = (urlsplit(url).hostname or "").lower().rstrip(".")
            parts = host.split(".")
            for i in range(len(parts)):
                cand = ".".join(parts[i:])
                if cand in self.domains:
                    return f"domain {cand}"
        alg = self.hashes.match_url(url)
        return f"url {alg}" if alg else None


def _agent_token(user_agent: str) -> str:
    return user_agent.split("/", 1)[0].strip().lower()


def x_robots_optout(values: Iterable[str], agent: str, respect_noindex: bool = False) -> str | None:
    """The opt-out directive in X-Robots-Tag header values that applies to us, or None.

    Each header value is a comma-separated list of directives, optionally prefixed by
    an agent name (`crawlpairs: noai, noimageai` or `googlebot: noindex`). A prefixed
    group applies only when the name is our agent token (or `*`); unprefixed ones
    apply to everyone. A directive like `unavailable_after: date` is not an agent prefix.
    """
    me = _agent_token(agent)
    wanted = AI_DIRECTIVES | (INDEX_DIRECTIVES if respect_noindex else frozenset())
    for value in values:
        target: str | None = None  # None: applies to all
        for raw in value.split(","):
            part = raw.strip().lower()
            if not part:
                continue
            if ":" in part:
                head, _, tail = part.partition(":")
                head = head.strip()
                if head and " " not in head and head not in ("unavailable_after", "max-snippet",
                                                             "max-image-preview", "max-video-preview"):
                    target = head
                    part = tail.strip()
                    if not part:
                        continue
                else:
                    continue
            applies = target is None or target in (me, "*")
            for d in part.split():
                if applies and d in wanted:
                    return d
    return None


def tdm_reserved(headers: Mapping[str, str] | Iterable[tuple[str, str]]) -> bool:
    """TDMRep: `tdm-reservation: 1` reserves text-and-data-mining rights."""
    items = headers.items() if isinstance(headers, Mapping) else headers
    return any(k.lower() == "tdm-reservation" and v.strip() == "1" for k, v in items)


def header_optout(headers: Iterable[tuple[str, str]], agent: str, respect_noindex: bool = False) -> str | None:
    """`noai: ...` / `noindex: ...` / `tdm: ...` for the response headers, or None."""
    items = list(headers)
    xrt = [v for k, v in items if k.lower() == "x-robots-tag"]
    d = x_robots_optout(xrt, agent, respect_noindex)
    if d:
        kind = "noai" if d in AI_DIRECTIVES else "noindex"
        return f"{kind}: X-Robots-Tag {d}"
    if tdm_reserved(items):
        return "tdm: tdm-reservation 1"
    return None
