"""Skewed host mix: wall time of the download job vs the planner's politeness bound.

    nice .venv/bin/python bench/download/skew.py [--urls 1500 --hosts 60 --top-share 0.3 --rps 5]

One host holds `top-share` of the URLs, the rest follow a Zipf-like long tail over the
other hosts (loopback addresses of bench/download/server.py). The job runs with
`--per-host-rps RPS` on local[2]; the plan's bound is `max rows / rate` (the top host).
Reports the fetch phase and the whole job against that bound, and when the small hosts'
shards were committed. Writes bench/download/results-skew.json and RESULTS-skew.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
SHARED = Path(os.environ.get("CRAWLPAIRS_SHARED_DATA", REPO.parent / "shared" / "data"))


def zipf_hosts(n_urls: int, hosts: int, top_share: float) -> list[int]:
    """Host index per URL: host 0 gets top_share, hosts 1.. share the rest with weight 1/rank."""
    top = round(n_urls * top_share)
    weights = [1.0 / k for k in range(1, hosts)]
    total = sum(weights)
    counts = [max(1, round((n_urls - top) * w / total)) for w in weights]
    counts[0] += n_urls - top - sum(counts)
    out = [0] * top
    for h, c in enumerate(counts, start=1):
        out += [h] * c
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--urls", type=int, default=1500)
    ap.add_argument("--hosts", type=int, default=60)
    ap.add_argument("--top-share", type=float, default=0.3)
    ap.add_argument("--rps", type=float, default=5.0)
    ap.add_argument("--shard-size", type=int, default=100)
    ap.add_argument("--master", default="local[2]")
    a = ap.parse_args()

    import pandas as pd

    work = HERE / "work" / "skew"
    subprocess.run(["rm", "-rf", str(work)], check=True)
    (work / "in").mkdir(parents=True)
    srv = subprocess.Popen([sys.executable, str(HERE / "server.py"), "--hosts", str(a.hosts), "--latency-min", "0.05",
                            "--latency-max", "0.2", "--images", str(SHARED / "images")], stdout=subprocess.PIPE, text=True)
    try:
        line = srv.stdout.readline().split()
        if not line or line[0] != "READY":
            raise SystemExit("benchmark server did not start")
        port = int(line[1])
        hosts = zipf_hosts(a.urls, a.hosts, a.top_share)
        df = pd.DataFrame({"uid": [f"{i:032x}" for i in range(a.urls)],
                           "url": [f"http://127.0.0.{2 + h}:{port}/img/{i}.jpg" for i, h in enumerate(hosts)],
                           "text": [f"caption {i}" for i in range(a.urls)]})
        df.to_parquet(work / "in" / "urls.parquet")
        out = work / "out"
        cmd = [str(REPO / ".venv" / "bin" / "crawlpairs"), "download", "--input", str(work / "in"),
               "--output", str(out), "--master", a.master, "--conf", "spark.ui.enabled=false",
               "--per-host-rps", str(a.rps), "--per-host-concurrency", "2", "--shard-size", str(a.shard_size),
               "--allow-network", f"127.0.0.0/8:{port}", "--min-image-bytes", "0"]
        env = dict(os.environ, SPARK_LOCAL_IP="127.0.0.1", PYSPARK_PYTHON=sys.executable)
        t0 = time.time()
        with open(work / "job.log", "w") as log:
            rc = subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
        wall = time.time() - t0
    finally:
        srv.terminate()
        srv.wait(10)
    stats = json.loads((out / "images_meta" / "_stats.json").read_text())
    plan = json.loads((out / "images_meta" / "plan.json").read_text())
    images = out / "images"
    meta = pd.concat([pd.read_parquet(p) for p in sorted(images.glob("*.parquet"))], ignore_index=True)
    ends = {p.name[: plan["shard_digits"]]: json.loads(p.read_text())["end_time"] for p in images.glob("*_stats.json")}
    top_host = plan["bounding_hosts"][0]["host"]
    top_ip = top_host.split(":")[0]
    tail_shards = {k[: plan["shard_digits"]] for k, u in zip(meta.key, meta.url, strict=True) if f"//{top_ip}:" not in u}
    top_only = set(ends) - tail_shards
    first_end = min(ends.values())
    fetch_s = stats["extra"]["seconds"]["fetch"]
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, load avg {os.getloadavg()[0]:.1f}",
        "command": " ".join(sys.argv), "rc": rc, "urls": a.urls, "hosts": a.hosts, "top_share": a.top_share,
        "rps": a.rps, "master": a.master, "tasks": plan["tasks"], "split": plan["big_hosts"],
        "bound_s": plan["bound_seconds"], "bounding_host": top_host, "wall_s": round(wall, 1),
        "phases_s": stats["extra"]["seconds"], "fetch_over_bound": round(fetch_s / plan["bound_seconds"], 3),
        "successes": int((meta.download_status == "success").sum()),
        "tail_shards_committed_by_s": round(max(ends[s] for s in tail_shards) - first_end, 1) if tail_shards else None,
        "last_top_host_shard_s": round(max(ends[s] for s in top_only) - first_end, 1) if top_only else None,
        "peak_rss_mb_per_task": stats["extra"].get("peak_rss_mb_per_task"),
    }
    (HERE / "results-skew.json").write_text(json.dumps(result, indent=2) + "\n")
    md = ["# Download benchmark: skewed host mix (generated by bench/download/skew.py)", "",
          f"- machine: {result['machine']}", f"- command: `{result['command']}`",
          f"- {a.urls} URLs, one host {100 * a.top_share:.0f} %, the rest Zipf over {a.hosts - 1} hosts; "
          f"{a.rps} req/s per host, 50-200 ms latency, {a.master}, {plan['tasks']} tasks",
          "", "| what | value |", "| --- | --- |",
          f"| planner's bound (printed before the first request) | {plan['bound_seconds']:.1f} s ({top_host}) |",
          f"| fetch phase | {fetch_s:.1f} s ({result['fetch_over_bound']:.2f} × bound) |",
          f"| whole job (JVM start, plan, place, fetch) | {wall:.1f} s |",
          f"| phases (s) | {stats['extra']['seconds']} |",
          f"| long-tail shards all committed | {result['tail_shards_committed_by_s']} s after the first commit |",
          f"| last shard of the top host | {result['last_top_host_shard_s']} s after the first commit |",
          f"| successes | {result['successes']} / {a.urls} |",
          f"| peak RSS per task | {result['peak_rss_mb_per_task']} MB |"]
    (HERE / "RESULTS-skew.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
