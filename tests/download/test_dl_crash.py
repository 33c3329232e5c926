"""Real-process experiments on the download job's shape: a SIGKILL mid-run, and one big host among small ones.

An origin server on loopback serves many hostnames (routed by Host header, reached through
--resolve-overrides), sleeps a little per image like a remote host, and logs every request
with its time. The job runs as the real CLI under `setsid` for the crash (the driver, its
JVM and its Python workers are killed together), in the test's own Spark session otherwise.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from crawlpairs.config import Config, DownloadConfig
from crawlpairs.jobs.download import DownloadStage
from crawlpairs.stage import run_stage
from support.download import Origin

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def _descendants(pid: int) -> list[int]:
    """Every process below `pid` (from /proc), children first found, by pid."""
    parent: dict[int, int] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                parent[int(d.name)] = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        kids = [c for c, pp in parent.items() if pp == p]
        out += kids
        todo += kids
    return out


def _input(tmp: Path, urls: list[str]) -> str:
    df = pd.DataFrame({"uid": [f"{i:032x}" for i in range(len(urls))], "url": urls,
                       "text": [f"caption {i}" for i in range(len(urls))]})
    d = tmp / "deduped"
    d.mkdir()
    df.to_parquet(d / "part-0.parquet")
    return str(d)


def _settings(origin: Origin, hosts: list[str], **kw) -> dict:
    return dict(per_host_concurrency=2, min_image_bytes=0, connect_timeout=5.0, read_timeout=5.0, total_timeout=10.0,
                allow_network=[f"127.0.0.1:{origin.port}"],
                resolve_overrides={h: f"127.0.0.1:{origin.port}" for h in hosts}, **kw)


def _final(images: Path) -> set[tuple[str, str, str | None]]:
    meta = pd.concat([pd.read_parquet(p) for p in sorted(images.glob("*.parquet"))], ignore_index=True)
    return {(u, s, h) for u, s, h in zip(meta.uid, meta.download_status, meta.sha256, strict=True)}


def _committed_shards_are_whole(images: Path) -> int:
    """Every shard with a stats file has its tar and Parquet, and they agree with the stats."""
    import tarfile

    n = 0
    for stats in images.glob("*_stats.json"):
        name = stats.name[: -len("_stats.json")]
        doc = json.loads(stats.read_text())
        meta = pd.read_parquet(images / f"{name}.parquet")
        with tarfile.open(images / f"{name}.tar") as tar:
            jpgs = [m for m in tar.getnames() if m.endswith(".jpg")]
        assert len(meta) == doc["count"] and len(jpgs) == doc["successes"] == (meta.status == "success").sum()
        n += 1
    return n


def test_sigkill_keeps_committed_shards_and_resume_fetches_only_the_rest(
        spark, tmp_path: Path, shared_data: Path) -> None:
    rows, hosts = 600, [f"h{k}.test" for k in range(20)]
    with Origin(shared_data, delay=0.02) as origin:
        urls = [f"http://{hosts[i % 20]}/img/{i}.jpg" for i in range(rows)]
        inp = _input(tmp_path, urls)
        out = tmp_path / "out"
        dl = _settings(origin, hosts, per_host_rps=2.0, shard_size=20, partitions=2, in_flight_per_task=16)
        cmd = [str(REPO / ".venv" / "bin" / "crawlpairs"), "download", "--input", inp, "--output", str(out),
               "--master", "local[2]", "--conf", "spark.ui.enabled=false"]
        for k, v in dl.items():
            value = ",".join(f"{a}={b}" for a, b in v.items()) if isinstance(v, dict) else \
                ",".join(v) if isinstance(v, list) else str(v)
            cmd += [f"--{k.replace('_', '-')}", value]
        env = dict(os.environ, PYSPARK_PYTHON=sys.executable, SPARK_LOCAL_IP="127.0.0.1")
        with open(tmp_path / "run1.log", "w") as log:
            proc = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=log)
        try:
            deadline = time.monotonic() + 400
            while origin.images() < 0.6 * rows and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            # The driver's process group, and every process below it: PySpark's worker daemon puts
            # itself in a group of its own (setpgid), so a group kill alone leaves workers running.
            tree = _descendants(proc.pid)
            os.killpg(proc.pid, signal.SIGKILL)
            for pid in tree:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            proc.wait(30)
        first = origin.images()
        assert 0.5 * rows <= first < rows, (first, (tmp_path / "run1.log").read_text()[-2000:])
        images = out / "images"
        plan = json.loads((out / "images_meta" / "plan.json").read_text())  # recorded before the first request
        kept = _committed_shards_are_whole(images)
        assert 0 < kept < plan["shards"]
        assert all(p.name[0].isdigit() or p.name.startswith(".") for p in images.iterdir())

        cfg = Config(input=[inp], output=str(out))
        cfg.download = DownloadConfig(**dl)
        stats = run_stage(DownloadStage, cfg, spark=spark)
        assert stats.counts["shards_written"] == plan["shards"] - kept
        assert _committed_shards_are_whole(images) == plan["shards"]
        assert not [p for p in images.iterdir() if p.name.startswith(".")]  # the killed run's temp files are gone
        total = origin.images()
        print(f"crash: {first} images served before SIGKILL, {kept}/{plan['shards']} shards committed; "
              f"{total} image requests over both runs for {rows} rows ({total / rows:.2f}x)")
        assert total <= 1.3 * rows, (first, total)
        resumed = _final(images)

        clean_cfg = Config(input=[inp], output=str(tmp_path / "clean"))
        clean_cfg.download = DownloadConfig(**(dl | {"per_host_rps": 0.0}))  # politeness is not in the output
        run_stage(DownloadStage, clean_cfg, spark=spark)
        assert resumed == _final(tmp_path / "clean" / "images")
        assert len(resumed) == rows and {s for _, s, _ in resumed} == {"success"}


def test_big_host_does_not_hold_small_hosts_shards(spark, tmp_path: Path, shared_data: Path) -> None:
    """80 rows on one host and 4 on each of 20 others at 4 req/s: the small hosts' shards commit first."""
    small = [f"s{k}.test" for k in range(20)]
    with Origin(shared_data, delay=0.01) as origin:
        urls = [f"http://big.test/img/{i}.jpg" for i in range(80)] + \
               [f"http://{small[i % 20]}/img/{i}.jpg" for i in range(80, 160)]
        inp = _input(tmp_path, urls)
        cfg = Config(input=[inp], output=str(tmp_path / "out"))
        cfg.download = DownloadConfig(**_settings(origin, ["big.test", *small], per_host_rps=4.0, shard_size=20))
        run_stage(DownloadStage, cfg, spark=spark)

        plan = json.loads((tmp_path / "out" / "images_meta" / "plan.json").read_text())
        assert plan["bounding_hosts"][0]["host"] == "big.test:80" and plan["bound_seconds"] == pytest.approx(20.0)
        big = plan["big_hosts"]["big.test:80"]
        assert big["k"] == plan["tasks"] == 2  # split over both tasks, half the rate each
        images = tmp_path / "out" / "images"
        meta = pd.concat([pd.read_parquet(p) for p in sorted(images.glob("*.parquet"))], ignore_index=True)
        assert (meta.download_status == "success").all()
        end = {p.name[:5]: json.loads(p.read_text())["end_time"] for p in images.glob("*_stats.json")}
        shard = meta.key.str[:5]
        rows, small_rows = shard.value_counts(), shard[meta.url.str.contains("//s")].value_counts()
        # the small hosts' shards: mostly small-host rows (the plan's order puts the 4 rows of each
        # small host first; a task's last small rows may share a shard with the big host's next rows)
        small_shards = [s for s in rows.index if small_rows.get(s, 0) * 2 > rows[s]]
        assert len(small_shards) == 4 and sum(small_rows[s] for s in small_shards) >= 70, (rows, small_rows)
        small_done = max(end[s] for s in small_shards)
        big_times = sorted(t for t, h, p in origin.log if h == "big.test" and p.startswith("/img/"))
        first, span = big_times[0], big_times[-1] - big_times[0]
        timeline = {s: (round(end[s] - first, 1), int(rows[s]), int(small_rows.get(s, 0))) for s in sorted(end)}
        asked = {p: t for t, h, p in origin.log if p.startswith("/img/")}  # when each row's image was requested
        late = {s: sorted(round(asked[f"/img/{u.rsplit('/', 1)[1]}"] - first, 1)
                          for u in meta.url[shard == s]) for s in small_shards}
        print(f"skew timeline (shard: commit s, rows, small-host rows): {timeline}; "
              f"small shards' request times: {late}")
        print(f"skew: small hosts' shards committed {small_done - first:.1f} s after the big host's first "
              f"request, its last came at {span:.1f} s (bound {plan['bound_seconds']} s)")
        # committed before the big host was half done (shard: (commit s, rows, small-host rows))
        assert small_done < first + span / 2, timeline
        # the global per-host limit held across both tasks: 80 requests at <= 4/s
        assert (big_times[-1] - big_times[0]) >= 79 / 4.0 * 0.9


