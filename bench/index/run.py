"""Benchmark of `crawlpairs index`: build time, recall@10 vs exact search, overhead vs autofaiss.

    nice .venv/bin/python bench/index/run.py [--n 1000000] [--dim 256] [--parts 10]

Both arms run in this one process on the same generated vectors with the same autofaiss options:
  direct:     autofaiss.build_index(embeddings=<img_emb folder>, ...)
  crawlpairs: crawlpairs.udfs.index.build.build(<embeddings root>, ...) - the index job minus Spark start-up:
              part discovery and checks, metadata copy in id order, autofaiss, index_info.json.
Recall@10 compares each index's top-10 with faiss IndexFlatIP (exact) on held-out queries drawn
from the same distribution; self-hit@1 queries indexed rows with their own vectors.

Vectors: a mixture of Gaussian clusters on the unit sphere (CLIP embeddings are clustered, and
uniform random vectors would make every ANN index look worse than it is on real data).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def generate(root: Path, n: int, dim: int, parts: int, cluster_size: int, spread: float,
             seed: int = 0) -> np.ndarray:
    """Write a clip-retrieval layout (img_emb/, metadata/) and return held-out queries.

    `spread` is the per-dimension noise around a cluster centre: 0.1 at dim 256 puts a point at cosine
    ~0.5 from its centre and ~0.3 from its cluster mates, so the top-10 of a query is decided inside
    broad clusters of `cluster_size` points, the hard case for IVF cells (well-separated tight
    clusters make every index look perfect).
    """
    import pandas as pd

    marker = root / "_generated.json"
    want = {"n": n, "dim": dim, "parts": parts, "seed": seed, "cluster_size": cluster_size, "spread": spread}
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(max(10, n // cluster_size), dim)).astype(np.float32)
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)

    def draw(m: int, rng: np.random.Generator = rng) -> np.ndarray:
        x = centers[rng.integers(0, len(centers), m)] + rng.normal(scale=spread, size=(m, dim)).astype(np.float32)
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    if not (marker.exists() and json.loads(marker.read_text()) == want):
        shutil.rmtree(root, ignore_errors=True)
        (root / "img_emb").mkdir(parents=True)
        (root / "metadata").mkdir()
        per = -(-n // parts)
        done = 0
        for i in range(parts):
            m = min(per, n - done)
            np.save(root / "img_emb" / f"img_emb_{i:04d}.npy", draw(m))
            ids = np.arange(done, done + m)
            pd.DataFrame({
                "uid": [f"{j:016x}" for j in ids],
                "url": [f"https://img.example.org/{j % 997}/{j}.jpg" for j in ids],
                "text": [f"generated caption number {j}" for j in ids],
                "similarity": rng.uniform(0.2, 0.4, m).astype(np.float32),
            }).to_parquet(root / "metadata" / f"metadata_{i:04d}.parquet", index=False)
            done += m
        marker.write_text(json.dumps(want))
    return draw(1000, np.random.default_rng(seed + 1))  # held-out queries: same clusters, fresh noise


def load_all(root: Path) -> np.ndarray:
    files = sorted((root / "img_emb").glob("*.npy"))
    return np.concatenate([np.load(f) for f in files])


def _cpu() -> float:
    """CPU seconds of this process (all threads): less sensitive than wall time to a busy machine."""
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def recall_at(ann_ids: np.ndarray, exact_ids: np.ndarray, k: int = 10) -> float:
    hits = [len(set(a[:k]) & set(e[:k])) for a, e in zip(ann_ids, exact_ids, strict=True)]
    return float(np.mean(hits) / k)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--parts", type=int, default=10)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--cluster-size", type=int, default=5000, help="generated points per cluster")
    ap.add_argument("--spread", type=float, default=0.1, help="per-dimension noise around cluster centres")
    ap.add_argument("--max-index-memory-usage", default="2G")
    ap.add_argument("--current-memory-available", default="8G")
    ap.add_argument("--max-index-query-time-ms", type=float, default=10.0)
    ap.add_argument("--index-key", default=None)
    ap.add_argument("--work", default=str(HERE / "work"))
    ap.add_argument("--order", default="direct,crawlpairs", help="arm order (both always run)")
    ap.add_argument("--tag", default="", help="write results-<tag>.json / RESULTS-<tag>.md instead")
    args = ap.parse_args()

    import faiss
    from autofaiss import build_index

    from crawlpairs.config import IndexConfig
    from crawlpairs.stats import Stats
    from crawlpairs.udfs.index import build as knn_build
    from crawlpairs.udfs.index import query as knn_query

    work = Path(args.work)
    emb = work / f"emb-{args.n}-{args.dim}"
    t = time.perf_counter()
    queries = generate(emb, args.n, args.dim, args.parts, args.cluster_size, args.spread)[: args.queries]
    gen_s = time.perf_counter() - t
    cfg = IndexConfig(
        kinds=["img_emb"], max_index_memory_usage=args.max_index_memory_usage,
        current_memory_available=args.current_memory_available,
        max_index_query_time_ms=args.max_index_query_time_ms, index_key=args.index_key,
    )
    opts = knn_build.autofaiss_options(cfg)
    results: dict = {"arms": {}}
    for arm in args.order.split(","):
        out = work / f"out-{arm}"
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        t = time.perf_counter()
        cpu0 = _cpu()
        if arm == "direct":
            import logging

            _, infos = build_index(
                embeddings=str(emb / "img_emb"), index_path=str(out / "knn.index"),
                index_infos_path=str(out / "infos.json"), file_format="npy", verbose=logging.WARNING, **opts,
            )
            seconds = time.perf_counter() - t
            index_files = [out / "knn.index"]
        else:
            stats = Stats()
            info = knn_build.build(str(emb), str(out), cfg, stats=stats, force=True)
            seconds = time.perf_counter() - t
            infos = info["kinds"]["img_emb"]["shards"][0]["autofaiss"]
            index_files = [out / s["file"] for s in info["kinds"]["img_emb"]["shards"]]
            inside = stats.extra["autofaiss_seconds"]
        results["arms"][arm] = {
            "seconds": round(seconds, 2),
            "cpu_seconds": round(_cpu() - cpu0, 2),
            "index_key": infos.get("index_key"),
            "index_param": infos.get("index_param"),
            "index_bytes": sum(f.stat().st_size for f in index_files),
            "autofaiss_infos": {k: v for k, v in infos.items() if k != "index_path"},
        }
        if arm != "direct":
            # what crawlpairs adds, timed directly: everything outside autofaiss.build_index
            results["arms"][arm]["inside_autofaiss_seconds"] = inside
            results["arms"][arm]["wrapper_seconds"] = round(seconds - inside, 2)
        print(f"{arm}: {seconds:.1f} s, {infos.get('index_key')} {infos.get('index_param')}", file=sys.stderr)

    # exact neighbours
    xb = load_all(emb)
    t = time.perf_counter()
    flat = faiss.IndexFlatIP(xb.shape[1])
    flat.add(xb)
    _, exact = flat.search(queries, 10)
    exact_s = time.perf_counter() - t
    self_rows = np.random.default_rng(7).choice(len(xb), size=min(200, len(xb)), replace=False)

    direct_index = faiss.read_index(str(work / "out-direct" / "knn.index"))
    ours = knn_query.KnnIndex(str(work / "out-crawlpairs"))
    for arm, search in (("direct", lambda q: direct_index.search(q, 10)[1]),
                        ("crawlpairs", lambda q: ours.search(q, 10)[1])):
        t = time.perf_counter()
        ids = search(queries)
        q_s = time.perf_counter() - t
        self_ids = search(xb[self_rows])
        results["arms"][arm]["recall_at_10"] = round(recall_at(ids, exact), 4)
        results["arms"][arm]["self_hit_at_1"] = round(float(np.mean(self_ids[:, 0] == self_rows)), 4)
        results["arms"][arm]["batch_query_ms_per_query"] = round(1000 * q_s / len(queries), 3)
    # recall vs the search parameter, on the direct arm's index: shows what the latency target bought
    ivf = None
    with contextlib.suppress(RuntimeError):
        ivf = faiss.extract_index_ivf(direct_index)
    if ivf is not None:
        sweep = {}
        for nprobe in (1, 4, 16, 64):
            ivf.nprobe = nprobe
            sweep[nprobe] = round(recall_at(direct_index.search(queries, 10)[1], exact), 4)
        results["recall_at_10_by_nprobe"] = sweep
    # the end-to-end check: a hit maps back to its own metadata row
    hit = knn_query.query(ours, vector=xb[self_rows[0]], k=1)[0]
    results["metadata_roundtrip_ok"] = hit["text"] == f"generated caption number {self_rows[0]}"

    d, c = results["arms"]["direct"]["seconds"], results["arms"]["crawlpairs"]["seconds"]
    results.update({
        "n": args.n, "dim": args.dim, "parts": args.parts, "queries": len(queries),
        "cluster_size": args.cluster_size, "spread": args.spread, "order": args.order,
        "options": {k: v for k, v in opts.items()},
        "generate_seconds": round(gen_s, 1), "exact_search_seconds": round(exact_s, 2),
        "overhead_pct": round(100 * (c - d) / d, 2),
        "wrapper_overhead_pct": round(100 * results["arms"]["crawlpairs"]["wrapper_seconds"]
                                      / results["arms"]["crawlpairs"]["inside_autofaiss_seconds"], 2),
        "overhead_cpu_pct": round(100 * (results["arms"]["crawlpairs"]["cpu_seconds"]
                                         - results["arms"]["direct"]["cpu_seconds"])
                                  / results["arms"]["direct"]["cpu_seconds"], 2),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}, "
                   f"faiss {faiss.__version__}, autofaiss {knn_build._autofaiss_version()}",
        "load": os.getloadavg(),
        "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
        "finished": knn_build.now_iso(),
    })
    suffix = f"-{args.tag}" if args.tag else ""
    (HERE / f"results{suffix}.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    write_md(results, HERE / f"RESULTS{suffix}.md")
    print(json.dumps({k: v for k, v in results.items() if k != "arms"}, default=str))
    print(json.dumps({a: {k: v for k, v in r.items() if k != "autofaiss_infos"} for a, r in results["arms"].items()}))
    return 0


def write_md(r: dict, path: Path = HERE / "RESULTS.md") -> None:
    a, b = r["arms"]["direct"], r["arms"]["crawlpairs"]
    lines = [
        "# bench/index: kNN index build",
        "",
        f"Machine: {r['machine']}; load average at the end {tuple(round(x, 1) for x in r['load'])} "
        "(shared with other workers).",
        f"Command: `{r['command']}` (under `nice`)",
        "",
        f"{r['n']:,} generated vectors x {r['dim']} float32 (clusters of {r['cluster_size']:,}, spread "
        f"{r['spread']}, L2-normalised) in {r['parts']} .npy parts with metadata Parquet; arms run in the order "
        f"{r['order']}; options {json.dumps({k: v for k, v in r['options'].items() if v is not None})}.",
        "",
        "| arm | build s (wall) | CPU s | index | search params | size MB | recall@10 vs exact | self-hit@1 | ms/query (batch of 1000) |",
        "| --- | ---: | ---: | --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for name, x in (("autofaiss.build_index directly", a), ("crawlpairs index (knn_build.build)", b)):
        lines.append(
            f"| {name} | {x['seconds']:.1f} | {x['cpu_seconds']:.1f} | {x['index_key']} | {x['index_param']} | "
            f"{x['index_bytes'] / 1e6:.0f} | {x['recall_at_10']:.3f} | {x['self_hit_at_1']:.3f} | "
            f"{x['batch_query_ms_per_query']:.3f} |"
        )
    lines += [
        "",
        f"Overhead of crawlpairs over autofaiss: **{r['overhead_pct']:+.1f}%** of wall build time, "
        f"{r['overhead_cpu_pct']:+.1f}% of CPU time (goal <= 10%): A/B of two separate builds, so it carries "
        "the run-to-run noise of autofaiss's time-bounded parameter search on a busy machine.",
        f"Timed directly inside the crawlpairs arm: {b['wrapper_seconds']:.1f} s outside autofaiss.build_index vs "
        f"{b['inside_autofaiss_seconds']:.1f} s inside = **{r['wrapper_overhead_pct']:.1f}%** added by crawlpairs "
        "(part checks, metadata copy, index_info.json, publishing).",
        *([f"Recall@10 by nprobe on the same index: {r['recall_at_10_by_nprobe']}."]
          if r.get("recall_at_10_by_nprobe") else []),
        f"Exact search (IndexFlatIP) for the ground truth: {r['exact_search_seconds']} s; "
        f"metadata round trip (hit -> its own caption): {r['metadata_roundtrip_ok']}.",
        "",
        "What bounds it: autofaiss's own work (HNSW/IVF add on 2 shared cores, then its hyper-parameter "
        "search and speed tests, which run for seconds regardless of size). crawlpairs adds the part "
        "checks (npy headers, Parquet footers), the metadata copy in id order and the info file; "
        "the two arms also differ by run-to-run noise on a shared machine, which is of the same order.",
        "Recall is measured on held-out queries from the same clusters. The search parameter (nprobe/efSearch) "
        "is what autofaiss's latency-target tuning picked in each arm; it is wall-clock based, so it differs "
        "between arms on a busy machine, and with it the ms/query.",
    ]
    if r["options"].get("index_key"):
        lines += [
            "",
            "Index type: with `--index-key` unset autofaiss picks HNSW32 for 1M x 256 under a 2G budget. HNSW "
            "insertion costs ~6 CPU-s per 20k vectors here (~400+ CPU-s for 1M), which on 2 cores shared with six "
            "other workers (load 15-25, ~15% of a core for a niced job) would not finish both arms in the time "
            "available, so the recorded runs force `IVF1024,Flat` (same flag in both arms; autofaiss still trains, "
            "adds, tunes nprobe for the 10 ms target and measures). Run without `--index-key` on a quiet machine "
            "to benchmark autofaiss's own choice (`RESULTS-200k-auto.md` does that at 200k vectors).",
        ]
    path.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
