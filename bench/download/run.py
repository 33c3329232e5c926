"""Download benchmark: crawlpairs vs img2dataset, same URL list, same settings, one run.

    nice .venv/bin/python bench/download/run.py [--urls 3000 --hosts 100 --threads 64]

A loopback server process (bench/download/server.py, pinned to the last core) serves
a realistic JPEG size mix with 50-200 ms injected latency per response from many
loopback addresses (one per host). Each arm runs as its own process tree pinned to
core 0 (`taskset`), so images/s is images/s per core:
  img2dataset       1 process, N threads, border 256, jpg q95, webdataset, sha256
  crawlpairs-engine the download udfs without Spark (fetch + decode/resize + shards)
  crawlpairs-spark  `crawlpairs download --master local[1]` (JVM and all)
  crawlpairs-spark-noarchive  the same with --no-class-archive (crawlpairs/jvm_archive.py)
crawlpairs keeps its politeness on: robots.txt per host, per-host rate limit and
per-host concurrency, SSRF guard (loopback opened by --allow-network only).
Writes bench/download/results.json and RESULTS.md (`--report-only` rebuilds them from the json); the
Spark arms' overhead over the engine is paired by round, so a slow stretch of the VM counts against both.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
# img2dataset's venv, shared with tests/download/test_dl_img2dataset.py (made once per machine)
VENV = Path(os.environ.get("CRAWLPAIRS_PEERS_DIR", Path.home() / ".cache" / "crawlpairs-peers")) / "img2dataset"
SHARED = Path(os.environ.get("CRAWLPAIRS_SHARED_DATA", REPO.parent / "shared" / "data"))


def ensure_img2dataset() -> str:
    py = VENV / "bin" / "python"
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(VENV / "bin" / "pip"), "install", "-q", "img2dataset==1.47.0"], check=True)
    out = subprocess.run([str(py), "-c", "import importlib.metadata as m; print(m.version('img2dataset'))"],
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()


def pin(cores: str) -> list[str]:
    return ["taskset", "-c", cores] if shutil.which("taskset") else []


def timed(cmd: list[str], env: dict[str, str] | None = None, log: Path | None = None) -> dict[str, Any]:
    """Run a process tree; wall seconds, and CPU seconds of every process in it by kind.

    The tree is sampled every 0.2 s (psutil), so processes that were never waited for (the
    JVM that pyspark starts, its Python workers) are counted too; a process that lives less
    than one interval may be missed (at most 0.2 s of CPU each).
    """
    import psutil

    t0 = time.perf_counter()
    seen: dict[int, tuple[str, float]] = {}

    def sample(root: psutil.Process) -> None:
        try:
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            return
        for p in procs:
            try:
                with p.oneshot():
                    c = p.cpu_times()
                    seen[p.pid] = (_kind(p), c.user + c.system)
            except psutil.Error:
                pass

    def by_kind() -> dict[str, float]:
        out: dict[str, float] = {}
        for kind, cpu in seen.values():
            out[kind] = round(out.get(kind, 0.0) + cpu, 2)
        return out

    timeline: list[tuple[float, dict[str, float]]] = []  # (wall s, CPU s by kind so far), once a second
    with open(log or os.devnull, "w") as fh:
        proc = subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT)
        root = psutil.Process(proc.pid)
        while proc.poll() is None:
            sample(root)
            now = time.perf_counter() - t0
            if not timeline or now - timeline[-1][0] >= 1.0:
                timeline.append((round(now, 1), by_kind()))
            time.sleep(0.2)
    wall = time.perf_counter() - t0
    total = by_kind()
    return {"rc": proc.returncode, "wall_s": round(wall, 2), "cpu_s": round(sum(total.values()), 2),
            "cpu_s_by_process": total, "cpu_timeline": timeline}


def _kind(p: Any) -> str:
    """java, the Python that runs the arm, a pyspark Python worker, or another process."""
    name = p.name()
    if name == "java":
        return "jvm"
    if name.startswith("python"):
        args = " ".join(p.cmdline())
        return "python-worker" if "pyspark" in args and "daemon" in args else "python"
    return name


IMG2DATASET = """
import sys, img2dataset
img2dataset.download(url_list=sys.argv[1], input_format="parquet", url_col="url", caption_col="text",
    output_format="webdataset", output_folder=sys.argv[2], processes_count=1, thread_count=int(sys.argv[3]),
    image_size=256, resize_mode="border", encode_quality=95, encode_format="jpg", timeout=10, retries=0,
    number_sample_per_shard=10000, distributor="multiprocessing", compute_hash="sha256",
    user_agent_token="crawlpairs-bench")
