"""Polite, guarded, concurrent image fetching for one Spark task (no Spark imports).

One `FetchPool` per task runs an asyncio loop (aiohttp) in a background thread with
many requests in flight, while the calling thread decodes and resizes the bodies
that come back (Pillow releases the GIL), so network and CPU overlap. The job
partitions rows by host key, so a host is fetched by one task at a time, and here:
  - per host: at most `per_host_concurrency` requests at once and one request start
    every 1/`per_host_rps` seconds; a 429/503 pushes the whole host back by its
    Retry-After (or exponential backoff) before the URL is retried;
  - per URL, before any request: the URL is normalised once (urls.normalize_url, the
    WHATWG serialisation a browser would request) and from then on only that string is
    used: blocklists, Do-Not-Train list, the SSRF check of an IP-literal host, robots.txt
    of the host (fetched once per task, through the same guard and limiter), and the
    request itself (handed to aiohttp as an already-encoded yarl URL, so the client cannot
    re-spell the host after the check); after the headers and before the body:
    X-Robots-Tag / TDMRep opt-outs and the declared length; the body is streamed with a cap;
  - redirects are followed by hand (bounded): the Location is joined and normalised the
    same way, and every hop is re-checked from the top;
  - every connection is made by a connector whose resolver vets each DNS answer
    (dl_ssrf.GuardedResolver, no DNS cache) and whose socket factory vets the address the
    socket is about to connect to (dl_ssrf.NetPolicy): the last word, whatever the spelling.

Settings are read from the stage's own `DownloadConfig` (one source of truth).
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import queue
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import ada_url
import aiohttp
import yarl

from crawlpairs.config import DownloadConfig, StorageConfig
from crawlpairs.udfs.download.board import BoardClient
from crawlpairs.udfs.download.optout import DoNotTrain, HashList, header_optout
from crawlpairs.udfs.download.rates import HostRate, RateRules, rules_for
from crawlpairs.udfs.download.robots import Robots, robots_url
from crawlpairs.udfs.download.ssrf import GuardedResolver, NetPolicy, SSRFBlocked, ssrf_cause
from crawlpairs.udfs.urls import normalize_url

SUCCESS, OPT_OUT, BLOCKED, ERROR = "success", "opt-out", "blocked", "error"
REDIRECTS = (301, 302, 303, 307, 308)
# Error kinds worth another try later (--retry-failed); opt-outs and guard refusals never are.
TRANSIENT_KINDS = frozenset({"timeout", "connect", "io", "http_5xx", "http_429", "http_408",
                             "robots_unavailable", "ai_txt_unavailable", "internal"})


def error_kind(error_message: str | None) -> str | None:
    if not error_message:
        return None
    return error_message.split(":", 1)[0].strip()


def is_transient(status: str | None, error_message: str | None) -> bool:
    return status == ERROR and error_kind(error_message) in TRANSIENT_KINDS


def host_key(url: str) -> str:
    """`host:port` of the URL as it will be requested (normalised: lower-case punycode or a
    canonical IP, default port filled in): the unit of politeness. "" if not a valid URL."""
    norm = normalize_url(url)
    if norm is None:
        return ""
    p = urlsplit(norm)
    host = (p.hostname or "").rstrip(".")
    if ":" in host:
        host = f"[{host}]"  # IPv6: keep `host:port` unambiguous
    return f"{host}:{p.port or (443 if p.scheme == 'https' else 80)}"


def host_rate(cfg: DownloadConfig, host: str, st: StorageConfig | None = None) -> float:
    """Requests per second the rate rules give a host (`host` or a `host_key`), before any
    robots.txt Crawl-delay or back-off, which only the fetch can learn; 0 means no limit.
    For the planner; raises ConfigError for an unusable `--host-rps` / `--host-rps-file`."""
    name, sep, port = host.rpartition(":")
    return rules_for(cfg, st).lookup(name if sep and port.isdigit() else host)[0]


def user_agent(cfg: DownloadConfig) -> str:
    """The User-Agent header (and robots.txt product token source) of every request."""
    return cfg.user_agent.replace("{contact_url}", cfg.contact_url)


def join_url(base: str, location: str) -> str | None:
    """A redirect's Location resolved against the URL that answered, normalised (None: invalid)."""
    try:
        return normalize_url(ada_url.join_url(base, location))
    except ValueError:
        return None


