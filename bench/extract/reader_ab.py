"""Before/after of the member-by-member reader (issue 8) on a generated WAT, one core.

    nice .venv/bin/python bench/extract/reader_ab.py [--pages 8500] [--reps 5] [--before 8a627f1]

`before` = the udfs of HEAD with `udfs/extract/candidates.py` taken from the revision before the reader
(FastWARC over the whole stream), so the only difference between the arms is the reading
code. Arms (bench/extract/worker.py, a fresh process each, rounds interleaved in a shuffled
order, CPU time of the work, median over rounds):
  ours / ours_nolid                      extract_stream end to end, with / without language ID
  ours_baseline / ours_baseline_nolid    the same with the `before` extract.py
  read_members                           udfs.extract.warcread framing + payloads only
  floor_read                             FastWARC iterate + read payloads only
  inflate_isal                           ISA-L inflate of every member, nothing else
Writes bench/extract/READER.md and reader.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))

from run import corpus_gen, machine, run_arm  # noqa: E402

ARMS = ["ours", "ours_nolid", "ours_baseline", "ours_baseline_nolid", "read_members", "floor_read", "inflate_isal"]


def baseline(work: Path, rev: str) -> Path:
    out = work / f"reader-before-{rev}"
    out.mkdir(parents=True, exist_ok=True)
    for name in ("urls", "text", "langid", "license", "wat", "html", "extract"):
        src = subprocess.run(["git", "-C", str(REPO), "show", f"{rev if name == 'extract' else 'HEAD'}:udfs/{name}.py"],
                             check=True, capture_output=True).stdout
        (out / f"{name}.py").write_bytes(src)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pages", type=int, default=8500)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--before", default="8a627f1")
    ap.add_argument("--work", default=str(HERE / "work"))
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    files = corpus_gen(work, 1, args.pages)
    size = sum(os.path.getsize(f) for f in files)
    base = baseline(work, args.before)
    runs: dict[str, list[dict]] = {a: [] for a in ARMS}
    rng = random.Random(0)
    load_before = os.getloadavg()
    for rep in range(args.reps):
        order = list(ARMS)
        rng.shuffle(order)
        for arm in order:
            r = run_arm(arm, files, Path(sys.executable), base)
            runs[arm].append(r)
            print(f"round {rep} {arm:20s} cpu {r['cpu']:.3f}s", flush=True)
    rows = {}
    for arm, rs in runs.items():
        cpu = statistics.median(r["cpu"] for r in rs)
        rows[arm] = {"cpu": cpu, "mb_s": size / cpu / 1e6, "pairs": rs[0].get("pairs")}
    res = {"command": " ".join([".venv/bin/python", "bench/extract/reader_ab.py", *sys.argv[1:]]),
           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": machine(),
           "load_before": load_before, "load_after": os.getloadavg(), "reps": args.reps,
           "file_mb": size / 1e6, "before": args.before, "arms": rows}
    (HERE / "reader.json").write_text(json.dumps(res, indent=1) + "\n")
    lines = ["# Reader before/after (issue 8: member-by-member reading)", "",
             f"Command: `{res['command']}`  ",
             f"Date: {res['date']}; load average {load_before[0]:.1f} before, {res['load_after'][0]:.1f} after "
             f"(2 shared CPUs: CPU-time medians of {args.reps} interleaved rounds).  ",
             f"Corpus: one generated WAT (`crawlpairs.generate`, {args.pages} pages), {size / 1e6:.1f} MB gzipped.  ",
             f"`before`: HEAD's udfs with `udfs/extract/candidates.py` of {args.before} (FastWARC over the whole stream).", "",
             "| arm | CPU s | MB/s gz (one core) | pairs |", "| --- | ---: | ---: | ---: |"]
    for arm, r in rows.items():
        lines.append(f"| {arm} | {r['cpu']:.3f} | {r['mb_s']:.1f} | {r['pairs'] or ''} |")
    lines += ["", f"- after / before, with language ID: **{rows['ours']['mb_s'] / rows['ours_baseline']['mb_s']:.3f}**",
              f"- after / before, without: **{rows['ours_nolid']['mb_s'] / rows['ours_baseline_nolid']['mb_s']:.3f}**",
              f"- framing alone, warcread / FastWARC: **{rows['read_members']['mb_s'] / rows['floor_read']['mb_s']:.3f}**",
              ""]
    (HERE / "READER.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
