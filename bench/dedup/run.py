"""Dedup benchmark: rows/s per core and cost per row at several table sizes, in one run.

Generates candidate tables (realistic captions: word sequences drawn from the real
caption vocabulary of captions/test_10000.parquet, plus injected exact, same-url and
near-duplicate rows, and skew: gallery pages whose near-duplicate clusters grow with
the table, one domain with 10% of the rows, one logo on 1% of the rows), then runs
the real DedupStage (seen-set on, near-dup on unless --no-near-dup, default parameters)
in a fresh process (so a fresh JVM) per size, with the Python workers' memory capped,
sampling the memory of the JVM and its Python workers. Writes results.json and
RESULTS.md (bench/dedup/ unless --out).

    nice .venv/bin/python bench/dedup/run.py --sizes 1000000,3000000 [--cores 2]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pyarrow as pa
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
PRICE_PER_CORE_HOUR = 0.048  # USD, on-demand x86 vCPU (m6i/m7i class, us-east-1, 2025 list price)


def shared_data() -> Path:
    return Path(os.environ.get("CRAWLPAIRS_SHARED_DATA", REPO.parent / "shared" / "data"))


GALLERY_SHARE = 0.05  # rows on gallery pages: near-identical captions of different photos
GALLERY_WEIGHTS = (0.5, 0.25, 0.15, 0.07, 0.03)  # 5 galleries; the largest holds 2.5% of all rows
BIG_DOMAIN_SHARE = 0.10  # rows of one image domain (1M at 10M rows), diverse captions
LOGO_SHARE = 0.01  # one url + caption repeated on every page (a site logo): one huge exact group
GALLERY_TITLES = ("Thailand 2011-01 holiday trip to Bangkok and the islands",
                  "Wedding of Anna and Tom at the lake, summer 2019",
                  "Oak dining table with six chairs, natural finish, product view",
                  "Street art and murals of Berlin Kreuzberg walking tour",
                  "Highland cattle on the farm, spring calving season")


def generate(root: Path, n: int, seed: int = 0, chunk: int = 500_000) -> dict:
    """n candidate rows under root/crawl=.../, duplicates of several kinds and heavy skew.

    Besides exact copies, same-url rows and near-duplicate variants spread over 20k
    domains, it holds the shapes real crawls have and that break naive dedup: gallery
    pages (captions "<title> img-<n>": one near-duplicate cluster per gallery, the
    largest 2.5% of all rows), one image domain with 10% of all rows, and one logo
    url+caption repeated on 1% of all rows. Every share is a fraction of n, so the
    largest cluster grows with the table (25k rows at 1M, 250k at 10M).
    """
    from crawlpairs.udfs.extract.candidates import CANDIDATE_SCHEMA, make_uid

    caps = pd.read_parquet(shared_data() / "captions" / "test_10000.parquet")["TEXT"].astype(str)
    vocab = np.array(sorted({w for t in caps for w in t.split() if 1 < len(w) < 20}))
    rng = np.random.default_rng(seed)
    zipf = 1.0 / np.arange(1, vocab.size + 1) ** 0.9
    p = zipf / zipf.sum()
    domains = np.array([f"img{i}.example{i % 97}.com" for i in range(20_000)])
    names = [f.name for f in CANDIDATE_SCHEMA if f.name != "crawl"]
    schema = pa.schema([CANDIDATE_SCHEMA.field(x) for x in names])
    out = root / "crawl=CC-MAIN-2024-33"
    out.mkdir(parents=True, exist_ok=True)
    t0 = dt.datetime(2024, 8, 1, tzinfo=dt.UTC)
    shares = [1 - 0.2 - GALLERY_SHARE - BIG_DOMAIN_SHARE - LOGO_SHARE, 0.08, 0.04, 0.08,
              GALLERY_SHARE, BIG_DOMAIN_SHARE, LOGO_SHARE]
    kinds = dict.fromkeys(("unique", "exact_copy", "same_url", "near_variant", "gallery", "big_domain", "logo"), 0)
    gallery_size = [0] * len(GALLERY_WEIGHTS)
    for part, lo in enumerate(range(0, n, chunk)):
        m = min(chunk, n - lo)
        nwords = rng.integers(3, 12, m)
        words = vocab[rng.choice(vocab.size, size=(m, 12), p=p)]
        texts = [" ".join(words[i, : nwords[i]]) for i in range(m)]
        dom = domains[rng.integers(0, domains.size, m)]
        urls = [f"https://{d}/i/{lo + i:09d}.jpg" for i, d in enumerate(dom)]
        pages = [f"https://{d}/page/{lo + i}.html" for i, d in enumerate(dom)]
        kind = rng.choice(len(shares), size=m, p=shares)
        src = np.maximum(np.arange(m) - rng.integers(1, 1000, m), 0)
        for i in np.flatnonzero(kind == 1):  # exact copy of an earlier row (url + text)
            urls[i], texts[i] = urls[src[i]], texts[src[i]]
        for i in np.flatnonzero(kind == 2):  # same url, another caption
            urls[i] = urls[src[i]]
        for i in np.flatnonzero(kind == 3):  # near-duplicate caption, same image domain, other image
            urls[i] = urls[src[i]].replace(".jpg", f"-{i}.jpg")
            texts[i] = texts[src[i]] + " - Free Shipping"
        gal = rng.choice(len(GALLERY_WEIGHTS), size=m, p=GALLERY_WEIGHTS)
        for i in np.flatnonzero(kind == 4):  # a gallery photo: same title, its own number and image
            g = int(gal[i])
            gallery_size[g] += 1
            host = f"photos.gallery{g}.example.org"
            urls[i] = f"https://{host}/albums/{g}/img-{gallery_size[g]}.jpg"
            texts[i] = f"{GALLERY_TITLES[g]} img-{gallery_size[g]}"
            pages[i] = f"https://{host}/albums/{g}/page-{gallery_size[g] // 100}.html"
        for i in np.flatnonzero(kind == 5):  # one huge shop: its own images, ordinary captions
            urls[i] = f"https://cdn.bigshop.example.com/p/{lo + i:09d}.jpg"
            pages[i] = f"https://www.bigshop.example.com/item/{lo + i}.html"
        for i in np.flatnonzero(kind == 6):  # the shop's logo on every page
            urls[i], texts[i] = "https://cdn.bigshop.example.com/static/logo.png", "BigShop - home and garden"
            pages[i] = f"https://www.bigshop.example.com/item/{lo + i}.html"
        for k, name in enumerate(kinds):
            kinds[name] += int((kind == k).sum())
        idom = [u.split("/")[2] for u in urls]
        ft = (np.datetime64(t0.replace(tzinfo=None), "us")
              + rng.integers(0, 86400 * 30, m).astype("timedelta64[s]").astype("timedelta64[us]"))
        table = pa.table({
            "uid": [make_uid(u, t) for u, t in zip(urls, texts, strict=True)], "url": urls, "text": texts,
            "text_source": ["alt"] * m, "page_url": pages,
            "page_domain": [x.split("/")[2] for x in pages], "image_domain": idom, "language": ["en"] * m,
            "language_score": np.full(m, 0.9, np.float32), "license": [None] * m, "license_url": [None] * m,
            "source_file": [f"crawl-data/CC-MAIN-2024-33/segments/x/wat/f{part:05d}.warc.wat.gz"] * m,
            "source_offset": np.arange(lo, lo + m, dtype=np.int64), "fetch_time": pa.array(ft).cast(pa.timestamp("us", "UTC")),
            "width": pa.nulls(m, pa.int32()), "height": pa.nulls(m, pa.int32()),
        }).select(names).cast(schema)
        pq.write_table(table, out / f"part-{part:05d}.parquet", compression="zstd")
    kinds["gallery_sizes"] = gallery_size
    return kinds


class MemorySampler(threading.Thread):
    """Peak RSS of this process's children: the JVM, and the largest Python worker (with its command)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak_total = 0
        self.peak_jvm = 0
        self.peak_worker = 0
        self.peak_worker_cmd = ""
        self.cpu: dict[int, float] = {}  # pid -> last seen user+system CPU seconds
        self.lock = threading.Lock()
        self.stop = threading.Event()

    def cpu_seconds(self) -> float:
        """CPU seconds used so far by this process and every child seen (exited ones: last sample).

        CPU time, unlike wall time, is what the work costs even when other jobs share the cores.
        """
        self.sample()
        me = psutil.Process().cpu_times()
        with self.lock:
            return me.user + me.system + sum(self.cpu.values())

    def sample(self) -> None:
        me = psutil.Process()
        total = jvm = 0
        for c in me.children(recursive=True):
            try:
                rss = c.memory_info().rss
                cmd = " ".join(c.cmdline())[:120]
                t = c.cpu_times()
            except psutil.Error:
                continue
            with self.lock:
                self.cpu[c.pid] = t.user + t.system
            total += rss
            if c.name() == "java" or "/java " in cmd or cmd.startswith("java"):
                jvm = max(jvm, rss)
            elif rss > self.peak_worker:
                self.peak_worker, self.peak_worker_cmd = rss, cmd
        self.peak_total = max(self.peak_total, total)
        self.peak_jvm = max(self.peak_jvm, jvm)

    def run(self) -> None:
        while not self.stop.is_set():
            self.sample()
            self.stop.wait(0.5)


