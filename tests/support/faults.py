"""Real servers that fail on purpose: the transient faults every long crawl job meets.

Two pieces, both on 127.0.0.1 with free ports, both real sockets (clients in other
processes, Spark executors included, see the same faults):

- `FaultHTTPServer(root)`: serves the files under `root` over HTTP/1.1 with HEAD and
  Range support (what fsspec's HTTP reader and a CDN speak).
- `FaultProxy(upstream)`: a TCP proxy in front of an HTTP server such as SeaweedFS's S3
  port; point `StorageConfig.s3_endpoint` at `proxy.endpoint`.

Faults are scripted per file (server: the file name; proxy: a substring of the request
path, usually the object key) and consumed one per matching GET, in order (`ok()`
serves one GET normally, to aim a fault at a later range request):

    server.inject("a.wat.gz", faults.status(503))              # first GET: 503, then fine
    server.inject("b.wat.gz", faults.cut(0.5))                 # first GET: reset halfway through the body
    server.inject("c.wat.gz", faults.status(429, retry_after=1), faults.stall(3))
    proxy.inject("b.wat.gz", faults.status(503), every=True)    # every GET: 503 SlowDown

`cut(at)` sends the headers and `at` (a fraction of the body) and then resets the
connection (`reset=False`: closes it cleanly, a short body); `stall(seconds, at)` sends
that much and then goes quiet for `seconds`; `status(code)` answers with that status
(an S3-style XML error `s3_code` from the proxy, `Retry-After` when given). Only GETs
are faulted unless `inject(..., methods=("GET", "HEAD"))`. `.log` lists every request as (method, path, range header,
fault kind or "").

Uploads (the proxy, `methods=("PUT",)`): on a request with a body, `status(code)` answers
after reading the body (at once under `Expect: 100-continue`, as S3 does), and `cut(at)`
forwards that fraction of the body upstream, then resets both connections: the server
sees an upload that stops short, the client a reset mid-upload.
"""

from __future__ import annotations

import contextlib
import http.server
import socket
import struct
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

from support.servers import free_port


@dataclass(frozen=True)
class Fault:
    kind: str  # ok | status | cut | stall
    code: int = 503
    retry_after: float | None = None
    s3_code: str = "SlowDown"
    at: float = 0.5  # fraction of the body sent before a cut or a stall
    seconds: float = 0.0  # stall length
    reset: bool = True  # a cut ends with RST (connection reset), else with FIN (short body)


def ok() -> Fault:
    """A GET served normally (to aim the next fault at a later GET)."""
    return Fault("ok")


def status(code: int = 503, retry_after: float | None = None, s3_code: str = "SlowDown") -> Fault:
    return Fault("status", code=code, retry_after=retry_after, s3_code=s3_code)


def cut(at: float = 0.5, reset: bool = True) -> Fault:
    return Fault("cut", at=at, reset=reset)


def stall(seconds: float, at: float = 0.5) -> Fault:
    return Fault("stall", at=at, seconds=seconds)


class _Script:
    """Faults per key, consumed by matching requests; thread-safe."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.queues: dict[str, list[Fault]] = {}
        self.always: dict[str, Fault] = {}
        self.methods: dict[str, tuple[str, ...]] = {}
        self.log: list[tuple[str, str, str, str]] = []

    def inject(self, key: str, *faults: Fault, every: bool = False, methods: tuple[str, ...] = ("GET",)) -> None:
        with self.lock:
            self.methods[key] = methods
            if every:
                self.always[key] = faults[0]
            else:
                self.queues.setdefault(key, []).extend(faults)

    def clear(self) -> None:
        with self.lock:
            self.queues.clear()
            self.always.clear()

    def take(self, method: str, path: str, rng: str) -> Fault | None:
        with self.lock:
            fault = None
            for key, f in self.always.items():
                if key in path and method in self.methods.get(key, ("GET",)):
                    fault = f
                    break
            else:
                for key, queue in self.queues.items():
                    if key in path and queue and method in self.methods.get(key, ("GET",)):
                        fault = queue.pop(0)
                        break
            if fault is not None and fault.kind == "ok":
                fault = None
            self.log.append((method, path, rng, fault.kind if fault else ""))
            return fault


def _reset(sock: socket.socket) -> None:
    """Close with RST: the peer sees ECONNRESET, as from a dropped connection."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _HTTPServer

    def log_message(self, *args) -> None:  # quiet
        pass

    def _serve(self, body: bool) -> None:
        owner = self.server.owner
        name = unquote(self.path.split("?", 1)[0]).lstrip("/")
        rng = self.headers.get("Range", "")
        fault = owner.script.take(self.command, name, rng)
        path = owner.root / name
        if fault is not None and fault.kind == "status":
            self.send_response(fault.code)
            if fault.retry_after is not None:
                self.send_header("Retry-After", str(int(fault.retry_after)))
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if ".." in name.split("/") or not path.is_file():
            self.send_error(404)
            return
        size = path.stat().st_size
        start, end = 0, size - 1
        if rng.startswith("bytes="):
            a, _, b = rng[6:].partition("-")
            if a:
                start = int(a)
                end = min(int(b), size - 1) if b else size - 1
            else:  # suffix range
                start = max(0, size - int(b))
            if start >= size:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        else:
            self.send_response(200)
        length = end - start + 1
        self.send_header("Content-Length", str(length))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()
        if not body:
            return
        with open(path, "rb") as fh:
            fh.seek(start)
            data = fh.read(length)
        if fault is None:
            self.wfile.write(data)
            return
        self.wfile.write(data[: int(length * fault.at)])
        self.wfile.flush()
        if fault.kind == "stall":
            time.sleep(fault.seconds)
        self.close_connection = True
        if fault.kind == "cut" and fault.reset:
            _reset(self.connection)
        else:
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)

    def do_GET(self) -> None:
        self._serve(True)

    def do_HEAD(self) -> None:
        self._serve(False)


