"""Politeness with a real loopback server that logs when each request arrives: per-host rate
rules and their precedence, robots.txt Crawl-delay, Spawning's ai.txt, adaptive back-off."""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from collections import defaultdict
from pathlib import Path

import pandas as pd
import pytest
from aiohttp import web

from crawlpairs.config import ConfigError, DownloadConfig
from crawlpairs.udfs.download.fetch import error_kind
from crawlpairs.udfs.download.rates import RateRules
from crawlpairs.udfs.download.task import download_frames

pytestmark = pytest.mark.integration

HOSTS = ["delay.test", "fast.test", "a.example.test", "b.example.test", "ai.test", "busy.test", "bigdelay.test",
         "slowresp.test"]


class LogServer:
    """Routes by Host; records (host, path, monotonic time) of every request as it arrives."""

    def __init__(self, photo: bytes) -> None:
        self.photo = photo
        self.log: dict[str, list[tuple[str, float]]] = defaultdict(list)
        self.busy_503 = 0  # busy.test answers 503 to this many image requests, then the image
        self.fail_once: set[str] = set()  # paths answered 503 the first time they are asked
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    async def handle(self, request: web.Request) -> web.Response:
        host = (request.host or "").split(":")[0]
        self.log[host].append((request.path, time.monotonic()))
        if request.path == "/robots.txt":
            if host == "delay.test":
                return web.Response(text="User-agent: *\nCrawl-delay: 0.4\nDisallow: /private/\n")
            if host == "bigdelay.test":
                return web.Response(text="User-agent: crawlpairs\nCrawl-delay: 3600\n")
            return web.Response(status=404)
        if request.path == "/ai.txt":
            if host == "ai.test":
                return web.Response(text="# Spawning AI\nUser-Agent: *\nDisallow: *.jpg\nDisallow: /art/\n")
            return web.Response(status=404)
        if host == "slowresp.test":
            await asyncio.sleep(0.3)
        if request.path in self.fail_once:
            self.fail_once.discard(request.path)
            return web.Response(status=503)
        if host == "busy.test" and self.busy_503 > 0:
            self.busy_503 -= 1
            return web.Response(status=503)
        return web.Response(body=self.photo, content_type="image/jpeg")

    def starts(self, host: str) -> list[float]:
        """Arrival times of the host's image requests (robots.txt / ai.txt left out)."""
        return [t for p, t in self.log[host] if p not in ("/robots.txt", "/ai.txt")]

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]

    def start(self) -> LogServer:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


@pytest.fixture
def server(shared_data: Path):
    s = LogServer((shared_data / "images" / "skimage" / "rocket.jpg").read_bytes()).start()
    yield s
    s.stop()


@pytest.fixture
def cfg(server: LogServer) -> DownloadConfig:
    return DownloadConfig(
        connect_timeout=2.0, read_timeout=2.0, total_timeout=5.0, backoff_base=0.05, retries=3,
        per_host_rps=5.0, per_host_concurrency=4, in_flight_per_task=32, min_image_bytes=0,
        allow_network=[f"127.0.0.1:{server.port}"],
        resolve_overrides={h: f"127.0.0.1:{server.port}" for h in HOSTS})


def _run(urls: list[str], cfg: DownloadConfig) -> pd.DataFrame:
    df = pd.DataFrame({"uid": [f"u{i}" for i in range(len(urls))], "url": urls, "text": ["t"] * len(urls)})
    out = pd.concat(list(download_frames(iter([df]), cfg)), ignore_index=True)
    return out.set_index("url")


def _gaps(times: list[float]) -> list[float]:
    return [b - a for a, b in zip(times, times[1:], strict=False)]


