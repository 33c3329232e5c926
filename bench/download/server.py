"""Loopback image server for the download benchmark (run as its own process).

Listens on one port of many loopback addresses (127.0.0.2 ... 127.0.0.N+1), one per
"host", so both arms see distinct hosts without any DNS trick. Every response waits
an injected latency drawn per path (deterministic, so both arms see the same), and
images come in a realistic size mix made from the shared photos.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import io
import random
import sys
from pathlib import Path

from aiohttp import web
from PIL import Image

# (long side in px, share of URLs): thumbnails to large photos, median ~ 500 px
SIZE_MIX = [(160, 0.10), (320, 0.25), (500, 0.25), (800, 0.20), (1200, 0.15), (2000, 0.05)]


def make_variants(images_dir: Path) -> list[bytes]:
    out = []
    photos = sorted(p for p in images_dir.glob("*/*") if p.suffix in (".jpg", ".png"))
    for p in photos:
        im = Image.open(p).convert("RGB")
        for side, _ in SIZE_MIX:
            s = side / max(im.size)
            v = im.resize((max(1, round(im.width * s)), max(1, round(im.height * s))), Image.Resampling.BICUBIC)
            buf = io.BytesIO()
            v.save(buf, "JPEG", quality=85)
            out.append(buf.getvalue())
    return out


def pick(i: int, n_photos: int, seed: int) -> int:
    """Index into the variants list for URL number i, following SIZE_MIX."""
    r = random.Random(seed * 1_000_003 + i)
    x, acc, kind = r.random(), 0.0, len(SIZE_MIX) - 1
    for k, (_, share) in enumerate(SIZE_MIX):
        acc += share
        if x <= acc:
            kind = k
            break
    return r.randrange(n_photos) * len(SIZE_MIX) + kind


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hosts", type=int, default=50)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--latency-min", type=float, default=0.05)
    ap.add_argument("--latency-max", type=float, default=0.2)
    ap.add_argument("--images", required=True)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    variants = make_variants(Path(a.images))
    n_photos = len(variants) // len(SIZE_MIX)

    async def handle(request: web.Request) -> web.Response:
        h = int(hashlib.md5(request.path.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
        await asyncio.sleep(a.latency_min + (a.latency_max - a.latency_min) * h)
        if request.path == "/robots.txt":
            return web.Response(text="User-agent: *\nDisallow: /private/\n")
        name = request.path.rsplit("/", 1)[-1]
        if not name.endswith(".jpg") or not name[:-4].isdigit():
            return web.Response(status=404)
        return web.Response(body=variants[pick(int(name[:-4]), n_photos, a.seed)], content_type="image/jpeg")

    app = web.Application()
    app.router.add_get("/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = a.port
    for k in range(a.hosts):
        site = web.TCPSite(runner, f"127.0.0.{2 + k}", port, backlog=1024)
        await site.start()
        if port == 0:
            port = site._server.sockets[0].getsockname()[1]
    sizes = sorted(len(v) for v in variants)
    print(f"READY {port} variants={len(variants)} median_bytes={sizes[len(sizes) // 2]}", flush=True)
    sys.stdout.flush()
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main())
