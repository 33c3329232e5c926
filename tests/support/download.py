"""A real HTTP server on loopback for the download tests, plus a canary listener.

One aiohttp server on 127.0.0.1:PORT routes by Host header, so the many hostnames
of a test (www.archive.org, photos.test, hostile.test ...) all map to it through the
download config's `resolve_overrides`. It serves:
  - the 55 image responses inside aut-example.warc.gz at their original URLs' paths;
  - the photos in shared/data/images under http://photos.test/<dir>/<file>;
  - hostile endpoints under http://hostile.test/ (see HOSTILE below).
The canary is a bare TCP listener on a second port that is never on the allow-list:
it counts connections, and every test asserts it saw none.
"""

from __future__ import annotations

import asyncio
import io
import threading
import time
import zlib
from collections import Counter
from pathlib import Path
from struct import pack

from aiohttp import web
from fastwarc.warc import ArchiveIterator, WarcRecordType
from PIL import Image


def warc_images(warc: Path) -> dict[str, tuple[bytes, str]]:
    """Original URL -> (body, content type) for every image response in the WARC."""
    out: dict[str, tuple[bytes, str]] = {}
    with open(warc, "rb") as fh:
        for r in ArchiveIterator(fh, record_types=WarcRecordType.response):
            h = r.http_headers
            if h is None or not (h.get("Content-Type") or "").startswith("image/"):
                continue
            out[r.headers.get("WARC-Target-URI")] = (r.reader.read(), h.get("Content-Type"))
    return out


def png_bomb(width: int = 30000, height: int = 30000) -> bytes:
    """A tiny PNG whose header declares width x height 1-bit pixels (all zero)."""
    def chunk(tag: bytes, data: bytes) -> bytes:
        return pack(">I", len(data)) + tag + data + pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)
    row = b"\x00" + b"\x00" * ((width + 7) // 8)
    raw = zlib.compress(row * height, 9)
    ihdr = pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")


def jpeg_bytes(path: Path) -> bytes:
    im = Image.open(path).convert("RGB")
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=90)
    return buf.getvalue()


class Canary:
    """Counts every TCP connection made to it (and answers nothing useful)."""

    def __init__(self) -> None:
        self.connections = 0
        self.port = 0

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nSECRET")
        await writer.drain()
        writer.close()