def run_one(data: Path, work: Path, n: int, cores: int, driver_mem: str, near_dup: bool,
            python_mem: str | None) -> dict:
    """One size on a fresh Spark (this process is started per size, so the JVM is too)."""
    from crawlpairs.config import Config
    from crawlpairs.jobs.dedup import CACHE_LEVEL, DedupStage
    from crawlpairs.spark import get_spark
    from crawlpairs.stage import run_stage

    cfg = Config()
    cfg.input = [str(data)]
    cfg.output = str(work / f"out_{n}")
    cfg.dedup.seen = str(work / f"seen_{n}")
    cfg.dedup.near_dup = near_dup
    cfg.spark.master = f"local[{cores}]"
    cfg.spark.local_dir = str(work / "spark-local")
    cfg.spark.shuffle_partitions = max(4, n // 100_000)  # ~100k rows per shuffle partition at every size
    cfg.spark.conf.update({"spark.ui.enabled": "false", "spark.driver.memory": driver_mem})
    if python_mem:
        cfg.spark.conf["spark.executor.pyspark.memory"] = python_mem
    for p in (cfg.output, cfg.dedup.seen):
        shutil.rmtree(p, ignore_errors=True)
    sampler = MemorySampler()
    sampler.start()
    spark = get_spark(cfg)
    cpu0 = sampler.cpu_seconds()
    t0 = time.perf_counter()
    stats = run_stage(DedupStage, cfg, spark)
    seconds = time.perf_counter() - t0
    cpu = sampler.cpu_seconds() - cpu0
    spark.stop()
    sampler.stop.set()
    sampler.join()
    return {
        "rows": n, "seconds": round(seconds, 1), "cores": cores, "driver_memory": driver_mem, "cache": CACHE_LEVEL,
        "near_dup": near_dup, "python_memory_cap": python_mem,
        "cpu_seconds": round(cpu, 1), "cpu_us_per_row": round(cpu / n * 1e6, 2),
        "rows_per_s_per_core": round(n / seconds / cores, 1),
        "core_us_per_row": round(seconds * cores / n * 1e6, 2),
        "usd_per_million_rows": round(seconds * cores / 3600 * PRICE_PER_CORE_HOUR / n * 1e6, 5),
        "rows_out": stats.counts.get("rows_out"), "dropped": dict(stats.dropped), "errors": dict(stats.errors),
        "extra": {k: v for k, v in stats.extra.items() if k != "seen"},
        "peak_rss_mb": {"all": sampler.peak_total >> 20, "jvm": sampler.peak_jvm >> 20,
                        "largest_python_worker": sampler.peak_worker >> 20},
        "largest_python_worker_cmd": sampler.peak_worker_cmd,
    }


def write_md(doc: dict, out: Path) -> None:
    lines = ["# Dedup benchmark", "", f"Machine: {doc['machine']}. Command: `{doc['command']}`.", "",
             f"Session: local[{doc['cores']}], driver (= the only executor) memory {doc['driver_memory']}; "
             f"Python workers capped at {doc.get('python_memory') or 'no limit'} (spark.executor.pyspark.memory); "
             f"near-dup {'on' if doc.get('near_dup', True) else 'off'}, otherwise default dedup parameters "
             "(shingle 3, 50 perms, 10 bands x 5 rows, Jaccard check 0.6, scope image_domain), seen-set on "
             "(first run: reads nothing, appends everything).", "",
             "| rows | heap | cache | seconds | CPU s | CPU µs/row | rows/s/core | core-µs/row | USD / 1M rows | "
             "rows out | peak RSS all / JVM / py worker (MB) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in doc["results"]:
        if r.get("status") == "failed":
            lines.append(f"| {r['rows']:,} | {doc['driver_memory']} | | failed (exit {r['exit']}) | | | | | | | |")
            continue
        m = r["peak_rss_mb"]
        lines.append(f"| {r['rows']:,} | {r['driver_memory']} | {r['cache']} | {r['seconds']} | "
                     f"{r.get('cpu_seconds')} | {r.get('cpu_us_per_row')} | {r['rows_per_s_per_core']:,} | {r['core_us_per_row']} | {r['usd_per_million_rows']} | "
                     f"{r['rows_out']:,} | {m['all']} / {m['jvm']} / {m['largest_python_worker']} |")
    done = [r for r in doc["results"] if r.get("status") != "failed"]
    if len(done) >= 2:
        a, b = done[0], done[-1]
        lines += ["", f"Cost per row, {b['rows']:,} vs {a['rows']:,} rows: CPU time "
                  f"{b['cpu_us_per_row'] / a['cpu_us_per_row']:.2f}x, wall time "
                  f"{b['core_us_per_row'] / a['core_us_per_row']:.2f}x (goal: within 0.8-1.2x)."]
    lines += ["", doc.get("notes", "")]
    (out / "RESULTS.md").write_text("\n".join(lines) + "\n")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1000000,3000000,10000000")
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--driver-memory", default="3g")
    ap.add_argument("--python-memory", default="1g", help="spark.executor.pyspark.memory cap ('' for none)")
    ap.add_argument("--near-dup", action=argparse.BooleanOptionalAction, default=True,
                    help="measure with near-duplicate clustering on (the skew-sensitive path; off by default in the job)")
    ap.add_argument("--work", default=str(HERE / "work"))
    ap.add_argument("--keep-data", action="store_true")
    ap.add_argument("--out", default=str(HERE), help="where results.json and RESULTS.md go")
    ap.add_argument("--one", type=int, default=0, help=argparse.SUPPRESS)  # internal: one size, JSON to stdout
    args = ap.parse_args()
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    if args.one:
        res = run_one(work / f"data_{args.one}", work, args.one, args.cores, args.driver_memory, args.near_dup,
                      args.python_memory or None)
        print("RESULT " + json.dumps(res), flush=True)
        return 0
    doc = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, "
                      f"{psutil.virtual_memory().total >> 30} GB, shared with other jobs (load avg at start "
                      f"{os.getloadavg()[0]:.1f})",
           "command": "nice .venv/bin/python bench/dedup/run.py " + " ".join(sys.argv[1:]),
           "cores": args.cores, "driver_memory": args.driver_memory, "python_memory": args.python_memory,
           "near_dup": args.near_dup, "started": dt.datetime.now().isoformat(),
           "price_per_core_hour_usd": PRICE_PER_CORE_HOUR, "results": []}
    for n in [int(x) for x in args.sizes.split(",")]:
        data = work / f"data_{n}"
        if not (data / "_generated.json").exists():
            shutil.rmtree(data, ignore_errors=True)
            t = time.perf_counter()
            kinds = generate(data, n)
            (data / "_generated.json").write_text(json.dumps({"kinds": kinds, "seconds": time.perf_counter() - t}))
        # a fresh process per size: a fresh JVM, so no size inherits another's heap
        cmd = [sys.executable, __file__, "--one", str(n), "--work", str(work), "--cores", str(args.cores),
               "--driver-memory", args.driver_memory, "--python-memory", args.python_memory,
               "--near-dup" if args.near_dup else "--no-near-dup"]
        load_before = round(os.getloadavg()[0], 1)
        proc = subprocess.run(cmd, capture_output=True, text=True)
        line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
        if proc.returncode or not line:
            res = {"rows": n, "status": "failed", "exit": proc.returncode, "error": proc.stderr[-2000:]}
        else:
            res = json.loads(line[-1][len("RESULT "):])
        res["generated"] = json.loads((data / "_generated.json").read_text())["kinds"]
        res["load_avg_before"], res["load_avg_after"] = load_before, round(os.getloadavg()[0], 1)
        doc["results"].append(res)
        print(json.dumps(res), flush=True)
        (Path(args.out) / "results.json").write_text(json.dumps(doc, indent=2))
        write_md(doc, Path(args.out))
        if not args.keep_data:
            shutil.rmtree(data, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
