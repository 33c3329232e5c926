"""Two generated crawls served by a real loopback HTTP server, processed by `crawlpairs recrawl`.

The second crawl shares 30% of its pairs with the first (crawlpairs.generate's
shared_fraction). Checked: the second crawl adds only its new pairs, the seen-set
holds the union, a recrawl SIGKILLed in the middle and restarted ends exactly like an
uninterrupted one, a daily call with nothing new does nothing, and re-running dedup
for either crawl changes nothing (also with a crashed, uncommitted seen-set attempt
lying around).
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from crawlpairs.udfs.dedup.seen import SeenSet

C0, C1, C2 = "CC-MAIN-2024-26", "CC-MAIN-2024-30", "CC-MAIN-2024-33"
pytestmark = pytest.mark.integration


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # noqa: D102 - keep pytest output clean
        pass


@pytest.fixture(scope="module")
def cc_site(tmp_path_factory, shared_data):
    """collinfo.json + two crawls' wat.paths.gz and WAT files on http://127.0.0.1:PORT/."""
    from crawlpairs.generate import generate

    site = tmp_path_factory.mktemp("cc-site")
    g1 = generate(str(site), kind="wat", files=2, pages_per_file=30, seed=1, crawl=C1)
    os.replace(g1.truth_path, site / "_truth_1.parquet")
    g2 = generate(str(site), kind="wat", files=2, pages_per_file=30, seed=2, crawl=C2,
                  shared_pairs_from=str(site / "_truth_1.parquet"), shared_fraction=0.3)
    # Common Crawl lists newest first; C0 is older than --since and must be ignored
    (site / "collinfo.json").write_text(json.dumps([{"id": c, "name": c} for c in (C2, C1, C0)]))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(site)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    conf = site.parent / "recrawl.toml"
    conf.write_text(f"""
[spark]
master = "local[2]"
shuffle_partitions = 4
conf = {{ "spark.ui.enabled" = "false" }}
[extract]
prefix = "{base}/"
crawl_index_url = "{base}/crawl-data/{{crawl}}/wat.paths.gz"
lid_model = "{shared_data / 'models' / 'lid.176.ftz'}"
[dedup]
near_dup = false   # exact sets below; near-dup has its own tests
dedup_url = false
[recrawl]
collinfo_url = "{base}/collinfo.json"
""")
    yield {"base": base, "conf": conf, "g1": g1, "g2": g2}
    server.shutdown()


def recrawl(root: Path, conf: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "PYSPARK_PYTHON": sys.executable}
    cmd = [sys.executable, "-m", "crawlpairs.cli", "recrawl", "--output", str(root), "--config", str(conf),
           "--since", C1, *extra]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def finish(proc: subprocess.Popen, timeout: float = 900) -> str:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-3000:]
    return out


def state(root: Path, crawl: str) -> dict:
    p = root / "state" / f"{crawl}.json"
    return json.loads(p.read_text()) if p.exists() else {}


def uids(path: Path) -> set[str]:
    return set(pq.read_table(path, columns=["uid"]).column("uid").to_pylist())


def seen_uids(root: Path) -> set[str]:
    seen = SeenSet(str(root / "seen"))
    out: set[str] = set()
    for p in seen.paths("uid", seen.commits(), None):
        out |= set(pq.read_table(p, columns=["key"]).column("key").to_pylist())
    return out


def snapshot(root: Path) -> dict:
    return {c: uids(root / "crawls" / c / "deduped") for c in (C1, C2)} | {"seen": seen_uids(root)}


def test_recrawl_two_crawls_kill_and_resume(tmp_path, cc_site, spark):
    conf = cc_site["conf"]
    a, b = tmp_path / "a", tmp_path / "b"

    # -- uninterrupted run ----------------------------------------------------------------
    finish(recrawl(a, conf))
    assert state(a, C1)["status"] == state(a, C2)["status"] == "done"
    assert not (a / "state" / f"{C0}.json").exists()  # older than --since
    cand1, cand2 = uids(a / "crawls" / C1 / "candidates"), uids(a / "crawls" / C2 / "candidates")
    shared = cand1 & cand2
    assert len(shared) == cc_site["g2"].shared_pairs > 0  # the generator's 30% of crawl 2's alt pairs
    snap = snapshot(a)
    assert snap[C1] == cand1  # first crawl: everything is new
    assert snap[C2] == cand2 - cand1  # second crawl: only its new pairs
    assert snap["seen"] == cand1 | cand2  # the seen-set holds the union
    st2 = json.loads((a / "crawls" / C2 / "deduped_meta" / "_stats.json").read_text())
    assert st2["dropped"] == {"seen_uid": len(shared)}

    # -- the same, SIGKILLed once crawl 1's dedup has started, then restarted --------------
    proc = recrawl(b, conf)
    deadline = time.monotonic() + 900
    while state(b, C1).get("step") != "dedup":
        assert proc.poll() is None, proc.communicate()[0][-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # the CLI, its JVM and Python workers: all ours
    proc.wait()
    assert state(b, C1)["status"] == "in_progress"
    finish(recrawl(b, conf))
    assert state(b, C1)["status"] == state(b, C2)["status"] == "done"
    assert state(b, C1)["attempts"] == 2
    assert snapshot(b) == snap

    # -- a daily call with nothing new: no work, no state change ----------------------------
    before = {c: state(a, c) for c in (C1, C2)}
    out = finish(recrawl(a, conf))
    assert "nothing to do" in out
    assert {c: state(a, c) for c in (C1, C2)} == before

    # -- re-running dedup of either crawl changes nothing, crashed attempts are ignored ------
    from crawlpairs.config import load
    from crawlpairs.jobs.dedup import DedupStage
    from crawlpairs.stage import run_stage

    crashed = a / "seen" / "uid" / "a=0000000000000000-crashed" / "p=00"
    crashed.mkdir(parents=True)
    pq.write_table(pq.read_table(a / "crawls" / C2 / "deduped", columns=["uid"]).rename_columns(["key"]),
                   crashed / "part-0.parquet")
    for crawl in (C2, C1):
        cfg = load(conf)
        cfg.input = [str(a / "crawls" / crawl / "candidates")]
        cfg.output = str(a / "crawls" / crawl)
        cfg.dedup.seen = str(a / "seen")
        run_stage(DedupStage, cfg, spark)
        assert snapshot(a) == snap
