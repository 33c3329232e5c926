"""robots.txt rules (RFC 9309) for the download stage, pure Python; also Spawning's ai.txt,
which uses the same syntax (`User-Agent`, `Disallow: *.jpg`) to opt files out of AI training.

Written here rather than with urllib.robotparser because the RFC's matching is the
longest matching path (Allow wins a tie), with `*` and `$` wildcards, and the group
for our product token beats the `*` group; robotparser applies the first rule in
file order. Fetching and caching live in dl_fetch (the fetch goes through the SSRF
guard and the per-host limiter like any request).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import quote, unquote, urlsplit


def _norm_path(p: str) -> str:
    # Compare in percent-encoded form with unreserved characters decoded (RFC 9309 2.2.2).
    return quote(unquote(p), safe="/?=&;:@!$'()*+,~%-._")


def _pattern(path: str) -> re.Pattern[str]:
    anchored = path.endswith("$")
    if anchored:
        path = path[:-1]
    body = ".*".join(re.escape(_norm_path(s)) for s in path.split("*"))
    return re.compile(body + ("$" if anchored else ""))


@dataclass
class _Group:
    agents: list[str] = field(default_factory=list)
    rules: list[tuple[bool, str, re.Pattern[str]]] = field(default_factory=list)  # (allow, path, regex)
    crawl_delay: float | None = None  # seconds (non-standard, widely used: we honour it)


class Robots:
    """Parsed robots.txt; `allowed(url)` for one product token."""

    def __init__(self, text: str = "", agent: str = "*") -> None:
        self.agent = agent.split("/", 1)[0].strip().lower()
        self.groups: list[_Group] = []
        cur: _Group | None = None
        last_was_agent = False
        for raw in text.splitlines():
            line = raw.split("#", 1)[0].strip()
            if ":" not in line:
                continue
            key, _, value = line.partition(":")
            key, value = key.strip().lower(), value.strip()
            if key in ("user-agent", "useragent"):
                if cur is None or not last_was_agent:
                    cur = _Group()
                    self.groups.append(cur)
                cur.agents.append(value.lower())
                last_was_agent = True
            elif key in ("allow", "disallow"):
                last_was_agent = False
                if cur is None:
                    continue
                if value == "":
                    continue  # `Disallow:` with no path allows everything
                cur.rules.append((key == "allow", value, _pattern(value)))
            elif key == "crawl-delay":
                last_was_agent = False
                if cur is not None:
                    try:
                        delay = float(value)
                    except ValueError:
                        continue
                    if delay >= 0 and delay == delay:  # not NaN
                        cur.crawl_delay = max(delay, cur.crawl_delay or 0.0)
        # The groups that apply to our agent, chosen once (allowed() runs for every URL of the host).
        mine = [g for g in self.groups if any(a != "*" and a == self.agent for a in g.agents)]
        if not mine:
            mine = [g for g in self.groups if "*" in g.agents]
        self.rules = [r for g in mine for r in g.rules]
        delays = [g.crawl_delay for g in mine if g.crawl_delay is not None]
        self.crawl_delay: float | None = max(delays) if delays else None

    @classmethod
    def allow_all(cls) -> Robots:
        return cls("")

    def allowed(self, url: str) -> bool:
        parts = urlsplit(url)
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        if path == "/robots.txt":
            return True
        path = _norm_path(path)
        best: tuple[int, bool] | None = None
        for allow, raw, rx in self.rules:
            if rx.match(path):
                cand = (len(raw), allow)
                if best is None or cand[0] > best[0] or (cand[0] == best[0] and allow):
                    best = cand
        return True if best is None else best[1]


def robots_url(url: str, name: str = "robots.txt") -> str:
    """`scheme://host[:port]/robots.txt` of a normalised URL (userinfo dropped: one file per origin)."""
    p = urlsplit(url)
    netloc = p.netloc.rpartition("@")[2]
    return f"{p.scheme}://{netloc}/{name}"
