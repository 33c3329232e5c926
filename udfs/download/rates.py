"""Per-host request rates for the download stage: rules, robots.txt Crawl-delay, back-off.

A host's rate is decided in this order (docs/download.md, "Rate rules"):
  1. the rule: `[download] host_rps` (TOML table / `--host-rps a=1,b=2`) and the lines
     `PATTERN RPS` of `host_rps_file`; the table wins over the file for the same pattern.
     A pattern is an exact host (`img.example.com`), a suffix (`.example.com`: the domain
     and every subdomain), or a glob (`*.cdn.example.net`, `img?.example.org`); the exact
     host wins, then the most specific pattern (most literal characters). No match:
     `per_host_rps`. 0 means no limit.
  2. robots.txt `Crawl-delay`: the stricter of it and the rule.
  3. adaptive back-off: a host that answers 429/503, or whose responses take longer than
     `slow_response_s`, has its rate halved for the rest of the run in this task (at most
     once per interval, never below `min_host_rps`).
  4. the task's share (`rate_shares`, from the planner): the host's budget divided among
     the tasks that fetch it, so the global per-host rate still holds.
  5. a shared cut (`share_backoff`, udfs/download/board.py): when any task splitting the
     host cuts its rate, the host's new global rate is a ceiling for every such task
     (each paces the ceiling times its share).
Every fetched row records which of these set its rate (`Fetched.politeness`).
"""

from __future__ import annotations

import fnmatch
import math
import threading
from dataclasses import dataclass
from urllib.parse import urlsplit

from crawlpairs.config import ConfigError, DownloadConfig, StorageConfig
from crawlpairs.udfs.urls import normalize_url