def request_url(norm: str) -> yarl.URL:
    """What aiohttp is handed: the normalised URL without userinfo (browsers send none for
    images), marked as already encoded so that yarl does not re-encode or re-spell it."""
    start = norm.find("//") + 2
    end = norm.find("/", start)
    at = norm.rfind("@", start, end if end > 0 else len(norm))  # userinfo's own '@'s are encoded
    if at >= 0:
        norm = norm[:start] + norm[at + 1 :]
    return yarl.URL(norm, encoded=True)


@dataclass
class Fetched:
    status: str
    error_message: str | None = None
    body: bytes | None = None
    final_url: str | None = None
    http_status: int | None = None
    content_type: str | None = None
    politeness: str | None = None  # what set the host's pace: `0.5/s by host_rps *.example.com; backoff x0.5 (http_503)`


class _Outcome(Exception):
    """Ends one URL early with a final status (raised from deep inside a hop)."""

    def __init__(self, status: str, message: str, http_status: int | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.http_status = status, message, http_status


@dataclass
class _Host:
    sem: asyncio.Semaphore
    rate: HostRate
    next_time: float = 0.0
    key: str = ""  # host[:port], as the planner and the back-off board name it
    shared: bool = False  # split over several tasks: cuts go through the board


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    v = value.strip()
    if v.isdigit():
        return float(v)
    try:
        dt = email.utils.parsedate_to_datetime(v)
    except (TypeError, ValueError):
        return None
    return max(0.0, dt.timestamp() - time.time())


class Fetcher:
    """All requests of one task; use inside a running event loop (see FetchPool)."""

    def __init__(self, cfg: DownloadConfig, url_blocklist: HashList | None = None,
                 do_not_train: DoNotTrain | None = None, base_resolver: Any = None,
                 rate_shares: dict[str, float] | None = None, rate_rules: RateRules | None = None,
                 board: BoardClient | None = None) -> None:
        self.o = cfg
        self.rates = rate_rules if rate_rules is not None else rules_for(cfg)
        self.shares = dict(rate_shares or {})  # host key (or host) -> this task's fraction of its rate
        self.board = board  # shares cuts of split hosts with the other tasks (None: this task alone)
        self.agent = user_agent(cfg)
        self.url_blocklist = url_blocklist or HashList()
        self.dnt = do_not_train or DoNotTrain()
        self.policy = NetPolicy(cfg.ssrf_guard, cfg.allow_network)
        self.resolver = GuardedResolver(self.policy, cfg.resolve_overrides, base_resolver)
        self.hosts: dict[str, _Host] = {}
        self.robots: dict[str, asyncio.Future[Robots | _Outcome]] = {}  # robots.txt and ai.txt, by URL
        self.session: aiohttp.ClientSession | None = None
        self.global_sem: asyncio.Semaphore | None = None
        self.timeout = aiohttp.ClientTimeout(total=cfg.total_timeout, sock_connect=cfg.connect_timeout,
                                             sock_read=cfg.read_timeout)

    def guarded_socket(self, addr_info: tuple[Any, ...]) -> socket.socket:
        """The connector's socket factory: vets the very address the socket will connect to
        (after any resolver, literal or not), so no spelling can slip past the guard."""
        family, type_, proto, _, sockaddr = addr_info
        self.policy.check(str(sockaddr[0]), int(sockaddr[1]))
        return socket.socket(family, type_, proto)

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(resolver=self.resolver, use_dns_cache=False,  # type: ignore[arg-type]
                                         limit=self.o.in_flight_per_task, limit_per_host=0,
                                         enable_cleanup_closed=True, socket_factory=self.guarded_socket)
        self.session = aiohttp.ClientSession(
            connector=connector, headers={"User-Agent": self.agent, "Accept": "image/*,*/*;q=0.5"},
            cookie_jar=aiohttp.DummyCookieJar(), trust_env=False, auto_decompress=True)
        self.global_sem = asyncio.Semaphore(self.o.in_flight_per_task)

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()

    # -- politeness ----------------------------------------------------------------------
    def _host(self, url: str) -> _Host:
        k = host_key(url)
        h = self.hosts.get(k)
        if h is None:
            name = k.rsplit(":", 1)[0]
            rps, rule = self.rates.lookup(name)
            share = self.shares.get(k, self.shares.get(name, 1.0))
            if not 0 < share <= 1:
                share = 1.0
            # a host split over K tasks (share 1/K, K <= per_host_concurrency by the plan) gets
            # 1/K of its concurrency here too, so the K tasks together keep the host's limit
            slots = max(1, int(self.o.per_host_concurrency * share + 1e-9))
            h = self.hosts[k] = _Host(asyncio.Semaphore(slots), HostRate(rps, rule, share), key=k,
                                      shared=share < 1.0 and self.board is not None)
            if h.shared and self.board is not None:
                self.board.watch(k)
        return h

    def _observe(self, h: _Host, seconds: float, status: int | None) -> None:
        """Adaptive back-off: a 429/503 or a slow answer halves the host's rate for the rest of
        the run; for a split host the cut goes to the board, so every task of the host slows."""
        if not self.o.adaptive_backoff:
            return
        why = f"http_{status}" if status in (429, 503) else \
            f"slow {seconds:.1f}s" if seconds > self.o.slow_response_s else None
        if why is not None and h.rate.slow_down(asyncio.get_running_loop().time(), why, self.o.min_host_rps) \
                and h.shared and self.board is not None:
            self.board.report(h.key, 1.0 / (h.rate.interval() * h.rate.share), why)

    @contextlib.asynccontextmanager
    async def _slot(self, url: str) -> AsyncIterator[_Host]:
        """Hold one of the host's slots, start no sooner than its rate allows, then count in-flight."""
        h = self._host(url)
        async with h.sem:
            loop = asyncio.get_running_loop()
            if h.shared and self.board is not None:
                c = self.board.ceilings.get(h.key)
                if c is not None:
                    h.rate.adopt(c[0], c[1], loop.time())
            while True:  # next_time may move forward (Retry-After) while we sleep
                wait = h.next_time - loop.time()
                if wait <= 0:
                    break
                await asyncio.sleep(wait)
            iv = h.rate.interval()
            if iv > 0:
                h.next_time = loop.time() + iv
            h.rate.note_start(loop.time())
            assert self.global_sem is not None
            async with self.global_sem:
                yield h

    @contextlib.asynccontextmanager
    async def _get(self, url: str, h: _Host) -> AsyncIterator[aiohttp.ClientResponse]:
        """GET of a normalised URL (no redirects followed); its time to headers feeds back-off."""
        assert self.session is not None
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        async with self.session.get(request_url(url), allow_redirects=False, timeout=self.timeout) as resp:
            self._observe(h, loop.time() - t0, resp.status)
            yield resp

    def _push_back(self, url: str, delay: float) -> None:
        h = self._host(url)
        h.next_time = max(h.next_time, asyncio.get_running_loop().time() + delay)

    # -- checks -------------------------------------------------------------------------
    def _precheck(self, url: str) -> str:
        """The normalised URL, after the list and IP-literal checks (raises _Outcome otherwise)."""
        norm = self._vet_host(url, "bad_url")
        alg = self.url_blocklist.match_url(norm) or (self.url_blocklist.match_url(url) if norm != url else None)
        if alg:
            raise _Outcome(BLOCKED, f"blocklist_url: {alg} of url listed")
        why = self.dnt.match(norm) or (self.dnt.match(url) if norm != url else None)
        if why:
            raise _Outcome(OPT_OUT, f"do_not_train: {why}")
        return norm

    def _vet_host(self, url: str, kind: str) -> str:
        """Normalise once, then vet an IP-literal host exactly as it will be connected to."""
        norm = normalize_url(url)
        if norm is None:
            raise _Outcome(ERROR, f"{kind}: not a valid http(s) URL: {url[:200]!r}")
        p = urlsplit(norm)
        try:
            self.resolver.check_literal(p.hostname or "", p.port or (443 if p.scheme == "https" else 80))
        except SSRFBlocked as exc:
            raise _Outcome(BLOCKED, f"ssrf: {exc}") from None
        return norm

    def _net_error(self, exc: BaseException, what: str = "") -> _Outcome:
        s = ssrf_cause(exc)
        if s is not None:
            return _Outcome(BLOCKED, f"ssrf: {s}")
        if isinstance(exc, (asyncio.TimeoutError, TimeoutError, aiohttp.ServerTimeoutError)):
            return _Outcome(ERROR, f"timeout: {what}{exc.__class__.__name__}")
        if isinstance(exc, aiohttp.InvalidURL):
            return _Outcome(ERROR, f"bad_url: {what}{exc}")
        if isinstance(exc, aiohttp.ClientConnectorDNSError):
            return _Outcome(ERROR, f"dns: {what}{str(exc)[:160]}")
        if isinstance(exc, (aiohttp.ClientConnectorError, ConnectionError)):
            return _Outcome(ERROR, f"connect: {what}{str(exc)[:160]}")
        if isinstance(exc, (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError,
                            aiohttp.ClientOSError)):
            return _Outcome(ERROR, f"io: {what}{exc.__class__.__name__}: {str(exc)[:120]}")
        if isinstance(exc, aiohttp.ClientResponseError):
            return _Outcome(ERROR, f"http_protocol: {what}{str(exc)[:160]}")
        return _Outcome(ERROR, f"internal: {what}{exc.__class__.__name__}: {str(exc)[:160]}")

    async def _robots_for(self, url: str, name: str = "robots.txt") -> Robots:
        """The host's robots.txt (or ai.txt), fetched once per task and shared by its URLs."""
        key = robots_url(url, name)
        fut = self.robots.get(key)
        if fut is None:
            fut = asyncio.get_running_loop().create_future()
            self.robots[key] = fut
            try:
                fut.set_result(await self._fetch_robots(key, name))
            except _Outcome as out:
                fut.set_result(out)
            except Exception as exc:  # never leave waiters hanging
                fut.set_result(self._net_error(exc, f"{name} "))
        res = await asyncio.shield(fut)
        if isinstance(res, _Outcome):
            raise res
        return res

    async def _fetch_robots(self, url: str, name: str = "robots.txt") -> Robots:
        """RFC 9309: 2xx -> rules, 4xx -> allow all, 5xx / unreachable -> fetch nothing (ai.txt alike)."""
        assert self.session is not None
        kind = "robots_unavailable" if name == "robots.txt" else "ai_txt_unavailable"
        for _ in range(5):
            url = self._vet_host(url, kind)
            try:
                async with self._slot(url) as h, self._get(url, h) as resp:
                    if resp.status in REDIRECTS and resp.headers.get("Location"):
                        nxt = join_url(url, resp.headers["Location"])
                        if nxt is None:
                            raise _Outcome(ERROR, f"{kind}: {name} redirects to an invalid URL")
                        url = nxt
                        continue
                    if 200 <= resp.status < 300:
                        data = await resp.content.read(self.o.robots_max_bytes)
                        return Robots(data.decode("utf-8", "replace"), self.agent)
                    if 400 <= resp.status < 500 and resp.status != 429:
                        return Robots.allow_all()
                    raise _Outcome(ERROR, f"{kind}: {name} answered {resp.status}", resp.status)
            except _Outcome:
                raise
            except Exception as exc:
                out = self._net_error(exc, f"{name} ")
                if out.status == BLOCKED:
                    raise out from None
                raise _Outcome(ERROR, f"{kind}: {out.message}") from None
        return Robots.allow_all()  # a redirect chain longer than 5 hops: RFC says treat as 404

    # -- one URL ------------------------------------------------------------------------
    async def fetch(self, url: str) -> Fetched:
        try:
            res = await self._fetch(url)
        except _Outcome as out:
            res = Fetched(out.status, out.message, http_status=out.http_status)
        except Exception as exc:  # a broken record never fails the task
            out = self._net_error(exc)
            res = Fetched(out.status, out.message)
        k = host_key(url)
        if k in self.hosts:
            res.politeness = self.hosts[k].rate.describe()
        return res

    async def _fetch(self, url: str) -> Fetched:
        assert self.session is not None
        hops = 0
        attempt = 0
        while True:
            url = self._precheck(url)
            if self.o.respect_robots:
                robots = await self._robots_for(url)
                if not robots.allowed(url):
                    raise _Outcome(OPT_OUT, f"robots: disallowed by {robots_url(url)}")
                if robots.crawl_delay:
                    if robots.crawl_delay > self.o.max_crawl_delay:
                        raise _Outcome(ERROR, f"crawl_delay: {robots_url(url)} asks {robots.crawl_delay:g}s "
                                              f"between requests, over --max-crawl-delay {self.o.max_crawl_delay:g}")
                    self._host(url).rate.crawl_delay = robots.crawl_delay
            if self.o.respect_ai_txt:
                ai = await self._robots_for(url, "ai.txt")
                if not ai.allowed(url):
                    raise _Outcome(OPT_OUT, f"ai_txt: disallowed by {robots_url(url, 'ai.txt')}")
            try:
                async with self._slot(url) as h, self._get(url, h) as resp:
                    st = resp.status
                    if st in REDIRECTS:
                        loc = resp.headers.get("Location")
                        if not loc:
                            raise _Outcome(ERROR, f"http_{st}: redirect without Location", st)
                        hops += 1
                        if hops > self.o.max_redirects:
                            raise _Outcome(ERROR, f"redirects: more than {self.o.max_redirects}", st)
                        nxt = join_url(url, loc)
                        if nxt is None:
                            raise _Outcome(ERROR, f"bad_url: redirect to an invalid URL {loc[:200]!r}", st)
                        url = nxt
                        continue
                    if st in (429, 503):
                        delay = _retry_after(resp.headers.get("Retry-After"))
                        kind = "http_429" if st == 429 else "http_5xx"
                        if delay is None:
                            delay = self.o.backoff_base * (2 ** attempt)
                        if delay > self.o.max_retry_after:
                            self._push_back(url, self.o.max_retry_after)
                            raise _Outcome(ERROR, f"{kind}: {st}, Retry-After {delay:.0f}s over the cap", st)
                        self._push_back(url, delay)
                        if attempt >= self.o.retries:
                            raise _Outcome(ERROR, f"{kind}: {st} after {attempt + 1} tries", st)
                        attempt += 1
                        continue
                    if st != 200:
                        kind = "http_5xx" if st >= 500 else f"http_{st}"
                        raise _Outcome(ERROR, f"{kind}: {st}", st)
                    why = header_optout(resp.headers.items(), self.agent, self.o.respect_noindex)
                    if why:
                        raise _Outcome(OPT_OUT, why, st)
                    declared = resp.content_length
                    if declared is not None and declared > self.o.max_body_bytes:
                        raise _Outcome(ERROR, f"too_large: declared {declared} bytes > {self.o.max_body_bytes}",
                                       st)
                    chunks, size = [], 0
                    async for chunk in resp.content.iter_chunked(1 << 16):
                        size += len(chunk)
                        if size > self.o.max_body_bytes:
                            raise _Outcome(ERROR, f"too_large: body over {self.o.max_body_bytes} bytes", st)
                        chunks.append(chunk)
                    return Fetched(SUCCESS, None, b"".join(chunks), url, st,
                                   resp.headers.get("Content-Type"))
            except _Outcome:
                raise
            except Exception as exc:
                raise self._net_error(exc) from None


class FetchPool:
    """Runs a Fetcher's event loop in a thread; submit URLs, take results as they finish."""

    def __init__(self, cfg: DownloadConfig, url_blocklist: HashList | None = None,
                 do_not_train: DoNotTrain | None = None, base_resolver: Any = None,
                 rate_shares: dict[str, float] | None = None, rate_rules: RateRules | None = None,
                 board: BoardClient | None = None) -> None:
        """`rate_shares`: host key -> the fraction of that host's rate this task may use (the
        planner spreads a big host over several tasks); `rate_rules`: default from `cfg`;
        `board`: where cuts of those split hosts are shared with their other tasks."""
        self.fetcher = Fetcher(cfg, url_blocklist, do_not_train, base_resolver, rate_shares, rate_rules, board)
        self.results: queue.Queue[tuple[Any, Fetched]] = queue.Queue()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="crawlpairs-fetch", daemon=True)
        self.pending = 0

    def __enter__(self) -> FetchPool:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.fetcher.start(), self.loop).result()
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.fetcher.close(), self.loop).result(timeout=30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=30)
        self.loop.close()

    async def _one(self, key: Any, url: str) -> None:
        try:
            res = await self.fetcher.fetch(url)
        except BaseException as exc:  # noqa: BLE001 - a result must always come back
            res = Fetched(ERROR, f"internal: {exc.__class__.__name__}: {exc}")
        self.results.put((key, res))

    def submit(self, key: Any, url: str) -> None:
        self.pending += 1
        asyncio.run_coroutine_threadsafe(self._one(key, url), self.loop)

    def get(self, timeout: float | None = None) -> tuple[Any, Fetched] | None:
        """The next finished (key, Fetched); None if none finishes within `timeout` seconds."""
        try:
            item = self.results.get(timeout=timeout)
        except queue.Empty:
            return None
        self.pending -= 1
        return item

    def map(self, items: Iterable[tuple[Any, str]], max_pending: int = 5000) -> Iterator[tuple[Any, Fetched]]:
        """Fetch (key, url) pairs, yielding (key, Fetched) in completion order."""
        for key, url in items:
            self.submit(key, url)
            while self.pending >= max_pending:
                yield self.get()
            while not self.results.empty():
                yield self.get()
        while self.pending:
            yield self.get()