def test_a_host_split_over_tasks_keeps_its_concurrency_limit(spark, tmp_path: Path, shared_data: Path) -> None:
    """An unthrottled big host (no rate limit, 0.1 s an image) among small ones, four fetch tasks: the plan
    splits it over at most per_host_concurrency tasks with a share of the slots each, so the origin never
    sees more than per_host_concurrency of its requests at once (before: K tasks x the full limit)."""
    small = [f"s{k}.test" for k in range(8)]
    with Origin(shared_data, delay=0.1) as origin:
        urls = [f"http://big.test/img/{i}.jpg" for i in range(80)] + \
               [f"http://{small[i % 8]}/img/{i}.jpg" for i in range(80, 96)]
        inp = _input(tmp_path, urls)
        cfg = Config(input=[inp], output=str(tmp_path / "out"))
        cfg.download = DownloadConfig(**_settings(origin, ["big.test", *small], per_host_rps=0.0, shard_size=10,
                                                  partitions=4, in_flight_per_task=16))
        run_stage(DownloadStage, cfg, spark=spark)
        plan = json.loads((tmp_path / "out" / "images_meta" / "plan.json").read_text())
        assert plan["tasks"] == 4 and plan["big_hosts"]["big.test:80"]["k"] == 2
        assert origin.peak["big.test"] == 2, origin.peak  # both slots used, never more
        meta = pd.concat([pd.read_parquet(p) for p in (tmp_path / "out" / "images").glob("*.parquet")])
        assert len(meta) == 96 and (meta.download_status == "success").all()