def parse_rule_lines(lines: list[str], where: str) -> dict[str, float]:
    """`PATTERN RPS` per line (`#` comments, blank lines); a bad line is a ConfigError naming it."""
    out: dict[str, float] = {}
    for n, raw in enumerate(lines, 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.replace("=", " ").split()
        try:
            if len(parts) != 2:
                raise ValueError(line)
            out[parts[0].lower()] = _rps(parts[1])
        except ValueError:
            raise ConfigError(f"{where} line {n}: expected 'PATTERN RPS', got {raw.strip()!r}") from None
    return out


def _rps(value: object) -> float:
    v = float(value)  # type: ignore[arg-type]
    if not math.isfinite(v) or v < 0:
        raise ValueError(value)
    return v


def _idna(name: str) -> str:
    """A host name (or `.suffix`) in the form normalize_url gives hosts; unchanged if not a host."""
    dot = "." if name.startswith(".") else ""
    norm = normalize_url(f"http://{name.lstrip('.')}/")
    host = urlsplit(norm).hostname if norm else None
    return dot + host.rstrip(".") if host else name


class RateRules:
    """host -> (requests per second, the rule that gave it)."""

    def __init__(self, default: float, rules: dict[str, float]) -> None:
        self.default = default
        self.exact: dict[str, float] = {}
        self.patterns: list[tuple[int, str, float]] = []  # (specificity, pattern, rps), most specific first
        for pat, rps in rules.items():
            p = pat.strip().lower().rstrip(".")
            if not p:
                continue
            if any(c in p for c in "*?["):
                self.patterns.append((sum(c not in "*?[]" for c in p), p, rps))
                continue
            p = _idna(p)  # hosts are compared as requested (urls.normalize_url): punycode
            if p.startswith("."):
                self.patterns.append((len(p), p, rps))
            else:
                self.exact[p] = rps
        self.patterns.sort(key=lambda t: -t[0])
        self._cache: dict[str, tuple[float, str]] = {}

    @classmethod
    def from_config(cls, cfg: DownloadConfig, st: StorageConfig | None = None) -> RateRules:
        """The rules of a run: the file (if any), then the table over it. ConfigError names the flag."""
        rules: dict[str, float] = {}
        if cfg.host_rps_file:
            from crawlpairs import storage

            try:
                text = storage.read_bytes(cfg.host_rps_file, st).decode("utf-8", "replace")
            except (OSError, ValueError) as exc:
                raise ConfigError(f"--host-rps-file {cfg.host_rps_file}: cannot read ({exc})") from None
            rules.update(parse_rule_lines(text.splitlines(), f"--host-rps-file {cfg.host_rps_file}"))
        for pat, rps in cfg.host_rps.items():
            try:
                rules[pat.lower()] = _rps(rps)
            except ValueError:
                raise ConfigError(f"--host-rps {pat}={rps}: not a rate (requests per second >= 0)") from None
        return cls(cfg.per_host_rps, rules)

    def lookup(self, host: str) -> tuple[float, str]:
        """(rps, rule) for a host name (no port); rule is `default` or `host_rps PATTERN`."""
        got = self._cache.get(host)
        if got is None:
            got = self._cache[host] = self._match(host)
        return got

    def _match(self, host: str) -> tuple[float, str]:
        host = host.lower().strip("[]").rstrip(".")
        if host in self.exact:
            return self.exact[host], f"host_rps {host}"
        for _, pat, rps in self.patterns:
            if pat.startswith("."):
                if host == pat[1:] or host.endswith(pat):
                    return rps, f"host_rps {pat}"
            elif fnmatch.fnmatchcase(host, pat):
                return rps, f"host_rps {pat}"
        return self.default, "default"


@dataclass
class HostRate:
    """One host's pacing state inside a task (guarded by the event loop: single-threaded)."""

    rule_rps: float  # from RateRules (0: unlimited)
    rule: str
    share: float = 1.0  # fraction of the host's budget this task may use
    crawl_delay: float | None = None  # seconds, from robots.txt
    factor: float = 1.0  # adaptive back-off multiplier (1, 1/2, 1/4, ...)
    backed_off: str | None = None  # why the last cut happened
    last_cut: float = -math.inf
    started: int = 0  # requests started
    first_start: float | None = None
    ceiling: float | None = None  # the host's global rps after another task's cut (the board)
    ceiling_why: str | None = None

    def own_interval(self) -> float:
        """Seconds between request starts by this task's own rules and cuts (0: no limit)."""
        base = 1.0 / self.rule_rps if self.rule_rps > 0 else 0.0
        if self.crawl_delay:
            base = max(base, self.crawl_delay)
        if base <= 0:
            return 0.0
        return base / (self.factor * self.share)

    def interval(self) -> float:
        """Seconds between two request starts for this task (0: no limit): its own pace, or
        its share of the host's shared ceiling if that is slower."""
        own = self.own_interval()
        if self.ceiling:
            return max(own, 1.0 / (self.ceiling * self.share))
        return own

    def shared_binds(self) -> bool:
        return bool(self.ceiling) and 1.0 / (self.ceiling * self.share) > self.own_interval()  # type: ignore[operator]

    def adopt(self, ceiling: float, why: str, now: float) -> bool:
        """Take another task's cut of this host (its global rate); True if it slows us down."""
        if self.ceiling is not None and ceiling >= self.ceiling:
            return False
        self.ceiling, self.ceiling_why = ceiling, why
        if self.shared_binds():
            self.last_cut = now  # the same overload must not cut this task again at once
            return True
        return False

    def describe(self) -> str:
        """What set this host's pace, for the row: e.g. `0.25/s by crawl-delay 2s; backoff x0.5 (http_503)`."""
        iv = self.interval()
        rate = f"{1 / iv:.3g}/s" if iv > 0 else "unlimited"
        rule_iv = 1.0 / self.rule_rps if self.rule_rps > 0 else 0.0
        by = f"crawl-delay {self.crawl_delay:g}s" if self.crawl_delay and self.crawl_delay > rule_iv else self.rule
        parts = [f"{rate} by {by}"]
        if self.shared_binds():
            parts[0] = f"{rate} by shared backoff {self.ceiling:.3g}/s for the host ({self.ceiling_why})"
        elif self.factor != 1.0:
            parts.append(f"backoff x{self.factor:g} ({self.backed_off})")
        if self.share != 1.0:
            parts.append(f"share {self.share:g}")
        return "; ".join(parts)

    def note_start(self, now: float) -> None:
        self.started += 1
        if self.first_start is None:
            self.first_start = now

    def slow_down(self, now: float, why: str, floor_rps: float) -> bool:
        """Halve the rate this task runs at (at most once per current interval, 1 s at least,
        never below the floor); False if nothing was cut. The new global rate of the host is
        `1 / interval() / share` (what the board shares)."""
        if now - self.last_cut < max(1.0, self.interval()):
            return False
        if self.own_interval() <= 0 < self.interval():  # no limit of its own, only a shared ceiling
            self.rule_rps, self.rule = self.ceiling, f"shared {self.ceiling:.3g}/s"  # type: ignore[assignment]
        elif self.interval() <= 0:  # no limit so far: start from the rate observed
            elapsed = now - (self.first_start if self.first_start is not None else now)
            observed = self.started / elapsed if elapsed > 0 else 1.0
            self.rule_rps, self.rule = max(observed, floor_rps), f"observed {observed:.3g}/s"
        rate, floor = 1.0 / self.interval(), floor_rps * self.share
        if rate <= floor:
            return False
        # the task's own pace goes to half the pace it actually runs at (a shared ceiling included)
        self.factor *= max(rate / 2, floor) * self.own_interval()
        self.backed_off, self.last_cut = why, now
        return True


_LOCK = threading.Lock()
_RULES: dict[tuple, RateRules] = {}


def rules_for(cfg: DownloadConfig, st: StorageConfig | None = None) -> RateRules:
    """RateRules of a config, built (and the file read) once per process."""
    key = (cfg.per_host_rps, tuple(sorted(cfg.host_rps.items())), cfg.host_rps_file)
    with _LOCK:
        if key not in _RULES:
            _RULES[key] = RateRules.from_config(cfg, st)
        return _RULES[key]
