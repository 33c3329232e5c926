"""Dedup benchmark: rows/s per core and cost per row at several table sizes, in one run.

Generates candidate tables (realistic captions: word sequences drawn from the real
caption vocabulary of captions/test_10000.parquet, plus injected exact, same-url and
near-duplicate rows), then runs the real DedupStage (seen-set on, near-dup on, default
parameters) on a fresh local[N] session per size, sampling the memory of the JVM and
its Python workers. Writes bench/dedup/results.json and bench/dedup/RESULTS.md.

    nice .venv/bin/python bench/dedup/run.py --sizes 1000000,10000000 [--cores 2]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
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


def generate(root: Path, n: int, seed: int = 0, chunk: int = 500_000) -> dict:
    """n candidate rows under root/crawl=.../batch=b0/, ~20% of them duplicates of three kinds."""
    from crawlpairs.udfs.extract import CANDIDATE_SCHEMA

    caps = pd.read_parquet(shared_data() / "captions" / "test_10000.parquet")["TEXT"].astype(str)
    vocab = np.array(sorted({w for t in caps for w in t.split() if 1 < len(w) < 20}))
    rng = np.random.default_rng(seed)
    zipf = 1.0 / np.arange(1, vocab.size + 1) ** 0.9
    p = zipf / zipf.sum()
    domains = np.array([f"img{i}.example{i % 97}.com" for i in range(20_000)])
    names = [f.name for f in CANDIDATE_SCHEMA if f.name != "crawl"]
    schema = pa.schema([CANDIDATE_SCHEMA.field(x) for x in names])
    out = root / "crawl=CC-MAIN-2024-33" / "batch=b0"
    out.mkdir(parents=True, exist_ok=True)
    t0 = dt.datetime(2024, 8, 1, tzinfo=dt.UTC)
    kinds = {"unique": 0, "exact_copy": 0, "same_url": 0, "near_variant": 0}
    from crawlpairs.udfs.extract import make_uid

    for part, lo in enumerate(range(0, n, chunk)):
        m = min(chunk, n - lo)
        nwords = rng.integers(3, 12, m)
        words = vocab[rng.choice(vocab.size, size=(m, 12), p=p)]
        texts = [" ".join(words[i, : nwords[i]]) for i in range(m)]
        dom = domains[rng.integers(0, domains.size, m)]
        urls = [f"https://{d}/i/{lo + i:09d}.jpg" for i, d in enumerate(dom)]
        kind = rng.choice(4, size=m, p=[0.8, 0.08, 0.04, 0.08])
        src = np.maximum(np.arange(m) - rng.integers(1, 1000, m), 0)
        for i in np.flatnonzero(kind == 1):  # exact copy of an earlier row (url + text)
            urls[i], texts[i] = urls[src[i]], texts[src[i]]
        for i in np.flatnonzero(kind == 2):  # same url, another caption
            urls[i] = urls[src[i]]
        for i in np.flatnonzero(kind == 3):  # near-duplicate caption, same image domain, other image
            urls[i] = urls[src[i]].replace(".jpg", f"-{i}.jpg")
            texts[i] = texts[src[i]] + " - Free Shipping"
        for k, name in enumerate(kinds):
            kinds[name] += int((kind == k).sum())
        idom = [u.split("/")[2] for u in urls]
        ft = (np.datetime64(t0.replace(tzinfo=None), "us")
              + rng.integers(0, 86400 * 30, m).astype("timedelta64[s]").astype("timedelta64[us]"))
        table = pa.table({
            "uid": [make_uid(u, t) for u, t in zip(urls, texts, strict=True)], "url": urls, "text": texts,
            "text_source": ["alt"] * m, "page_url": [f"https://{d}/page/{i}.html" for i, d in enumerate(idom)],
            "page_domain": idom, "image_domain": idom, "language": ["en"] * m,
            "language_score": np.full(m, 0.9, np.float32), "license": [None] * m, "license_url": [None] * m,
            "source_file": [f"crawl-data/CC-MAIN-2024-33/segments/x/wat/f{part:05d}.warc.wat.gz"] * m,
            "source_offset": np.arange(lo, lo + m, dtype=np.int64), "fetch_time": pa.array(ft).cast(pa.timestamp("us", "UTC")),
            "width": pa.nulls(m, pa.int32()), "height": pa.nulls(m, pa.int32()),
        }).select(names).cast(schema)
        pq.write_table(table, out / f"part-{part:05d}.parquet", compression="zstd")
    return kinds


class MemorySampler(threading.Thread):
    """Peak RSS of this process's children (the JVM, Python workers) and of the largest one."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak_total = 0
        self.peak_jvm = 0
        self.peak_worker = 0
        self.stop = threading.Event()

    def run(self) -> None:
        me = psutil.Process()
        while not self.stop.is_set():
            total = jvm = worker = 0
            for c in me.children(recursive=True):
                try:
                    rss = c.memory_info().rss
                    name = c.name()
                except psutil.Error:
                    continue
                total += rss
                if "java" in name:
                    jvm = max(jvm, rss)
                else:
                    worker = max(worker, rss)
            self.peak_total = max(self.peak_total, total)
            self.peak_jvm = max(self.peak_jvm, jvm)
            self.peak_worker = max(self.peak_worker, worker)
            self.stop.wait(1.0)