def test_a_finished_shard_commits_while_the_input_is_late(tmp_path: Path, shared_data: Path) -> None:
    """The task loop never sits blocked on its input while a finished shard waits: the JVM's
    end-of-data (or a slow shuffle read) can come long after the last row. Shard 0's ten rows
    and shard 1's first row arrive at once, then nothing for 4 s: shard 0 commits well before."""
    import pyarrow as pa

    from crawlpairs.udfs.download.shards import parquet_schema
    from crawlpairs.udfs.download.task import SHARD_RESULT_SCHEMA, download_shards

    with Origin(shared_data, delay=0.0) as origin:
        urls = [f"http://h{i % 3}.test/img/{i}.jpg" for i in range(20)]
        table = pa.table({"uid": [f"{i:032x}" for i in range(20)], "url": urls,
                          "text": [f"caption {i}" for i in range(20)],
                          "_shard": pa.array([i // 10 for i in range(20)], pa.int64())})
        cfg = DownloadConfig(**_settings(origin, ["h0.test", "h1.test", "h2.test"], per_host_rps=0.0,
                                         shard_size=10))

        def batches():
            yield table.slice(0, 11).to_batches()[0]  # all of shard 0, the first row of shard 1
            time.sleep(4.0)
            yield table.slice(11).to_batches()[0]

        start, done = time.monotonic(), {}
        out = tmp_path / "images"
        for batch in download_shards(batches(), cfg, str(out), {"shard_digits": 5, "index_digits": 4, "shard_size": 10},
                                     parquet_schema(table.schema, SHARD_RESULT_SCHEMA)):
            for row in batch.to_pylist():
                done[row["shard"]] = time.monotonic() - start
                assert (out / f"{int(row['shard']):05d}_stats.json").exists()
        assert set(done) == {0, 1}, done
        assert done[0] < 3.0 and done[1] >= 4.0, done  # before: shard 0 waited for the input's end (>= 4 s)