def test_crawl_delay_and_host_rules_set_the_pace(server: LogServer, cfg: DownloadConfig) -> None:
    cfg.per_host_rps = 2.0
    cfg.host_rps = {"fast.test": 40.0, "delay.test": 50.0, ".example.test": 4.0, "b.example.test": 2.5}
    urls = [f"http://{h}/img{i}.jpg" for h in ("delay.test", "fast.test", "a.example.test", "b.example.test")
            for i in range(5)]
    out = _run(urls, cfg)
    assert (out.status == "success").all(), out.error_message.dropna().tolist()
    eps = 0.03  # server-side arrival times; the client schedules request starts
    # Crawl-delay 0.4 s is stricter than the host's 50/s rule: it wins
    assert min(_gaps(server.starts("delay.test"))) >= 0.4 - eps
    # suffix rule .example.test (4/s) for a.example.test; the exact host rule (2.5/s) beats it for b
    assert min(_gaps(server.starts("a.example.test"))) >= 0.25 - eps
    assert min(_gaps(server.starts("b.example.test"))) >= 0.4 - eps
    # 40/s: five requests well within the 2 s the default 2/s would take
    assert server.starts("fast.test")[-1] - server.starts("fast.test")[0] < 1.0
    assert out.loc["http://delay.test/img0.jpg", "politeness"] == "2.5/s by crawl-delay 0.4s"
    assert out.loc["http://a.example.test/img0.jpg", "politeness"] == "4/s by host_rps .example.test"
    assert out.loc["http://b.example.test/img0.jpg", "politeness"] == "2.5/s by host_rps b.example.test"
    assert out.loc["http://fast.test/img0.jpg", "politeness"] == "40/s by host_rps fast.test"


def test_crawl_delay_over_the_cap_ends_rows_without_requests(server: LogServer, cfg: DownloadConfig) -> None:
    out = _run(["http://bigdelay.test/a.jpg", "http://bigdelay.test/b.jpg"], cfg)
    assert (out.status == "error").all()
    assert {error_kind(m) for m in out.error_message} == {"crawl_delay"}
    assert server.starts("bigdelay.test") == []


def test_ai_txt_is_an_opt_out_source(server: LogServer, cfg: DownloadConfig) -> None:
    urls = ["http://ai.test/a.jpg", "http://ai.test/b.png", "http://ai.test/art/c.png", "http://ai.test/d.JPG?x=1"]
    out = _run(urls, cfg)
    assert out.loc["http://ai.test/b.png", "status"] == "success"
    for u in ("http://ai.test/a.jpg", "http://ai.test/art/c.png"):
        assert (out.loc[u, "status"], error_kind(out.loc[u, "error_message"])) == ("opt-out", "ai_txt")
    assert [p for p, _ in server.log["ai.test"]].count("/ai.txt") == 1  # once per host
    assert {p for p, _ in server.log["ai.test"]} == {"/robots.txt", "/ai.txt", "/b.png", "/d.JPG"}
    cfg.respect_ai_txt = False
    assert (_run(urls, cfg).status == "success").all()


def test_adaptive_backoff_halves_the_rate_after_503(server: LogServer, cfg: DownloadConfig) -> None:
    cfg.per_host_rps = 10.0
    cfg.per_host_concurrency = 1
    server.busy_503 = 1
    urls = [f"http://busy.test/{i}.jpg" for i in range(8)]
    out = _run(urls, cfg)
    assert (out.status == "success").all(), out.error_message.dropna().tolist()
    starts = server.starts("busy.test")
    assert len(starts) == 9  # one 503, then each URL once
    # before the 503: 10/s; after it: 5/s for the rest of the run
    assert min(_gaps(starts[1:])) >= 0.2 - 0.03
    assert all("backoff x0.5 (http_503)" in p for p in out.politeness)
    cfg.adaptive_backoff = False
    server.busy_503 = 1
    server.log.clear()
    _run(urls, cfg)
    assert min(_gaps(server.starts("busy.test")[2:])) < 0.2  # without back-off the pace stays 10/s


def test_adaptive_backoff_after_slow_answers(server: LogServer, cfg: DownloadConfig) -> None:
    cfg.per_host_rps, cfg.per_host_concurrency, cfg.slow_response_s = 20.0, 1, 0.15
    urls = [f"http://slowresp.test/{i}.jpg" for i in range(3)]
    out = _run(urls, cfg)
    assert (out.status == "success").all()
    # halved at least once (once per second at most: a slow machine may halve it twice)
    assert all(re.search(r"; backoff x0\.(5|25) \(slow 0\.\d+s\)$", p) for p in out.politeness), out.politeness.tolist()
    cfg.slow_response_s = 5.0
    assert (_run(urls, cfg).politeness == "20/s by default").all()