def run_one(data: Path, work: Path, n: int, cores: int, driver_mem: str) -> dict:
    from crawlpairs.config import Config
    from crawlpairs.jobs.dedup import CACHE_LEVEL, DedupStage
    from crawlpairs.spark import get_spark
    from crawlpairs.stage import run_stage

    cfg = Config()
    cfg.input = [str(data)]
    cfg.output = str(work / f"out_{n}")
    cfg.dedup.seen = str(work / f"seen_{n}")
    cfg.spark.master = f"local[{cores}]"
    cfg.spark.local_dir = str(work / "spark-local")
    cfg.spark.shuffle_partitions = max(4, n // 100_000)  # ~100k rows per shuffle partition at every size
    cfg.spark.conf.update({"spark.ui.enabled": "false", "spark.driver.memory": driver_mem})
    for p in (cfg.output, cfg.dedup.seen):
        shutil.rmtree(p, ignore_errors=True)
    sampler = MemorySampler()
    sampler.start()
    spark = get_spark(cfg)
    t0 = time.perf_counter()
    stats = run_stage(DedupStage, cfg, spark)
    seconds = time.perf_counter() - t0
    spark.stop()
    sampler.stop.set()
    sampler.join()
    return {
        "rows": n, "seconds": round(seconds, 1), "cores": cores, "driver_memory": driver_mem, "cache": CACHE_LEVEL,
        "rows_per_s_per_core": round(n / seconds / cores, 1),
        "core_us_per_row": round(seconds * cores / n * 1e6, 2),
        "usd_per_million_rows": round(seconds * cores / 3600 * PRICE_PER_CORE_HOUR / n * 1e6, 5),
        "rows_out": stats.counts.get("rows_out"), "dropped": dict(stats.dropped),
        "extra": {k: v for k, v in stats.extra.items() if k != "seen"},
        "peak_rss_mb": {"all": sampler.peak_total >> 20, "jvm": sampler.peak_jvm >> 20,
                        "largest_python_worker": sampler.peak_worker >> 20},
    }


def write_md(doc: dict) -> None:
    lines = ["# Dedup benchmark", "", f"Machine: {doc['machine']}. Command: `{doc['command']}`.", "",
             f"Session: local[{doc['cores']}], driver (= the only executor) memory {doc['driver_memory']}; "
             "default dedup parameters (shingle 3, 50 perms, 10 bands x 5 rows, Jaccard check 0.6, scope "
             "image_domain), seen-set on (first run: reads nothing, appends everything).", "",
             "| rows | heap | cache | seconds | rows/s/core | core-µs/row | USD / 1M rows | rows out | "
             "peak RSS all / JVM / py worker (MB) |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in doc["results"]:
        m = r["peak_rss_mb"]
        lines.append(f"| {r['rows']:,} | {r['driver_memory']} | {r['cache']} | {r['seconds']} | "
                     f"{r['rows_per_s_per_core']:,} | {r['core_us_per_row']} | {r['usd_per_million_rows']} | "
                     f"{r['rows_out']:,} | {m['all']} / {m['jvm']} / {m['largest_python_worker']} |")
    if len(doc["results"]) >= 2:
        a, b = doc["results"][0], doc["results"][-1]
        lines += ["", f"Cost per row, {b['rows']:,} vs {a['rows']:,} rows: "
                  f"{b['core_us_per_row'] / a['core_us_per_row']:.2f}x (goal: within 0.8-1.2x)."]
    lines += ["", doc.get("notes", "")]
    (HERE / "RESULTS.md").write_text("\n".join(lines) + "\n")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1000000,10000000")
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--driver-memory", default="3g")
    ap.add_argument("--work", default=str(HERE / "work"))
    ap.add_argument("--keep-data", action="store_true")
    args = ap.parse_args()
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    doc = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, "
                      f"{psutil.virtual_memory().total >> 30} GB, shared with other jobs (load avg at start "
                      f"{os.getloadavg()[0]:.1f})",
           "command": "nice .venv/bin/python bench/dedup/run.py " + " ".join(sys.argv[1:]),
           "cores": args.cores, "driver_memory": args.driver_memory, "started": dt.datetime.now().isoformat(),
           "price_per_core_hour_usd": PRICE_PER_CORE_HOUR, "results": []}
    for n in [int(x) for x in args.sizes.split(",")]:
        data = work / f"data_{n}"
        if not (data / "_generated.json").exists():
            shutil.rmtree(data, ignore_errors=True)
            t = time.perf_counter()
            kinds = generate(data, n)
            (data / "_generated.json").write_text(json.dumps({"kinds": kinds, "seconds": time.perf_counter() - t}))
        res = run_one(data, work, n, args.cores, args.driver_memory)
        res["generated"] = json.loads((data / "_generated.json").read_text())["kinds"]
        res["load_avg_after"] = round(os.getloadavg()[0], 1)
        doc["results"].append(res)
        print(json.dumps(res), flush=True)
        (HERE / "results.json").write_text(json.dumps(doc, indent=2))
        write_md(doc)
        if not args.keep_data:
            shutil.rmtree(data, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