"""

ENGINE = """
import sys, json, pyarrow as pa, pyarrow.parquet as pq
from crawlpairs.config import DownloadConfig
from crawlpairs.udfs.download.task import SHARD_RESULT_SCHEMA, download_shards
from crawlpairs.udfs.download.shards import parquet_schema
cfg = DownloadConfig(**json.loads(sys.argv[3]))
t = pq.read_table(sys.argv[1])
t = t.append_column("_shard", pa.array([i // cfg.shard_size for i in range(t.num_rows)], pa.int64()))
layout = {"shard_digits": 5, "index_digits": 4, "shard_size": cfg.shard_size}
for row in download_shards(iter(t.to_batches(1000)), cfg, sys.argv[2], layout,
                           parquet_schema(t.schema, SHARD_RESULT_SCHEMA)):
    print(row.to_pylist()[0]["peak_rss_mb"], file=sys.stderr)
"""


WDS_READ = """
import glob, sys, cv2, numpy as np, webdataset as wds
tars = sorted(glob.glob(sys.argv[1] + "/*.tar"))
n = 0
for jpg, txt, meta in wds.WebDataset(tars, shardshuffle=False).decode().to_tuple("jpg", "txt", "json"):
    img = cv2.imdecode(np.frombuffer(jpg, np.uint8), cv2.IMREAD_COLOR)
    n += img is not None and img.shape[:2] == (meta["height"], meta["width"]) and txt == meta["caption"]
print(n)
"""


def read_with_webdataset(folder: Path) -> int | None:
    """Samples that img2dataset's own webdataset package reads back from our shards."""
    out = subprocess.run([str(VENV / "bin" / "python"), "-c", WDS_READ, str(folder)], capture_output=True, text=True)
    try:
        return int(out.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return None


def successes(folder: Path) -> int:
    """Images written, from the per-shard stats (img2dataset and crawlpairs both write `successes`)."""
    return sum(int(json.loads(f.read_text()).get("successes", 0))
               for f in folder.glob("*_stats.json") if f.name[0].isdigit())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--urls", type=int, default=3000)
    ap.add_argument("--hosts", type=int, default=100)
    ap.add_argument("--threads", type=int, default=64, help="img2dataset threads = crawlpairs in-flight")
    ap.add_argument("--per-host-rps", type=float, default=5.0)
    ap.add_argument("--per-host-concurrency", type=int, default=2)
    ap.add_argument("--decode-threads", type=int, default=2, help="crawlpairs decode threads per task")
    ap.add_argument("--latency-min", type=float, default=0.05)
    ap.add_argument("--latency-max", type=float, default=0.2)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--arms", default="img2dataset,crawlpairs-engine,crawlpairs-spark")
    ap.add_argument("--tag", default="", help="write results-TAG.json / RESULTS-TAG.md (a variant run)")
    ap.add_argument("--report-only", action="store_true", help="rebuild RESULTS[-TAG].md from results[-TAG].json")
    a = ap.parse_args()
    if a.report_only:
        report(json.loads((HERE / f"results{'-' + a.tag if a.tag else ''}.json").read_text()), a.tag)
        return 0

    import pandas as pd

    version = ensure_img2dataset()
    work = HERE / "work"
    work = work / a.tag if a.tag else work
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    ncpu = os.cpu_count() or 1
    server_core, arm_core = str(ncpu - 1), "0"
    srv = subprocess.Popen(
        [*pin(server_core), sys.executable, str(HERE / "server.py"), "--hosts", str(a.hosts),
         "--latency-min", str(a.latency_min), "--latency-max", str(a.latency_max), "--images", str(SHARED / "images")],
        stdout=subprocess.PIPE, text=True)
    try:
        line = srv.stdout.readline().split()
        if not line or line[0] != "READY":
            raise SystemExit("benchmark server did not start")
        port = int(line[1])
        server_info = " ".join(line[2:])
        urls = [f"http://127.0.0.{2 + i % a.hosts}:{port}/img/{i}.jpg" for i in range(a.urls)]
        df = pd.DataFrame({"uid": [f"{i:032x}" for i in range(a.urls)], "url": urls,
                           "text": [f"caption {i}" for i in range(a.urls)]})
        (work / "in").mkdir()
        inp = work / "in" / "urls.parquet"
        df.to_parquet(inp)
        dl = {"per_host_rps": a.per_host_rps, "per_host_concurrency": a.per_host_concurrency,
              "in_flight_per_task": a.threads, "decode_threads": a.decode_threads, "allow_network": [f"127.0.0.0/8:{port}"], "min_image_bytes": 0,
              "shard_size": a.urls + 1, "connect_timeout": 10.0, "read_timeout": 10.0, "total_timeout": 30.0,
              "image_size": 256, "resize_mode": "border", "output_format": "jpg", "quality": 95}
        env = dict(os.environ, SPARK_LOCAL_IP="127.0.0.1", PYSPARK_PYTHON=sys.executable,
                   NO_ALBUMENTATIONS_UPDATE="1")
        arms = a.arms.split(",")
        runs = []
        for r in range(a.rounds):
            for arm in arms:
                out = work / f"{arm}-{r}"
                log = work / f"{arm}-{r}.log"
                if arm == "img2dataset":
                    cmd = [*pin(arm_core), str(VENV / "bin" / "python"), "-c", IMG2DATASET, str(inp), str(out),
                           str(a.threads)]
                    folder = out
                elif arm == "crawlpairs-engine":
                    cmd = [*pin(arm_core), sys.executable, "-c", ENGINE, str(inp), str(out), json.dumps(dl)]
                    folder = out
                else:
                    cmd = [*pin(arm_core), str(REPO / ".venv" / "bin" / "crawlpairs"), "download",
                           "--input", str(work / "in"), "--output", str(out), "--master", "local[1]",
                           "--shuffle-partitions", "1", "--partitions", "1",
                           "--conf", "spark.ui.enabled=false"]
                    for k, v in dl.items():
                        cmd += [f"--{k.replace('_', '-')}", ",".join(v) if isinstance(v, list) else str(v)]
                    if arm == "crawlpairs-spark-noarchive":  # the driver JVM without its class archive
                        cmd.append("--no-class-archive")
                    folder = out / "images"
                os.sync()  # the previous arm's output is written back first: its I/O must not stall this arm's start
                m = timed(cmd, env, log)
                ok = successes(folder) if folder.exists() else 0
                m.update(arm=arm, round=r, images=ok, images_per_s=round(ok / m["wall_s"], 1),
                         images_per_cpu_s=round(ok / m["cpu_s"], 1) if m["cpu_s"] else None)
                if arm.startswith("crawlpairs") and folder.exists():
                    m["webdataset_reads"] = read_with_webdataset(folder)
                if arm.startswith("crawlpairs-spark") and (out / "images_meta" / "_stats.json").exists():
                    extra = json.loads((out / "images_meta" / "_stats.json").read_text()).get("extra", {})
                    m["phases_s"] = extra.get("seconds")
                    m["peak_rss_mb"] = extra.get("peak_rss_mb_per_task")
                if arm == "crawlpairs-engine":
                    lines = [x for x in log.read_text().split() if x.replace(".", "", 1).isdigit()]
                    m["peak_rss_mb"] = float(lines[-1]) if lines else None
                print(json.dumps({k: v for k, v in m.items() if k != "cpu_timeline"}), flush=True)
                runs.append(m)
    finally:
        srv.terminate()
        srv.wait(10)

    result = {
        "machine": f"{platform.machine()}, {ncpu} cores (arms pinned to core {arm_core}, server to core "
                   f"{server_core}), load avg {os.getloadavg()[0]:.1f}, Python {platform.python_version()}",
        "command": " ".join(sys.argv),
        "img2dataset_version": version,
        "urls": a.urls, "hosts": a.hosts, "threads_or_in_flight": a.threads, "decode_threads": a.decode_threads,
        "latency_s": [a.latency_min, a.latency_max], "server": server_info,
        "crawlpairs_politeness": {"per_host_rps": a.per_host_rps, "per_host_concurrency": a.per_host_concurrency,
                                  "robots": True, "ssrf_guard": True},
        "runs": runs,
    }
    report(result, a.tag)
    return 0


def overheads(runs: list[dict[str, Any]], arm: str) -> dict[str, Any] | None:
    """The arm over the engine, paired by round (arms of one round ran back to back, so a slow
    stretch of the VM hits both): per-round fractions of wall and CPU, and their medians."""
    eng = {m["round"]: m for m in runs if m["arm"] == "crawlpairs-engine"}
    pairs = [(m, eng[m["round"]]) for m in runs if m["arm"] == arm and m["round"] in eng]
    if not pairs:
        return None
    wall = [(m["wall_s"] - e["wall_s"]) / e["wall_s"] for m, e in pairs]
    cpu = [(m["cpu_s"] - e["cpu_s"]) / e["cpu_s"] for m, e in pairs]
    return {"rounds": len(pairs), "wall_fraction_per_round": [round(x, 3) for x in wall],
            "cpu_fraction_per_round": [round(x, 3) for x in cpu],
            "wall_fraction": round(statistics.median(wall), 3), "cpu_fraction": round(statistics.median(cpu), 3),
            "wall_seconds": round(statistics.median(m["wall_s"] - e["wall_s"] for m, e in pairs), 2),
            "phases_s_round0": pairs[0][0].get("phases_s")}


def _pcts(fractions: list[float]) -> str:
    return " / ".join(f"{100 * x:+.1f}" for x in fractions)


def report(result: dict[str, Any], tag: str) -> None:
    """results[-TAG].json and RESULTS[-TAG].md from the runs (also from a saved json: --report-only)."""
    runs = result["runs"]
    pol = result["crawlpairs_politeness"]
    lo, hi = result["latency_s"]
    lines = ["# Download benchmark (generated by bench/download/run.py)", "",
             f"- machine: {result['machine']}", f"- command: `{result['command']}`",
             f"- {result['urls']} URLs over {result['hosts']} loopback hosts, {lo * 1000:.0f}-{hi * 1000:.0f} ms "
             f"latency per response, JPEG size mix ({result['server']}); resize border 256, jpg q95, webdataset",
             f"- img2dataset {result['img2dataset_version']}: 1 process, {result['threads_or_in_flight']} threads; "
             f"crawlpairs: {result['threads_or_in_flight']} in flight, {result['decode_threads']} decode threads, "
             f"{pol['per_host_rps']} req/s and {pol['per_host_concurrency']} in flight per host, robots.txt, SSRF guard",
             "", "| arm | round | images | wall s | CPU s | images/s (1 core) | images per CPU-s | read back by webdataset |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for m in runs:
        lines.append(f"| {m['arm']} | {m['round']} | {m['images']} | {m['wall_s']} | {m['cpu_s']} | "
                     f"{m['images_per_s']} | {m['images_per_cpu_s']} | {m.get('webdataset_reads', '')} |")
    first = {m["arm"]: m for m in runs if m["round"] == 0}
    result["spark_overhead"] = {}
    for arm in ("crawlpairs-spark", "crawlpairs-spark-noarchive"):
        o = overheads(runs, arm)
        if o is None:
            continue
        result["spark_overhead"][arm] = o
        eng0 = first["crawlpairs-engine"]
        lines += ["", f"- {arm} over the engine alone, paired by round ({o['rounds']}): wall "
                      f"{_pcts(o['wall_fraction_per_round'])} % (median {100 * o['wall_fraction']:+.1f} %, "
                      f"{o['wall_seconds']:+.1f} s), CPU {_pcts(o['cpu_fraction_per_round'])} % "
                      f"(median {100 * o['cpu_fraction']:+.1f} %); phases of the job in round 0 (s): "
                      f"{o['phases_s_round0']}",
                  f"- CPU seconds by process in round 0: engine {eng0.get('cpu_s_by_process')}, "
                  f"{arm} {first[arm].get('cpu_s_by_process')}",
                  f"- peak RSS per task: engine {eng0.get('peak_rss_mb')} MB, {arm} {first[arm].get('peak_rss_mb')} MB"]
    suffix = f"-{tag}" if tag else ""
    (HERE / f"results{suffix}.json").write_text(json.dumps(result, indent=2) + "\n")
    (HERE / f"RESULTS{suffix}.md").write_text("\n".join(lines) + "\n")
    print((HERE / f"RESULTS{suffix}.md").read_text())


if __name__ == "__main__":
    raise SystemExit(main())
