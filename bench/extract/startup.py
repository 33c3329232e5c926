"""Fixed cost of an extract run: the CLI on one tiny real WAT, against Spark's own start.

    nice .venv/bin/python bench/extract/startup.py [--reps 3] [--baseline-rev REV]

Arms, each a fresh process, wall-clock seconds from exec to exit, for local[1] and local[2]:
  session        SparkSession built as crawlpairs builds it without the class archive, then
                 stopped (Spark's own cost)
  session_task   the same plus one trivial Python task (adds the Python worker start)
  extract        `crawlpairs extract` on the 9-record real WAT, default settings (builtin lid,
                 the driver JVM maps the class archive: crawlpairs/jvm_archive.py)
  extract_noarchive  the same with --no-class-archive
  extract_nolid  the same with --lid-model none
  rerun          `crawlpairs extract` again into the same output (everything committed)
  baseline_nolid extract --lid-model none with the code of --baseline-rev (before this work)
Arms are interleaved per round (rounds in a shuffled order) and reported as medians, so
other load on the machine hits every arm alike. `median_cpu_s` is the CPU of the Python
driver process only (RUSAGE_CHILDREN: the JVM is not a child the run reaps, so its CPU
is missing): it shows the Python side, not the whole cost. Writes bench/extract/startup.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
SHARED = Path(os.environ.get("CRAWLPAIRS_SHARED_DATA", REPO.parent / "shared" / "data"))
WAT = SHARED / "wat" / "CC-MAIN-20140820021334-00006-ip-10-180-136-8.ec2.internal.warc.wat.gz"

SESSION = """
import sys
from crawlpairs.config import Config
from crawlpairs.spark import get_spark
cfg = Config(); cfg.spark.master = sys.argv[1]; cfg.spark.class_archive = False
spark = get_spark(cfg)
if sys.argv[2] == "task":
    spark.sparkContext.parallelize([1], 1).map(lambda x: x + 1).collect()
spark.stop()
"""


def baseline_tree(rev: str, work: Path) -> Path:
    """The package of an older revision laid out as the installed one (jobs/ and udfs/ inside)."""
    src = work / "src"
    src.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", rev], capture_output=True,
                             check=True).stdout
    tar_path = work / "rev.tar"
    tar_path.write_bytes(archive)
    with tarfile.open(tar_path) as tar:
        tar.extractall(src, filter="data")
    pkg = work / "pkg"
    shutil.copytree(src / "crawlpairs", pkg / "crawlpairs")
    shutil.copytree(src / "jobs", pkg / "crawlpairs" / "jobs")
    shutil.copytree(src / "udfs", pkg / "crawlpairs" / "udfs")
    return pkg


def baseline_python(pkg: Path, work: Path) -> str:
    """A venv whose sys.path is the old package, then this venv's site-packages without their
    .pth files (so the editable install of the current code is not found first)."""
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next((venv / "lib").glob("python*/site-packages"))
    ours = next(p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir())
    (site / "_baseline.pth").write_text(f"{pkg}\n{ours}\n")
    return str(venv / "bin" / "python")


CPU: dict[str, list[float]] = {}


def timed(cmd: list[str], env: dict[str, str]) -> float:
    """Wall seconds of one run; its CPU seconds (the process tree that was waited for) go to CPU."""
    c0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    res = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if res.returncode != 0:
        raise RuntimeError(f"{cmd[:4]} exited {res.returncode}: {res.stderr[-1500:]}")
    TIMED_CPU.append(c1.ru_utime + c1.ru_stime - c0.ru_utime - c0.ru_stime)
    return wall


TIMED_CPU: list[float] = []


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--baseline-rev", default=None)
    ap.add_argument("--masters", default="local[1],local[2]")
    args = ap.parse_args()
    py = sys.executable
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "PYSPARK_PYTHON": py}
    work = Path(tempfile.mkdtemp(prefix="startup-"))
    os.chdir(work)  # not the repo: its crawlpairs/ folder would shadow the baseline's package
    base_cli = None
    if args.baseline_rev:
        bpy = baseline_python(baseline_tree(args.baseline_rev, work / "baseline"), work / "baseline")
        base_env = {**env, "PYSPARK_PYTHON": bpy}
        base_cli = [bpy, "-m", "crawlpairs.cli", "extract", "--input", str(WAT)]
    cli = [py, "-m", "crawlpairs.cli", "extract", "--input", str(WAT)]
    results: dict[str, dict[str, list[float]]] = {}
    for master in args.masters.split(","):
        arms = {
            "session": lambda m=master: timed([py, "-c", SESSION, m, "none"], env),
            "session_task": lambda m=master: timed([py, "-c", SESSION, m, "task"], env),
            "extract": lambda m=master: timed([*cli, "--output", fresh(work), "--master", m], env),
            "extract_noarchive": lambda m=master: timed([*cli, "--output", fresh(work), "--master", m,
                                                         "--no-class-archive"], env),
            "extract_nolid": lambda m=master: timed([*cli, "--output", fresh(work), "--master", m,
                                                     "--lid-model", "none"], env),
            "rerun": lambda m=master: rerun(cli, work, m, env),
        }
        if base_cli:
            arms["baseline_nolid"] = lambda m=master: timed(
                [*base_cli, "--output", fresh(work), "--master", m, "--lid-model", "none"], base_env)
        times: dict[str, list[float]] = {a: [] for a in arms}
        for r in range(args.reps):
            order = list(arms)
            random.Random(r).shuffle(order)
            for arm in order:
                times[arm].append(arms[arm]())
                CPU.setdefault(f"{master} {arm}", []).append(TIMED_CPU[-1])
                print(f"{master} round {r} {arm}: {times[arm][-1]:.2f} s wall, {TIMED_CPU[-1]:.2f} s CPU",
                      file=sys.stderr)
        results[master] = times
    doc = {
        "when": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
        "input": str(WAT.name),
        "baseline_rev": args.baseline_rev,
        "load_average_at_end": os.getloadavg(),
        "cpus": os.cpu_count(),
        "median_s": {m: {a: round(statistics.median(v), 2) for a, v in t.items()} for m, t in results.items()},
        "median_cpu_s": {k: round(statistics.median(v), 2) for k, v in CPU.items()},
        "raw_s": results,
    }
    (HERE / "startup.json").write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps(doc["median_s"], indent=2))
    shutil.rmtree(work, ignore_errors=True)


_N = [0]


def fresh(work: Path) -> str:
    _N[0] += 1
    return str(work / f"out{_N[0]}")


def rerun(cli: list[str], work: Path, master: str, env: dict[str, str]) -> float:
    out = fresh(work)
    timed([*cli, "--output", out, "--master", master], env)
    return timed([*cli, "--output", out, "--master", master], env)


if __name__ == "__main__":
    main()
