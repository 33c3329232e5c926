"""What URL normalisation (urls.normalize_url) costs, per URL and inside extract.

    nice .venv/bin/python bench/urls/run.py [--reps 5] [--pages 3000]

Arms, each timed with time.process_time (CPU seconds: other load on the machine does not
skew it), best of `--reps` interleaved rounds:
  per URL, over the 10,000 real image URLs of shared/data/captions/test_10000.parquet:
    normalize_url   the function extract and download call (regex fast path, then ada)
    ada_only        ada_url.normalize_url on every URL (the parser alone, no fast path)
    fast_check      the fast path's test alone (what a clean URL costs)
  inside extract (udfs.extract.candidates.extract_stream, language ID off) on a generated WAT:
    extract         as committed (every distinct href normalised once per page)
    extract_nonorm  the same with normalize_url replaced by the identity (what it was before)
    extract_calls   the normalize_url calls extract made, replayed alone (a steadier estimate
                    of its share than the difference of two noisy end-to-end times)
Writes bench/urls/results.json; RESULTS.md is written by hand from it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import tempfile
import time
from pathlib import Path

import ada_url
import pyarrow.parquet as pq

from crawlpairs.config import ExtractConfig
from crawlpairs.stats import Stats
from crawlpairs.udfs import urls
from crawlpairs.udfs.extract import candidates as extract_mod

HERE = Path(__file__).resolve().parent
SHARED = Path(os.environ.get("CRAWLPAIRS_SHARED_DATA", HERE.parents[2] / "shared" / "data"))


def _cpu(fn) -> float:
    t0 = time.process_time()
    fn()
    return time.process_time() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--pages", type=int, default=3000)
    a = ap.parse_args()
    caption_urls = [u for u in pq.read_table(SHARED / "captions" / "test_10000.parquet",
                                             columns=["URL"]).column("URL").to_pylist() if u]

    def ada_only() -> None:
        for u in caption_urls:
            with contextlib.suppress(ValueError):
                ada_url.normalize_url(u)

    def norm() -> None:
        for u in caption_urls:
            urls.normalize_url(u)

    def fast() -> None:
        m = urls._CLEAN.fullmatch
        for u in caption_urls:
            m(u)

    from crawlpairs import generate

    work = Path(tempfile.mkdtemp(prefix="bench-urls-"))
    wat = generate.generate(str(work), kind="wat", files=1, pages_per_file=a.pages, seed=3, layout="flat").wat_files[0]
    cfg = ExtractConfig(lid_model=None)
    rows = {}

    def run_extract() -> None:
        with open(wat, "rb") as fh:
            rows["n"] = sum(b.num_rows for b in extract_mod.extract_stream(fh, wat, cfg, Stats()))

    real_norm = extract_mod.normalize_url

    def run_extract_nonorm() -> None:
        extract_mod.normalize_url = lambda u, schemes=None: u  # type: ignore[assignment]
        try:
            run_extract()
        finally:
            extract_mod.normalize_url = real_norm

    arms = {"normalize_url": norm, "ada_only": ada_only, "fast_check": fast,
            "extract": run_extract, "extract_nonorm": run_extract_nonorm}
    calls: list[tuple[str, object]] = []

    def spy(u: str, schemes=urls._HTTP) -> str | None:
        calls.append((u, schemes))
        return real_norm(u, schemes)

    extract_mod.normalize_url = spy  # type: ignore[assignment]
    try:
        run_extract()
    finally:
        extract_mod.normalize_url = real_norm

    def extract_calls() -> None:
        for u, sch in calls:
            real_norm(u, sch)  # type: ignore[arg-type]

    arms["extract_calls"] = extract_calls
    times: dict[str, list[float]] = {k: [] for k in arms}
    rng = random.Random(1)
    for _ in range(a.reps):
        order = list(arms)
        rng.shuffle(order)  # the machine is shared: no arm always runs first or last
        for name in order:
            times[name].append(_cpu(arms[name]))
    best = {k: min(v) for k, v in times.items()}
    n = len(caption_urls)
    fast_share = sum(1 for u in caption_urls if urls._CLEAN.fullmatch(u)) / n
    out = {
        "machine": f"{platform.machine()} {os.cpu_count()} cores, {platform.python_version()}",
        "load_average": os.getloadavg(),
        "urls": n,
        "fast_path_share": round(fast_share, 4),
        "us_per_url": {k: round(best[k] / n * 1e6, 2) for k in ("normalize_url", "ada_only", "fast_check")},
        "extract_pages": a.pages,
        "extract_rows": rows.get("n"),
        "extract_cpu_s": {k: round(best[k], 3) for k in ("extract", "extract_nonorm")},
        "extract_overhead_pct": round((best["extract"] / best["extract_nonorm"] - 1) * 100, 1),
        "extract_normalize_calls": len(calls),
        "extract_normalize_cpu_s": round(best["extract_calls"], 4),  # the same calls replayed alone
        "extract_normalize_share_pct": round(best["extract_calls"] / best["extract"] * 100, 1),
        "rounds": a.reps,
        "all_cpu_s": times,
    }
    (HERE / "results.json").write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({k: v for k, v in out.items() if k != "all_cpu_s"}, indent=2))


if __name__ == "__main__":
    main()
