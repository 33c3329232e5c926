"""Precision/recall of the near-duplicate defaults on the labelled real-caption sample.

Runs the same udfs the Spark job runs (signatures, band keys, exact-Jaccard
verification, connected components) in one process, for the default parameters and
a few alternatives, and writes `bench/dedup/quality.json`.

    .venv/bin/python bench/dedup/quality.py [--captions PATH] [--out bench/dedup/quality.json]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from labelled import make_labelled  # noqa: E402

from crawlpairs.config import DedupConfig  # noqa: E402
from crawlpairs.udfs.dedup import minhash  # noqa: E402


def _find(parent: dict[int, int], x: int) -> int:
    while parent.get(x, x) != x:
        parent[x] = parent.get(parent[x], parent[x])
        x = parent[x]
    return x


def predict(texts: list[str], k: int, num_perm: int, bands: int, rows: int, threshold: float
            ) -> tuple[set[tuple[int, int]], set[tuple[int, int]]]:
    """(candidate pairs from LSH, pairs in the same verified component)."""
    sig, has = minhash.signatures(texts, k=k, num_perm=num_perm)
    idx = np.flatnonzero(has)
    keys = minhash.band_keys(sig[has], bands, rows)
    buckets: dict[int, list[int]] = defaultdict(list)
    for i, row in zip(idx.tolist(), keys.tolist(), strict=True):
        for key in row:
            buckets[key].append(i)
    cand: set[tuple[int, int]] = set()
    edges: set[tuple[int, int]] = set()
    for members in buckets.values():
        if len(members) < 2:
            continue
        rep = min(members)
        for m in members:
            if m != rep:
                edges.add((rep, m))
        for a, b in itertools.combinations(sorted(set(members)), 2):
            cand.add((a, b))
    parent: dict[int, int] = {}
    for a, b in edges:
        if threshold <= 0 or minhash.jaccard(texts[a], texts[b], k) >= threshold:
            ra, rb = _find(parent, a), _find(parent, b)
            if ra != rb:
                parent[max(ra, rb)] = min(ra, rb)
    comps: dict[int, list[int]] = defaultdict(list)
    for x in list(parent):
        comps[_find(parent, x)].append(x)
    for r in list(comps):
        comps[r].append(r)
    same = {(a, b) for c in comps.values() for a, b in itertools.combinations(sorted(set(c)), 2)}
    return cand, same


def truth_pairs(groups: list[int]) -> set[tuple[int, int]]:
    by: dict[int, list[int]] = defaultdict(list)
    for i, g in enumerate(groups):
        by[g].append(i)
    return {(a, b) for m in by.values() if len(m) > 1 for a, b in itertools.combinations(m, 2)}


def prf(pred: set, true: set) -> dict[str, float]:
    tp = len(pred & true)
    return {"pairs_predicted": len(pred), "pairs_true": len(true), "true_positives": tp,
            "precision": round(tp / len(pred), 4) if pred else 1.0,
            "recall": round(tp / len(true), 4) if true else 1.0}


def main() -> int:
    shared = Path(os.environ.get("CRAWLPAIRS_SHARED_DATA", Path(__file__).resolve().parents[2] / ".." / "shared" / "data"))
    ap = argparse.ArgumentParser()
    ap.add_argument("--captions", default=str(shared / "captions" / "test_10000.parquet"))
    ap.add_argument("--out", default=str(Path(__file__).with_name("quality.json")))
    args = ap.parse_args()
    df = make_labelled(pd.read_parquet(args.captions), variant_fraction=0.3, seed=0)
    texts, groups = df["text"].tolist(), df["group"].tolist()
    true = truth_pairs(groups)
    d = DedupConfig()
    # exact Jaccard of every true pair, by edit kind: what a threshold can and cannot catch
    by_edit: dict[str, list[float]] = defaultdict(list)
    first = {}
    for i, g in enumerate(groups):
        first.setdefault(g, i)
    for i, (g, e) in enumerate(zip(groups, df["edit"], strict=True)):
        if e != "original":
            by_edit[e].append(minhash.jaccard(texts[first[g]], texts[i], d.shingle_size))
    edit_stats = {e: {"n": len(v), "median_jaccard": round(float(np.median(v)), 3),
                      f"share_ge_{d.threshold}": round(float(np.mean(np.array(v) >= d.threshold)), 3)}
                  for e, v in sorted(by_edit.items())}
    settings = [("default", d.shingle_size, d.num_perm, d.bands, d.rows_per_band, d.threshold)]
    for name, k, b, r, t in [("no_verify", d.shingle_size, d.bands, d.rows_per_band, 0.0),
                             ("b20r5", d.shingle_size, 20, 5, d.threshold),
                             ("b16r6", d.shingle_size, 16, 6, d.threshold),
                             ("k4", 4, d.bands, d.rows_per_band, d.threshold),
                             ("k5_b16r8_t0.7", 5, 16, 8, 0.7),
                             ("b20r4_t0.5", d.shingle_size, 20, 4, 0.5)]:
        settings.append((name, k, b * r, b, r, t))
    results = []
    for name, k, p, b, r, t in settings:
        t0 = time.perf_counter()
        cand, same = predict(texts, k, p, b, r, t)
        results.append({"setting": name, "shingle_size": k, "num_perm": p, "bands": b, "rows_per_band": r,
                        "verify_threshold": t, "lsh_threshold": round(minhash.lsh_threshold(b, r), 3),
                        "candidates": prf(cand, true), "final": prf(same, true),
                        "seconds": round(time.perf_counter() - t0, 2)})
        print(json.dumps(results[-1]))
    doc = {"rows": len(df), "originals": int((df["edit"] == "original").sum()),
           "variants": int((df["edit"] != "original").sum()), "edits": edit_stats, "results": results}
    Path(args.out).write_text(json.dumps(doc, indent=2))
    print(json.dumps(edit_stats, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