class _HTTPServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    owner: FaultHTTPServer


class FaultHTTPServer:
    """The files under `root` over HTTP on 127.0.0.1, with scripted faults (see module doc)."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self.script = _Script()
        self.port = 0
        self._server: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def log(self) -> list[tuple[str, str, str, str]]:
        return self.script.log

    def inject(self, name: str, *faults: Fault, every: bool = False, methods: tuple[str, ...] = ("GET",)) -> None:
        self.script.inject(name, *faults, every=every, methods=methods)

    def url(self, name: str = "") -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def start(self) -> FaultHTTPServer:
        self._server = _HTTPServer(("127.0.0.1", 0), _Handler)
        self._server.owner = self
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="fault-http", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def __enter__(self) -> FaultHTTPServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _read_head(sock: socket.socket) -> tuple[bytes, bytes] | None:
    """Read up to the end of an HTTP header block: (head, bytes already read after it)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return None
        data += chunk
        if len(data) > 1 << 20:
            return None
    i = data.index(b"\r\n\r\n") + 4
    return data[:i], data[i:]


def _header(headers: list[str], name: str) -> str | None:
    """The value of header `name` (lower case) in a list of raw header lines."""
    for ln in headers:
        key, _, value = ln.partition(":")
        if key.strip().lower() == name:
            return value.strip()
    return None


def _drain(sock: socket.socket, n: int) -> None:
    """Read and drop `n` more bytes of a request body (so the client reads our answer, not a reset)."""
    while n > 0:
        chunk = sock.recv(min(n, 65536))
        if not chunk:
            return
        n -= len(chunk)