def test_rate_shares_divide_a_hosts_rate(server: LogServer, cfg: DownloadConfig) -> None:
    from crawlpairs.udfs.download.fetch import FetchPool

    cfg.per_host_rps = 10.0
    with FetchPool(cfg, rate_shares={"fast.test:80": 0.25}) as pool:
        got = dict(pool.map((i, f"http://fast.test/s{i}.jpg") for i in range(4)))
    assert {f.status for f in got.values()} == {"success"}
    assert min(_gaps(server.starts("fast.test"))) >= 0.4 - 0.03  # 10/s x 0.25 = 2.5/s
    assert got[0].politeness == "2.5/s by default; share 0.25"


def _split_host_run(server: LogServer, cfg: DownloadConfig, board: dict[str, str] | None) -> dict[str, pd.DataFrame]:
    """Two tasks fetch busy.test at half its 10/s each, at once; /a0.jpg (task a's first) answers 503."""
    from crawlpairs.udfs.download.task import fetch_records

    cfg.per_host_rps, cfg.per_host_concurrency = 10.0, 2
    server.log.clear()
    server.fail_once = {"/a0.jpg"}
    out: dict[str, pd.DataFrame] = {}

    def task(name: str) -> None:
        recs = iter([{"uid": f"{name}{i}", "url": f"http://busy.test/{name}{i}.jpg"} for i in range(16)])
        rows = list(fetch_records(recs, cfg, rate_shares={"busy.test:80": 0.5}, board=board))
        out[name] = pd.DataFrame(rows).set_index("uid")

    threads = [threading.Thread(target=task, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return out


def test_a_cut_of_a_split_host_slows_every_task_through_the_board(server: LogServer, cfg: DownloadConfig) -> None:
    from crawlpairs.udfs.download.board import Board

    with Board() as board:
        out = _split_host_run(server, cfg, board.spec())
        assert board.ceilings == {"busy.test:80": (5.0, "http_503")}  # task a: 5/s halved = the host at 5/s
    assert all((df.status == "success").all() for df in out.values())
    b_times = [t for p, t in server.log["busy.test"] if p.startswith("/b")]
    # task b ran at its 5/s share until the board's answer (one poll, 1 s), then at 2.5/s:
    # half of its share, as if it had been answered 503 itself
    assert min(_gaps(b_times[-5:])) >= 0.4 - 0.03, _gaps(b_times)
    assert min(_gaps(b_times[:4])) < 0.3
    shared = out["b"].politeness.str.fullmatch(r"2\.5/s by shared backoff 5/s for the host \(http_503\); share 0\.5")
    assert shared.sum() >= 6, out["b"].politeness.tolist()
    assert (out["a"].politeness.iloc[1:] == "2.5/s by default; backoff x0.5 (http_503); share 0.5").all()
    # without the board (a task alone, as before): b never slows down
    out = _split_host_run(server, cfg, None)
    b_times = [t for p, t in server.log["busy.test"] if p.startswith("/b")]
    assert max(_gaps(b_times)) < 0.3 and (out["b"].politeness == "5/s by default; share 0.5").all()


def test_a_shared_ceiling_and_own_cuts_combine() -> None:
    """The pacing arithmetic alone: a ceiling binds only when slower; a cut halves the pace the
    task actually runs at, on a limited host and on one with no limit of its own."""
    from crawlpairs.udfs.download.rates import HostRate

    r = HostRate(10.0, "default", share=0.5)  # 5/s for this task
    assert not r.adopt(20.0, "http_503", now=0.0) and r.interval() == pytest.approx(0.2)  # 10/s share: not slower
    assert r.adopt(4.0, "http_503", now=0.0) and r.interval() == pytest.approx(0.5)  # the host at 4/s: 2/s here
    assert not r.slow_down(0.5, "http_429", 0.05)  # within a second of the adopted cut
    assert r.slow_down(2.0, "http_429", 0.05) and r.interval() == pytest.approx(1.0)  # half of 2/s
    assert r.describe() == "1/s by default; backoff x0.2 (http_429); share 0.5"
    u = HostRate(0.0, "default", share=0.5)  # no limit of its own
    assert u.interval() == 0 and u.adopt(4.0, "http_503", now=0.0) and u.interval() == pytest.approx(0.5)
    assert u.slow_down(2.0, "http_503", 0.05) and u.interval() == pytest.approx(1.0)
    assert 1.0 / (u.interval() * u.share) == pytest.approx(2.0)  # what goes to the board


def test_the_board_is_advice_only(server: LogServer, cfg: DownloadConfig) -> None:
    """Wrong token, oversized or broken requests are refused; an unreachable board fails no row."""
    import http.client
    import json
    import socket

    from crawlpairs.udfs.download.board import Board, BoardClient

    with Board() as board:
        host, port = board.address.split(":")

        def post(body: bytes, length: int | None = None) -> int:
            c = http.client.HTTPConnection(host, int(port), timeout=5)
            c.request("POST", "/v1/sync", body, {"Content-Length": str(len(body) if length is None else length)})
            return c.getresponse().status

        assert post(json.dumps({"token": "x", "cuts": {"h:80": [0.1, "evil"]}}).encode()) == 403
        assert post(b"{not json") == 400
        assert post(json.dumps({"token": board.token, "cuts": {"h:80": "fast"}}).encode()) == 400
        assert post(b"{}", length=-5) == 413
        assert post(b"{}", length=2 << 20) == 413  # refused on its header, before any read
        assert board.ceilings == {}
        client = BoardClient(board.spec())
        client.report("h:80", 4.0, "http_429")
        client.report("h:80", 8.0, "slow")  # a higher rate never raises a ceiling
        client.sync()
        assert board.ceilings == {"h:80": (4.0, "http_429")} and client.failed == 0
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = {"address": f"127.0.0.1:{s.getsockname()[1]}", "token": "t"}
    out = _split_host_run(server, cfg, dead)
    assert all((df.status == "success").all() for df in out.values())
    # task a still cuts its own rate; b cannot learn of it
    assert (out["a"].politeness.iloc[1:] == "2.5/s by default; backoff x0.5 (http_503); share 0.5").all()


def test_a_board_that_cannot_listen_is_no_reason_to_fail() -> None:
    """A driver address this machine does not have (TEST-NET-3): the stage runs without a board."""
    import contextlib
    from types import SimpleNamespace

    from crawlpairs.jobs.download import DownloadStage

    conf = {"spark.driver.host": "203.0.113.7"}
    stub = SimpleNamespace(sparkContext=SimpleNamespace(getConf=lambda: conf))  # only the conf is read
    assert isinstance(DownloadStage.board(stub), contextlib.nullcontext)
    conf["spark.driver.host"] = "127.0.0.1"
    with DownloadStage.board(stub) as board:
        assert board.address.startswith("127.0.0.1:")


def test_the_job_shares_cuts_between_the_tasks_of_a_split_host(spark, server: LogServer, cfg: DownloadConfig,
                                                               tmp_path: Path) -> None:
    """The real stage on local Spark: the plan splits busy.test over both tasks, one 503 halves
    the host's whole rate (the driver's board), and the stage stats name the shared cut."""
    from crawlpairs.config import Config
    from crawlpairs.jobs.download import DownloadStage
    from crawlpairs.stage import run_stage

    (tmp_path / "in").mkdir()
    urls = [f"http://busy.test/r{i}.jpg" for i in range(40)]
    pd.DataFrame({"uid": [f"{i:032x}" for i in range(40)], "url": urls, "text": "t"}).to_parquet(
        tmp_path / "in" / "part-0.parquet")
    cfg.per_host_rps, cfg.per_host_concurrency, cfg.partitions, cfg.shard_size = 10.0, 2, 2, 10
    server.busy_503 = 1  # the host's first image request, in whichever task sends it
    conf = Config(input=[str(tmp_path / "in")], output=str(tmp_path / "out"))
    conf.download = cfg
    stats = run_stage(DownloadStage, conf, spark=spark)
    plan = json.loads((tmp_path / "out" / "images_meta" / "plan.json").read_text())
    assert plan["big_hosts"]["busy.test:80"]["k"] == 2
    board = stats.extra["backoff_board"]
    assert board["calls"] > 0 and set(board["shared_cuts"]) == {"busy.test:80"}
    meta = pd.concat([pd.read_parquet(p) for p in (tmp_path / "out" / "images").glob("*.parquet")])
    assert len(meta) == 40 and (meta.download_status == "success").all()
    assert meta.politeness.str.contains("by shared backoff").sum() >= 5, meta.politeness.tolist()


def test_rule_precedence_and_file_form(tmp_path: Path) -> None:
    f = tmp_path / "rates.txt"
    f.write_text("# pattern rps\n.example.com 3\n*.cdn.example.com 30\nimg.example.com 9\nstatic.*.org 7\n")
    cfg = DownloadConfig(per_host_rps=1.0, host_rps_file=str(f), host_rps={"img.example.com": 11.0})
    r = RateRules.from_config(cfg)
    assert r.lookup("img.example.com") == (11.0, "host_rps img.example.com")  # table beats file, exact first
    assert r.lookup("a.cdn.example.com") == (30.0, "host_rps *.cdn.example.com")  # more specific pattern
    assert r.lookup("example.com") == (3.0, "host_rps .example.com")  # suffix covers the domain itself
    assert r.lookup("www.example.com.") == (3.0, "host_rps .example.com")
    assert r.lookup("static.foo.org") == (7.0, "host_rps static.*.org")
    assert r.lookup("example.net") == (1.0, "default")
    idn = RateRules(1.0, {"Bücher.de": 4.0, ".ＥＸＡＭＰＬＥ.org": 6.0})  # compared as requested: punycode
    assert idn.lookup("xn--bcher-kva.de") == (4.0, "host_rps xn--bcher-kva.de")
    assert idn.lookup("img.example.org") == (6.0, "host_rps .example.org")
    # the planner's view: host keys of normalised URLs, the same rules
    from crawlpairs.udfs.download.fetch import host_key, host_rate

    assert host_key("HTTP://Img.EXAMPLE.com:443/a b.jpg") == "img.example.com:443"
    assert host_key("https://①②⑦.0.0.1/x") == "127.0.0.1:443" and host_key("http://[0:0::1]/") == "[::1]:80"
    assert host_key("not a url") == ""
    assert host_rate(cfg, host_key("https://img.example.com/a.jpg")) == 11.0
    assert host_rate(cfg, "www.example.com") == 3.0
    f.write_text("ok.com 2\nbad line here\n")
    with pytest.raises(ConfigError, match="host-rps-file .* line 2"):
        RateRules.from_config(DownloadConfig(host_rps_file=str(f)))
    with pytest.raises(ConfigError, match="--host-rps x.com=-1"):
        RateRules.from_config(DownloadConfig(host_rps={"x.com": -1.0}))


def test_rules_from_toml_table_and_flag(tmp_path: Path) -> None:
    from crawlpairs import config

    toml = tmp_path / "run.toml"
    toml.write_text('[download]\nper_host_rps = 1.5\n\n[download.host_rps]\n'
                    '"upload.wikimedia.org" = 20\n".staticflickr.com" = 10\n"*.pinimg.com" = 8\n')
    cfg = config.load(toml)
    r = RateRules.from_config(cfg.download)
    assert r.lookup("upload.wikimedia.org") == (20.0, "host_rps upload.wikimedia.org")
    assert r.lookup("live.staticflickr.com") == (10.0, "host_rps .staticflickr.com")
    assert r.lookup("i.pinimg.com") == (8.0, "host_rps *.pinimg.com")
    assert r.lookup("example.org") == (1.5, "default")
    cli = config.load(toml, {"download": {"host_rps": "a.example=3,.b.example=0"}})  # as --host-rps parses it
    assert cli.download.host_rps == {"a.example": 3.0, ".b.example": 0.0}
    with pytest.raises(ConfigError, match="download.host_rps"):
        config.load(None, {"download": {"host_rps": "a.example=fast"}})
