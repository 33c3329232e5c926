"""A download task's memory does not grow with the shard size (images wait on local disk).

Two real processes fetch the same 360 large images from a loopback server, one into shards
of 30 rows, the other into one shard of all 360 (~0.5 MB each: ~180 MB of images). Before
the spool, the one-shard task held every image and then the whole tar in memory: its peak
RSS was higher by about twice the shard's bytes. Now the two peaks differ by little.
"""

from __future__ import annotations

import contextlib
import http.server
import io
import json
import subprocess
import sys
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROWS = 360

TASK = """
import json, sys
import pyarrow as pa
from crawlpairs.config import DownloadConfig
from crawlpairs.udfs.download.shards import parquet_schema
from crawlpairs.udfs.download.task import SHARD_RESULT_SCHEMA, download_shards

port, rows, shard_size, out = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
cfg = DownloadConfig(allow_network=[f"127.0.0.1:{port}"], per_host_rps=0.0, resize_mode="no",
                     shard_size=shard_size)
t = pa.table({"uid": [f"{i:032x}" for i in range(rows)],
              "url": [f"http://127.0.0.1:{port}/img/{i}.jpg" for i in range(rows)],
              "text": [f"caption {i}" for i in range(rows)],
              "_shard": pa.array([i // shard_size for i in range(rows)], pa.int64())})
layout = {"shard_digits": 5, "index_digits": 4, "shard_size": shard_size}
peak, ok = 0.0, 0
for b in download_shards(iter(t.to_batches(50)), cfg, out, layout, parquet_schema(t.schema, SHARD_RESULT_SCHEMA)):
    r = b.to_pylist()[0]
    peak, ok = max(peak, r["peak_rss_mb"]), ok + r["successes"]
print(json.dumps({"peak_rss_mb": peak, "successes": ok}))
"""


def _big_jpeg() -> bytes:
    """A noisy 640x640 JPEG at q95: about half a megabyte that does not compress."""
    rng = np.random.default_rng(7)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (640, 640, 3), dtype=np.uint8)).save(buf, "JPEG", quality=95)
    return buf.getvalue()


@pytest.fixture(scope="module")
def big_server():
    body = _big_jpeg()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            if not self.path.startswith("/img/"):
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv.server_address[1], len(body)
    srv.shutdown()


def _run(port: int, shard_size: int, out: Path) -> dict:
    p = subprocess.run([sys.executable, "-c", TASK, str(port), str(ROWS), str(shard_size), str(out)],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


def test_peak_memory_does_not_grow_with_the_shard_size(big_server, tmp_path: Path) -> None:
    port, _ = big_server
    small = _run(port, 30, tmp_path / "small")
    big = _run(port, ROWS, tmp_path / "big")
    assert small["successes"] == big["successes"] == ROWS
    with tarfile.open(tmp_path / "big" / "00000.tar") as tar:  # the streamed tar is whole and readable
        sizes = {m.size for m in tar.getmembers() if m.name.endswith(".jpg")}
        assert len(sizes) == 1 and sizes.pop() > 400_000  # every image whole (the same body re-encoded)
    shard_bytes_mb = (tmp_path / "big" / "00000.tar").stat().st_size / 2**20
    assert shard_bytes_mb > 120  # the point of the test: a shard far bigger than what is in flight
    print(f"shard of {shard_bytes_mb:.0f} MB; peak RSS: 30-row shards {small['peak_rss_mb']:.0f} MB, "
          f"one {ROWS}-row shard {big['peak_rss_mb']:.0f} MB")
    # without the spool the one-shard peak was higher by ~2x its bytes (images, then the tar)
    assert big["peak_rss_mb"] - small["peak_rss_mb"] < shard_bytes_mb / 3


def test_a_killed_task_leaves_no_spooled_images(big_server, tmp_path: Path) -> None:
    """SIGKILL mid-shard: the spool (an unlinked file in the scratch dir) vanishes with the process."""
    import os
    import signal
    import time

    port, _ = big_server
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    env = dict(os.environ, TMPDIR=str(scratch))
    p = subprocess.Popen([sys.executable, "-c", TASK, str(port), str(ROWS), str(ROWS), str(tmp_path / "out")],
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    spool_fds: list[str] = []
    deadline = time.monotonic() + 60
    while not spool_fds and time.monotonic() < deadline and p.poll() is None:
        time.sleep(0.1)
        with contextlib.suppress(OSError):
            spool_fds = [t for t in (os.readlink(f"/proc/{p.pid}/fd/{fd}") for fd in os.listdir(f"/proc/{p.pid}/fd"))
                         if t.startswith(str(scratch)) and t.endswith("(deleted)")]
    assert spool_fds, "the task never opened its spool in the scratch dir"
    os.kill(p.pid, signal.SIGKILL)
    p.wait(30)
    assert list(scratch.iterdir()) == []  # nothing spooled survives the process
    assert not (tmp_path / "out" / "00000_stats.json").exists()  # and no shard was committed