class ImageServer:
    def __init__(self, shared_data: Path) -> None:
        self.shared = shared_data
        self.warc = warc_images(shared_data / "warc" / "aut-example.warc.gz")
        self.by_host_path = {}
        for url, val in self.warc.items():
            from urllib.parse import urlsplit

            p = urlsplit(url)
            self.by_host_path[(p.hostname, p.path + (("?" + p.query) if p.query else ""))] = val
        self.photos = {f"/{p.parent.name}/{p.name}": p for p in sorted((shared_data / "images").glob("*/*"))
                       if p.suffix in (".jpg", ".png")}
        self.requests: list[tuple[str, str]] = []
        self.hits: Counter[str] = Counter()
        self.user_agents: set[str] = set()
        self.canary = Canary()
        self.robots_redirects: dict[str, str] = {}  # host -> Location its robots.txt redirects to
        self.ai_txt_redirects: dict[str, str] = {}  # host -> Location its ai.txt redirects to
        self.port = 0
        self.secret = jpeg_bytes(shared_data / "images" / "skimage" / "astronaut.png")  # served with opt-outs
        self.listed = jpeg_bytes(shared_data / "images" / "skimage" / "coffee.png")  # on the hash blocklist
        self.ok_photo = jpeg_bytes(shared_data / "images" / "skimage" / "rocket.jpg")
        self.bomb = png_bomb()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    # -- routing -------------------------------------------------------------------
    def overrides(self) -> dict[str, str]:
        hosts = {h for h, _ in self.by_host_path} | {
            "photos.test", "hostile.test", "norobots.test", "robots503.test", "dnt.test", "sub.dnt.test"}
        o = {h: f"127.0.0.1:{self.port}" for h in hosts}
        o["canary.test"] = f"127.0.0.1:{self.canary.port}"
        o["rebind.test"] = "169.254.169.254"
        return o

    def allow(self) -> list[str]:
        return [f"127.0.0.1:{self.port}"]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        host = (request.host or "").split(":")[0].lower()
        path = request.path_qs
        self.requests.append((host, path))
        self.hits[f"{host}{path}"] += 1
        self.user_agents.add(request.headers.get("User-Agent", ""))
        if path == "/ai.txt" and host in self.ai_txt_redirects:
            return web.Response(status=302, headers={"Location": self.ai_txt_redirects[host]})
        if path == "/robots.txt":
            if host in self.robots_redirects:
                return web.Response(status=302, headers={"Location": self.robots_redirects[host]})
            if host == "norobots.test":
                return web.Response(text="User-agent: *\nAllow: /\n\nUser-agent: crawlpairs\nDisallow: /private/\n")
            if host == "robots503.test":
                return web.Response(status=503)
            if host == "rebind.example":  # close the connection so the next request must resolve again
                resp = web.Response(status=404)
                resp.force_close()
                return resp
            return web.Response(status=404)
        if (host, path) in self.by_host_path:
            body, ctype = self.by_host_path[(host, path)]
            return web.Response(body=body, content_type=ctype.split(";")[0])
        if host == "photos.test" and path in self.photos:
            p = self.photos[path]
            return web.Response(body=p.read_bytes(), content_type="image/png" if p.suffix == ".png" else "image/jpeg")
        if host in ("norobots.test", "robots503.test"):
            return web.Response(body=self.ok_photo, content_type="image/jpeg")
        if host in ("dnt.test", "sub.dnt.test"):
            return web.Response(body=self.secret, content_type="image/jpeg")
        if host == "hostile.test":
            return await self.hostile(request, path)
        return web.Response(status=404)

    async def hostile(self, request: web.Request, path: str) -> web.StreamResponse:
        jpeg = "image/jpeg"
        name = path.lstrip("/").split("?")[0]
        if name == "noai.jpg":
            return web.Response(body=self.secret, content_type=jpeg, headers={"X-Robots-Tag": "noai"})
        if name == "noimageai-agent.jpg":
            return web.Response(body=self.secret, content_type=jpeg,
                                headers={"X-Robots-Tag": "googlebot: noindex, crawlpairs: noimageai"})
        if name == "otherbot-noai.jpg":  # addressed to someone else: we may fetch it
            return web.Response(body=self.ok_photo, content_type=jpeg, headers={"X-Robots-Tag": "otherbot: noai"})
        if name == "tdm.jpg":
            return web.Response(body=self.secret, content_type=jpeg, headers={"tdm-reservation": "1"})
        if name == "listed.jpg":
            return web.Response(body=self.listed, content_type=jpeg)
        if name == "retry-once.jpg":  # 429 on every odd request: each test's client sees one 429, then the image
            if self.hits[f"hostile.test{path}"] % 2 == 1:
                return web.Response(status=429, headers={"Retry-After": "1"})
            return web.Response(body=self.ok_photo, content_type=jpeg)
        if name == "flaky.jpg":  # 500 on the first request of each distinct URL, then the image
            if self.hits[f"hostile.test{path}"] == 1:
                return web.Response(status=500)
            return web.Response(body=self.ok_photo, content_type=jpeg)
        if name == "always-429.jpg":
            return web.Response(status=429, headers={"Retry-After": "1"})
        if name == "slow.jpg":
            resp = web.StreamResponse(headers={"Content-Type": jpeg, "Content-Length": str(len(self.ok_photo))})
            await resp.prepare(request)
            for i in range(0, len(self.ok_photo), 16):
                await resp.write(self.ok_photo[i:i + 16])
                await asyncio.sleep(0.25)
            return resp
        if name == "loop":
            return web.Response(status=302, headers={"Location": "/loop"})
        if name == "to-metadata":
            return web.Response(status=302, headers={"Location": "http://169.254.169.254/latest/meta-data/"})
        if name == "to-canary":
            return web.Response(status=301, headers={"Location": f"http://127.0.0.1:{self.canary.port}/x.jpg"})
        if name == "to-canary-host":
            return web.Response(status=307, headers={"Location": "http://canary.test/x.jpg"})
        if name == "redirect-to":  # Location taken from the query: ?to=<url>
            return web.Response(status=302, headers={"Location": request.query["to"]})
        if name == "to-photo":
            return web.Response(status=302, headers={"Location": "http://photos.test/sklearn/china.jpg"})
        if name == "huge.jpg":
            resp = web.StreamResponse(headers={"Content-Type": jpeg, "Content-Length": str(10 * 1024**3)})
            await resp.prepare(request)
            try:
                for _ in range(50):
                    await resp.write(b"\xff" * 65536)
            except (ConnectionError, asyncio.CancelledError):
                pass
            return resp
        if name == "bomb.png":
            return web.Response(body=self.bomb, content_type="image/png")
        if name == "html.jpg":
            return web.Response(body=b"<html><body>" + b"not an image " * 800 + b"</body></html>",
                                content_type=jpeg)
        if name == "truncated.jpg":
            return web.Response(body=self.ok_photo[: len(self.ok_photo) // 2], content_type=jpeg)
        if name == "500.jpg":
            return web.Response(status=500)
        if name == "404.jpg":
            return web.Response(status=404)
        return web.Response(status=404)

    # -- lifecycle -----------------------------------------------------------------
    async def _start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]
        self._canary_srv = await asyncio.start_server(self.canary._handle, "127.0.0.1", 0)
        self.canary.port = self._canary_srv.sockets[0].getsockname()[1]

    async def _stop(self) -> None:
        self._canary_srv.close()
        await self._runner.cleanup()

    def start(self) -> ImageServer:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


# What each hostile URL must end as: (status, error kind or None).
HOSTILE = {
    "http://hostile.test/noai.jpg": ("opt-out", "noai"),
    "http://hostile.test/noimageai-agent.jpg": ("opt-out", "noai"),
    "http://hostile.test/otherbot-noai.jpg": ("success", None),
    "http://hostile.test/tdm.jpg": ("opt-out", "tdm"),
    "http://norobots.test/private/a.jpg": ("opt-out", "robots"),
    "http://norobots.test/public/a.jpg": ("success", None),
    "http://robots503.test/a.jpg": ("error", "robots_unavailable"),
    "http://dnt.test/a.jpg": ("opt-out", "do_not_train"),
    "http://sub.dnt.test/a.jpg": ("opt-out", "do_not_train"),
    "http://hostile.test/url-listed.jpg": ("blocked", "blocklist_url"),
    "http://hostile.test/listed.jpg": ("blocked", "blocklist_hash"),
    "http://hostile.test/retry-once.jpg": ("success", None),
    "http://hostile.test/always-429.jpg": ("error", "http_429"),
    "http://hostile.test/slow.jpg": ("error", "timeout"),
    "http://hostile.test/loop": ("error", "redirects"),
    "http://hostile.test/to-metadata": ("blocked", "ssrf"),
    "http://hostile.test/to-canary": ("blocked", "ssrf"),
    "http://hostile.test/to-canary-host": ("blocked", "ssrf"),
    "http://hostile.test/to-photo": ("success", None),
    "http://hostile.test/huge.jpg": ("error", "too_large"),
    "http://hostile.test/bomb.png": ("error", "bomb"),
    "http://hostile.test/html.jpg": ("error", "not_image"),
    "http://hostile.test/truncated.jpg": ("error", "decode"),
    "http://hostile.test/500.jpg": ("error", "http_5xx"),
    "http://hostile.test/404.jpg": ("error", "http_404"),
    "http://169.254.169.254/latest/meta-data/": ("blocked", "ssrf"),
    "http://10.1.2.3/a.jpg": ("blocked", "ssrf"),
    "http://[::ffff:169.254.169.254]/a.jpg": ("blocked", "ssrf"),
    "http://rebind.test/a.jpg": ("blocked", "ssrf"),
    "http://canary.test/a.jpg": ("blocked", "ssrf"),
    "ftp://hostile.test/a.jpg": ("bad_url", "bad_url"),  # never requested: the URL check in the task
}


def canary_urls(canary_port: int) -> dict[str, tuple[str, str]]:
    return {
        f"http://127.0.0.1:{canary_port}/a.jpg": ("blocked", "ssrf"),
        f"http://localhost:{canary_port}/a.jpg": ("blocked", "ssrf"),
        f"http://[::1]:{canary_port}/a.jpg": ("blocked", "ssrf"),
        f"http://127.0.0.1:{canary_port}/robots.txt": ("blocked", "ssrf"),
    }


class Origin:
    """Image hosts `h*.test` / `big.test` on one loopback port; every request logged as (time, host, path)."""

    def __init__(self, shared_data: Path, delay: float) -> None:
        self.delay = delay
        photos = sorted((shared_data / "images" / "skimage").glob("*.png"))[:6]
        self.bodies = []
        for p in photos:
            im = Image.open(p).convert("RGB")
            im.thumbnail((320, 320))
            buf = io.BytesIO()
            im.save(buf, "JPEG", quality=85)
            self.bodies.append(buf.getvalue())
        self.log: list[tuple[float, str, str]] = []
        self.active: dict[str, int] = {}  # image requests in flight per host, and the most seen at once
        self.peak: dict[str, int] = {}
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    async def handle(self, request: web.Request) -> web.Response:
        host = (request.host or "").split(":")[0]
        self.log.append((time.time(), host, request.path))
        if not request.path.startswith("/img/"):  # robots.txt, ai.txt: none here
            return web.Response(status=404)
        self.active[host] = self.active.get(host, 0) + 1
        self.peak[host] = max(self.peak.get(host, 0), self.active[host])
        try:
            await asyncio.sleep(self.delay)
        finally:
            self.active[host] -= 1
        n = int(request.path.rsplit("/", 1)[-1].split(".")[0])
        return web.Response(body=self.bodies[n % len(self.bodies)], content_type="image/jpeg")

    def images(self) -> int:
        return sum(1 for _, _, p in self.log if p.startswith("/img/"))

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_get("/{tail:.*}", self.handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]

    def __enter__(self) -> Origin:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
