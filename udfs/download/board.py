"""The back-off board: adaptive back-off shared by the tasks that split a host.

The planner spreads a big host over K tasks, each with 1/K of the host's rate. When one
of them is throttled (429/503, slow answers) and halves its own rate, the host as a whole
must slow down, not only that task's part. So the driver runs this small HTTP service for
the fetch phase; a task that cuts a split host's rate reports the host's new global rate,
and every task fetching that host reads the lowest rate reported and paces its share of it.

- Driver: `Board` (stdlib ThreadingHTTPServer on the address executors already use to
  reach the driver, `spark.driver.host`), one POST route, a random token per run.
- Task: `BoardClient`, a daemon thread that sends a cut as soon as it is made and every
  `POLL_S` seconds reads the ceilings of its split hosts. The fetch loop only reads
  and writes dicts, so it never waits on the network.
- The board is advice: if it cannot be reached, each task keeps its own back-off and
  logs how many calls failed; no row fails because of it.
"""

from __future__ import annotations

import hmac
import http.client
import json
import logging
import math
import secrets
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

POLL_S = 1.0  # how often a task exchanges cuts and ceilings with the board
TIMEOUT_S = 2.0  # one call to the board
MAX_BODY = 1 << 20  # a request larger than this is refused (a task reports a few hosts)

log = logging.getLogger(__name__)


class Board:
    """Driver side: host -> (lowest global rps reported, why). Use as a context manager."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.token = secrets.token_hex(16)
        self.ceilings: dict[str, tuple[float, str]] = {}
        self.calls = 0
        self._lock = threading.Lock()
        board = self

        class Handler(BaseHTTPRequestHandler):
            timeout = 2 * TIMEOUT_S  # a client that stops sending does not hold a thread

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                try:
                    size = int(self.headers.get("Content-Length") or 0)
                except ValueError:
                    size = -1
                if not 0 < size <= MAX_BODY:
                    return self._send(413, {})
                try:
                    doc = json.loads(self.rfile.read(size))
                    if not hmac.compare_digest(str(doc.get("token", "")), board.token):
                        return self._send(403, {})
                    answer = board.sync(dict(doc.get("cuts") or {}), [str(h) for h in doc.get("hosts") or []])
                except (ValueError, TypeError, AttributeError):  # not JSON, or not the shape a task sends
                    return self._send(400, {})
                self._send(200, answer)

            def _send(self, code: int, doc: dict[str, Any]) -> None:
                body = json.dumps(doc).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:  # no access log on the driver's stderr
                pass

        server_class = ThreadingHTTPServer
        if ":" in host.strip("[]"):  # an IPv6 driver address
            server_class = type("ThreadingHTTPServer6", (ThreadingHTTPServer,), {"address_family": socket.AF_INET6})
        host = host.strip("[]")
        self.server = server_class((host, 0), Handler)
        self.server.daemon_threads = True
        self.address = f"[{host}]:{self.server.server_address[1]}" if ":" in host else \
            f"{host}:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, name="crawlpairs-board", daemon=True)

    def sync(self, cuts: dict[str, Any], hosts: list[str]) -> dict[str, Any]:
        """Record the cuts (host -> [global rps, why]); answer the ceilings of `hosts`."""
        with self._lock:
            self.calls += 1
            for host, (rps, why) in cuts.items():
                rps = float(rps)
                old = self.ceilings.get(host)
                if rps > 0 and math.isfinite(rps) and (old is None or rps < old[0]):
                    self.ceilings[str(host)] = (rps, str(why)[:200])
            return {h: list(self.ceilings[h]) for h in hosts if h in self.ceilings}

    def spec(self) -> dict[str, str]:
        """What a task needs to reach the board (goes into the task's closure)."""
        return {"address": self.address, "token": self.token}

    def __enter__(self) -> Board:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=10)


class BoardClient:
    """Task side: report cuts, learn ceilings, in a background thread (see module docstring)."""

    def __init__(self, spec: dict[str, str], poll_s: float = POLL_S) -> None:
        host, _, port = spec["address"].rpartition(":")
        self.host, self.port, self.token = host.strip("[]"), int(port), spec["token"]
        self.hosts: dict[str, None] = {}  # the split hosts this task has started on
        self.poll_s = poll_s
        self.ceilings: dict[str, tuple[float, str]] = {}  # read by the fetch loop
        self.failed = 0  # calls that did not get an answer
        self._cuts: dict[str, tuple[float, str]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()  # a new cut is sent at once, not at the next poll
        self._thread = threading.Thread(target=self._run, name="crawlpairs-board-client", daemon=True)

    def watch(self, host: str) -> None:
        """Ask for this host's ceiling from the next exchange on."""
        self.hosts[host] = None

    def report(self, host: str, global_rps: float, why: str) -> None:
        """A cut made in this task: the host's whole rate should now be at most `global_rps`."""
        with self._lock:
            old = self._cuts.get(host)
            if old is None or global_rps < old[0]:
                self._cuts[host] = (global_rps, why)
        old = self.ceilings.get(host)
        if old is None or global_rps < old[0]:
            self.ceilings[host] = (global_rps, why)
        self._wake.set()

    def sync(self) -> None:
        """One exchange with the board (the thread calls this every `poll_s`)."""
        with self._lock:
            cuts, self._cuts = self._cuts, {}
        hosts = list(self.hosts)
        if not hosts and not cuts:
            return
        body = json.dumps({"token": self.token, "cuts": cuts, "hosts": hosts}).encode()
        try:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=TIMEOUT_S)
            try:
                conn.request("POST", "/v1/sync", body, {"Content-Type": "application/json"})
                resp = conn.getresponse()
                answer = json.loads(resp.read(MAX_BODY)) if resp.status == 200 else None
            finally:
                conn.close()
        except (OSError, ValueError, http.client.HTTPException):
            answer = None
        if answer is None:
            self.failed += 1
            with self._lock:  # send them again next time
                for h, c in cuts.items():
                    if h not in self._cuts or c[0] < self._cuts[h][0]:
                        self._cuts[h] = c
            return
        for h, (rps, why) in answer.items():
            old = self.ceilings.get(h)
            if old is None or float(rps) < old[0]:
                self.ceilings[h] = (float(rps), str(why))

    def _run(self) -> None:
        while True:
            self._wake.wait(self.poll_s)
            self._wake.clear()
            if self._stop.is_set():
                return
            self.sync()

    def __enter__(self) -> BoardClient:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=TIMEOUT_S + 1)
        if self._cuts:
            self.sync()  # the last cuts still help tasks that are running
        if self.failed:
            log.warning("back-off board %s:%d: %d calls got no answer; this task's cuts stayed its own",
                        self.host, self.port, self.failed)