def _pump(src: socket.socket, dst: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while chunk := src.recv(65536):
            dst.sendall(chunk)
    with contextlib.suppress(OSError):
        dst.shutdown(socket.SHUT_WR)


class FaultProxy:
    """A TCP proxy in front of `upstream` (http://127.0.0.1:PORT) that injects faults.

    Each client connection carries one request (the proxy asks upstream for
    `Connection: close`), so a fault hits exactly the request it was scripted for.
    """

    def __init__(self, upstream: str) -> None:
        host, _, port = upstream.split("://", 1)[-1].rstrip("/").partition(":")
        self.upstream = (host, int(port or 80))
        self.script = _Script()
        self.port = 0
        self._sock: socket.socket | None = None
        self._stop = threading.Event()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> list[tuple[str, str, str, str]]:
        return self.script.log

    def inject(self, key: str, *faults: Fault, every: bool = False, methods: tuple[str, ...] = ("GET",)) -> None:
        self.script.inject(key, *faults, every=every, methods=methods)

    def start(self) -> FaultProxy:
        self.port = free_port()
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", self.port))
        self._sock.listen(64)
        threading.Thread(target=self._accept, name="fault-proxy", daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _accept(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                client, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(client,), daemon=True).start()

    def _handle(self, client: socket.socket) -> None:
        try:
            got = _read_head(client)
            if got is None:
                client.close()
                return
            head, rest = got
            lines = head.decode("latin-1").split("\r\n")
            method, path = lines[0].split(" ")[:2]
            headers = [ln for ln in lines[1:] if ln and not ln.lower().startswith(("connection:", "keep-alive:"))]
            rng = next((ln.split(":", 1)[1].strip() for ln in headers if ln.lower().startswith("range:")), "")
            fault = self.script.take(method, unquote(path.split("?", 1)[0]), rng)
            sent = _header(headers, "content-length")
            if fault is not None and sent and int(sent) > 0:  # an upload (PUT, POST): fault the request body
                self._fault_upload(client, lines[0], headers, rest, int(sent), fault)
                return
            if fault is not None and fault.kind == "status":
                self._answer(client, fault)
                return
            up = socket.create_connection(self.upstream, timeout=30)
            up.sendall(("\r\n".join([lines[0], *headers, "Connection: close"]) + "\r\n\r\n").encode("latin-1") + rest)
            threading.Thread(target=_pump, args=(client, up), daemon=True).start()
            if fault is None:
                _pump(up, client)
                client.close()
                up.close()
                return
            resp = _read_head(up)
            if resp is None:
                _reset(client)
                return
            rhead, body = resp
            clen = 0
            for ln in rhead.decode("latin-1").split("\r\n"):
                if ln.lower().startswith("content-length:"):
                    clen = int(ln.split(":", 1)[1])
            keep = int(clen * fault.at)
            while len(body) < keep:
                chunk = up.recv(65536)
                if not chunk:
                    break
                body += chunk
            client.sendall(rhead + body[:keep])
            if fault.kind == "stall":
                time.sleep(fault.seconds)
            up.close()
            if fault.kind == "cut" and fault.reset:
                _reset(client)
            else:
                with contextlib.suppress(OSError):
                    client.shutdown(socket.SHUT_RDWR)
                client.close()
        except OSError:
            _reset(client)

    def _fault_upload(self, client: socket.socket, request: str, headers: list[str], rest: bytes, size: int,
                      fault: Fault) -> None:
        """A fault on a request with a body: `status` answers once the body is in (or at once, under
        `Expect: 100-continue`); `cut`/`stall` forward `at` of the body upstream, then reset (or stall)."""
        expect = (_header(headers, "expect") or "").lower() == "100-continue"
        if fault.kind == "status":
            if not expect:
                _drain(client, size - len(rest))
            self._answer(client, fault)
            return
        if expect:  # we answer the 100 ourselves: upstream must see a request that simply stops
            headers = [ln for ln in headers if not ln.lower().startswith("expect:")]
            client.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        keep = int(size * fault.at)
        body = rest
        while len(body) < keep:
            chunk = client.recv(65536)
            if not chunk:
                break
            body += chunk
        up = socket.create_connection(self.upstream, timeout=30)
        try:
            up.sendall(("\r\n".join([request, *headers, "Connection: close"]) + "\r\n\r\n").encode("latin-1")
                       + body[:keep])
            if fault.kind == "stall":
                time.sleep(fault.seconds)
        finally:
            _reset(up)  # upstream sees the upload end short: it must not store it
        if fault.kind == "cut" and not fault.reset:
            with contextlib.suppress(OSError):
                client.shutdown(socket.SHUT_RDWR)
            client.close()
        else:
            _reset(client)

    @staticmethod
    def _answer(client: socket.socket, fault: Fault) -> None:
        body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{fault.s3_code}</Code>'
                f"<Message>injected by tests/support/faults.py</Message></Error>").encode()
        reason = {503: "Slow Down", 500: "Internal Server Error", 429: "Too Many Requests"}.get(fault.code, "Error")
        head = [f"HTTP/1.1 {fault.code} {reason}", "Content-Type: application/xml",
                f"Content-Length: {len(body)}", "Connection: close"]
        if fault.retry_after is not None:
            head.append(f"Retry-After: {int(fault.retry_after)}")
        client.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        with contextlib.suppress(OSError):
            client.shutdown(socket.SHUT_RDWR)
        client.close()



def write_zero_bomb(out, head: bytes, size: int) -> int:
    """Write one gzip member holding `head` then `size` zero bytes (a multiple of 1 MiB);
    returns the member's length. Streamed: a 10 GiB member costs ~10 MB and no memory,
    because every 1 MiB block of zeros compresses (after a full flush) to the same bytes."""
    import zlib

    mib = 1 << 20
    assert size % mib == 0
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    first = c.compress(head) + c.flush(zlib.Z_FULL_FLUSH)
    zeros = bytes(mib)
    block = c.compress(zeros) + c.flush(zlib.Z_FULL_FLUSH)
    again = c.compress(zeros) + c.flush(zlib.Z_FULL_FLUSH)
    assert block == again
    crc = zlib.crc32(head)
    for _ in range(size // mib):
        crc = zlib.crc32(zeros, crc)
    n = out.write(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff" + first)
    for _ in range(size // mib):
        n += out.write(block)
    n += out.write(c.flush(zlib.Z_FINISH) + struct.pack("<II", crc, (len(head) + size) & 0xFFFFFFFF))
    return n


def executor_pids(cluster) -> list[int]:
    """Executor JVMs the workers of a `StandaloneSpark` launched (children of the worker JVMs it started):
    SIGKILL one to lose an executor mid-job."""
    workers = {p.pid for p in cluster.procs[1:]}
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            cmd = (entry / "cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            continue
        if ppid in workers and b"CoarseGrainedExecutorBackend" in cmd:
            found.append(int(entry.name))
    return found
