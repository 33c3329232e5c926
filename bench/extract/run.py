"""Extraction benchmark: ours vs cc2dataset 1.5.0 vs the inflate/parse floor, one core.

    .venv/bin/python bench/extract/run.py [--pages 8500] [--files 1] [--reps 3]

Corpora (written once under bench/extract/work/, gitignored):
  gen   WATs from crawlpairs.generate (realistic page statistics, synthetic text)
  real  WATs from the real HTML pages of the shared WARCs (bench/extract/realwat.py),
        in Common Crawl's layout and compression (gzip -6 per record)
Arms (bench/extract/worker.py, each in a fresh process pinned to one CPU):
  ours            udfs.extract.candidates.extract_stream end to end: filters, cleanup, license, uid, fastText,
                  with the compiled WAT loop (udfs/extract/_hotloop.c); also reports language ID's CPU
                  per distinct caption
  ours_nolid      the same without language ID (to show what lid costs)
  ours_python[_nolid]  the same two on the pure-Python loop (CRAWLPAIRS_EXTRACT_ENGINE=python)
  read_members    udfs.extract.warcread alone: the member-by-member reader extract uses (no JSON)
  ours_baseline[_nolid]  the same two with the udfs of an older revision (--baseline-rev), to
                  measure a change before/after in one run
  cc2dataset      cc2dataset 1.5.0's process_wat(path, "image") (FastWARC + simdjson, no filters),
                  run from its own venv bench/.venvs/cc2dataset (created here if missing)
  floor_parse     FastWARC + orjson.loads of EVERY record (what parse-everything costs)
  floor_read      FastWARC iterate + read every record (inflate + WARC framing)
  inflate_*       gzip members inflated with ISA-L / zlib-ng / zlib, nothing else (--arms)
--job adds the job: `crawlpairs extract --master local[1]` (CLI, fresh process) on the tiny
real WAT (its wall time is the fixed cost: JVM, session, Python worker, model) and on the
corpus files, both engines; marginal cost = corpus run minus tiny run, per gzipped MB, next
to the task's own seconds for the file (from its manifest).
A run writes results.json and RESULTS.md; what the numbers mean for that run is written by hand
into results.json as `notes` (markdown lines) and RESULTS.md rebuilt with `--markdown-only`, so
the reading always sits with the numbers it reads.
The machine is shared with other jobs, so every arm runs once per round, rounds repeat
`--reps` times in a shuffled order, and rates are computed from each process's CPU time
(time.process_time: the core-seconds the work itself took), medians over rounds. Wall
times are recorded too. One-time per-process costs (imports, model load) are excluded.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
VENV_CC2 = REPO / "bench" / ".venvs" / "cc2dataset"
ARMS = ["ours", "ours_nolid", "ours_python", "ours_python_nolid", "cc2dataset", "floor_parse", "floor_read",
        "read_members"]
TINY_WAT = "wat/CC-MAIN-20140820021334-00006-ip-10-180-136-8.ec2.internal.warc.wat.gz"


def shared_data() -> Path:
    return Path(os.environ.get("CRAWLPAIRS_SHARED_DATA", REPO.parent / "shared" / "data"))


def ensure_cc2dataset() -> Path:
    py = VENV_CC2 / "bin" / "python"
    if not (py.exists() and subprocess.run([str(py), "-c", "import cc2dataset.main"],
                                           capture_output=True).returncode == 0):
        print("creating", VENV_CC2, flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(VENV_CC2)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", "cc2dataset==1.5.0"], check=True)
    return py


def corpus_gen(work: Path, files: int, pages: int) -> list[str]:
    from crawlpairs.generate import generate

    out = work / f"gen-{files}x{pages}"
    marker = out / "_bench_done.json"
    if marker.exists():
        return json.loads(marker.read_text())["files"]
    res = generate(str(out), kind="wat", files=files, pages_per_file=pages, seed=7, layout="flat",
                   write_truth=False)
    marker.write_text(json.dumps({"files": res.wat_files}))
    return res.wat_files


def corpus_real(work: Path, files: int, pages: int) -> list[str]:
    sys.path.insert(0, str(HERE))
    import realwat

    return realwat.build(work / "real", shared_data(), files, pages)


def baseline_udfs(work: Path, rev: str) -> Path:
    """The extraction udfs of git revision `rev`, written under work/ (read-only git use); a revision
    from before udfs/ was grouped by stage has them at `udfs/<name>.py`. Where that revision has the
    C extension (udfs/extract/_hotloop.c), it is built there too (gcc, setup.py's flags), so its
    Python modules run with their own compiled loop, not today's."""
    import sysconfig

    sys.path.insert(0, str(HERE))
    from worker import BASELINE_MODULES, OPTIONAL_BASELINE_MODULES

    out = work / f"baseline-{rev}"
    out.mkdir(parents=True, exist_ok=True)
    for old, new in BASELINE_MODULES:
        for path in (f"udfs/{new.replace('.', '/')}.py", f"udfs/{old}.py"):
            got = subprocess.run(["git", "-C", str(REPO), "show", f"{rev}:{path}"], capture_output=True)
            if got.returncode == 0:
                (out / f"{old}.py").write_bytes(got.stdout)
                break
        else:
            if old not in OPTIONAL_BASELINE_MODULES:
                raise SystemExit(f"--baseline-rev {rev}: no udfs module {new} in that revision")
    got = subprocess.run(["git", "-C", str(REPO), "show", f"{rev}:udfs/extract/_hotloop.c"], capture_output=True)
    if got.returncode == 0:
        (out / "_hotloop.c").write_bytes(got.stdout)
        subprocess.run(["gcc", "-O2", "-std=gnu11", "-ffp-contract=off", "-shared", "-fPIC",
                        f"-I{sysconfig.get_paths()['include']}", str(out / "_hotloop.c"), "-o",
                        str(out / "_hotloop.so"), "-lm"], check=True)
    return out


def run_arm(arm: str, files: list[str], py_cc2: Path, baseline: Path | None = None) -> dict:
    py = str(py_cc2) if arm == "cc2dataset" else sys.executable
    env = dict(os.environ, BENCH_BASELINE_UDFS=str(baseline or ""),
               BENCH_LID_MODEL=str(shared_data() / "models" / "lid.176.ftz"),
               BENCH_WARMUP_FILE=str(shared_data() / "wat" /
                                     "CC-MAIN-20140820021334-00006-ip-10-180-136-8.ec2.internal.warc.wat.gz"))
    env.pop("CRAWLPAIRS_EXTRACT_ENGINE", None)  # worker.py sets it for the *_python arms
    p = subprocess.run([py, str(HERE / "worker.py"), arm, *files], capture_output=True, text=True, env=env)
    if p.returncode != 0:
        raise RuntimeError(f"{arm} failed: {p.stderr[-2000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def _manifest_seconds(out: Path, field: str = "seconds") -> float:
    """Sum of the per-file task seconds (`seconds`: wall; `cpu_seconds`: the Python worker's CPU)
    in the run's manifests (wherever the job keeps them)."""
    total = 0.0
    for f in out.rglob("*.json"):
        try:
            d = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(d, dict) and "key" in d and "seconds" in d and "fingerprint" in d:
            total += float(d.get(field) or 0.0)
    return total


def run_job(engine: str, files: list[str], work: Path) -> dict:
    """`crawlpairs extract --master local[1]` on `files` in a fresh process: wall seconds, the
    tasks' own seconds (manifests), the engine _stats.json reports."""
    import shutil

    out = work / f"job-{engine}-{os.getpid()}"
    shutil.rmtree(out, ignore_errors=True)
    env = dict(os.environ)
    env.pop("CRAWLPAIRS_EXTRACT_ENGINE", None)
    if engine == "python":
        env["CRAWLPAIRS_EXTRACT_ENGINE"] = "python"  # inherited by the local executor's Python workers
    cmd = [sys.executable, "-m", "crawlpairs.cli", "extract", "--master", "local[1]", "--output", str(out)]
    for f in files:
        cmd += ["--input", f]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise RuntimeError(f"job {engine} failed ({p.returncode}): {p.stderr[-2000:]}")
    stats = {}
    for f in out.rglob("_stats.json"):
        stats = json.loads(f.read_text())
    res = {"wall": wall, "task_s": _manifest_seconds(out), "task_cpu_s": _manifest_seconds(out, "cpu_seconds"),
           "engine": (stats.get("extra") or {}).get("engine"),
           "rows": (stats.get("counts") or {}).get("rows_out")}
    shutil.rmtree(out, ignore_errors=True)
    return res


def job_cost(files: list[str], reps: int, work: Path) -> dict:
    """Fixed cost (tiny WAT) and marginal cost (corpus files minus tiny) of the CLI job, both engines."""
    tiny = [str(shared_data() / TINY_WAT)]
    runs: dict[str, list[dict]] = {}
    rng = random.Random(1)
    for rep in range(reps):
        order = [(e, k) for e in ("compiled", "python") for k in ("tiny", "corpus")]
        rng.shuffle(order)
        for e, k in order:
            r = run_job(e, tiny if k == "tiny" else files, work)
            runs.setdefault(f"{e}_{k}", []).append(r)
            print(f"job round {rep} {e:8s} {k:6s} wall {r['wall']:.1f}s task {r['task_s']:.2f}s "
                  f"cpu {r['task_cpu_s']:.2f}s "
                  f"engine {r['engine']} rows {r['rows']}", flush=True)
    gz = sum(os.path.getsize(f) for f in files)
    res: dict = {"gz_bytes": gz, "runs": runs}
    for e in ("compiled", "python"):
        tiny_w = statistics.median(r["wall"] for r in runs[f"{e}_tiny"])
        corp_w = statistics.median(r["wall"] for r in runs[f"{e}_corpus"])
        task_s = statistics.median(r["task_s"] for r in runs[f"{e}_corpus"])
        res[e] = {"fixed_wall_s": round(tiny_w, 2), "corpus_wall_s": round(corp_w, 2),
                  "marginal_wall_s": round(corp_w - tiny_w, 2),
                  "marginal_mb_per_s": round(gz / 1e6 / max(corp_w - tiny_w, 1e-9), 2),
                  "task_s": round(task_s, 2), "task_mb_per_s": round(gz / 1e6 / max(task_s, 1e-9), 2),
                  "engine_reported": runs[f"{e}_corpus"][0]["engine"]}
        if all("task_cpu_s" in r for r in runs[f"{e}_corpus"] + runs[f"{e}_tiny"]):
            # the task's marginal CPU: the corpus file's Python-worker CPU minus the tiny file's (the
            # first-task costs of a fresh worker, model load included, are in both)
            cpu = statistics.median(r["task_cpu_s"] for r in runs[f"{e}_corpus"])
            cpu_tiny = statistics.median(r["task_cpu_s"] for r in runs[f"{e}_tiny"])
            res[e].update(task_cpu_s=round(cpu, 3), task_cpu_tiny_s=round(cpu_tiny, 3),
                          task_cpu_marginal_s=round(cpu - cpu_tiny, 3))
    return res


def machine() -> dict:
    info = {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count()}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return info


PACKAGES = ("cc2dataset", "FastWARC", "pysimdjson", "isal", "fasttext-predict", "pyarrow", "pyspark")


def versions(py: Path | str) -> dict:
    """Versions of the packages that set the arms' speed, in the venv of `py` (cc2dataset's
    speed depends on what its unpinned dependencies resolve to on the day)."""
    code = ("import importlib.metadata as m, json, sys\n"
            "out = {}\n"
            "for p in sys.argv[1:]:\n"
            "    try: out[p] = m.version(p)\n"
            "    except m.PackageNotFoundError: pass\n"
            "print(json.dumps(out))")
    got = subprocess.run([str(py), "-c", code, *PACKAGES], capture_output=True, text=True)
    return json.loads(got.stdout) if got.returncode == 0 else {}


def summarise(name: str, files: list[str], runs: dict[str, list[dict]]) -> dict:
    gz = sum(os.path.getsize(f) for f in files)
    raw = statistics.median(r["bytes_out"] for r in runs["floor_read"]) if runs.get("floor_read") else None
    arms = {}
    for arm, rs in runs.items():
        cpu = statistics.median(r["cpu"] for r in rs)
        wall = statistics.median(r["wall"] for r in rs)
        a = {"cpu_s": round(cpu, 4), "wall_s": round(wall, 4), "cpu_s_all": [round(r["cpu"], 4) for r in rs],
             "mb_per_s": round(gz / 1e6 / cpu, 2), "mb_per_s_wall": round(gz / 1e6 / wall, 2)}
        if raw:
            a["raw_mb_per_s"] = round(raw / 1e6 / cpu, 1)
        if "pairs" in rs[0]:
            a["pairs"] = rs[0]["pairs"]
            a["pairs_per_s"] = round(rs[0]["pairs"] / cpu)
        if "pairs_found" in rs[0]:
            a["img_links"] = rs[0]["pairs_found"]
            a["img_links_per_s"] = round(rs[0]["pairs_found"] / cpu)
        for k in ("engine", "pages_wat", "pages_wat_compiled"):
            if k in rs[0]:
                a[k] = rs[0][k]
        if rs[0].get("lid_distinct"):
            lid = statistics.median(r["lid_cpu"] for r in rs)
            a["lid_cpu_s"] = round(lid, 4)
            a["lid_distinct_texts"] = rs[0]["lid_distinct"]
            a["lid_us_per_distinct_text"] = round(lid / rs[0]["lid_distinct"] * 1e6, 2)
            a["lid_share"] = round(lid / cpu, 3)
        arms[arm] = a
    ratios = {}
    if "ours" in arms:
        for other in ("cc2dataset", "floor_parse", "floor_read", "inflate_isal"):
            if other in arms:
                ratios[f"ours_vs_{other}"] = round(arms[other]["cpu_s"] / arms["ours"]["cpu_s"], 3)
        for other in ("cc2dataset", "floor_parse", "floor_read"):
            if "ours_nolid" in arms and other in arms:
                ratios[f"ours_nolid_vs_{other}"] = round(arms[other]["cpu_s"] / arms["ours_nolid"]["cpu_s"], 3)
        for a in ("ours", "ours_nolid"):  # the compiled loop over the Python loop, same code otherwise
            if f"ours_python{a[4:]}" in arms and a in arms:
                ratios[f"{a}_vs_python"] = round(arms[f"ours_python{a[4:]}"]["cpu_s"] / arms[a]["cpu_s"], 3)
        if "ours_python" in arms and "cc2dataset" in arms:
            ratios["ours_python_vs_cc2dataset"] = round(arms["cc2dataset"]["cpu_s"] / arms["ours_python"]["cpu_s"], 3)
        for a in ("ours", "ours_nolid"):  # speed-up over the baseline revision's udfs
            if f"ours_baseline{a[4:]}" in arms and a in arms:
                ratios[f"{a}_vs_baseline"] = round(arms[f"ours_baseline{a[4:]}"]["cpu_s"] / arms[a]["cpu_s"], 3)
    return {"corpus": name, "files": [os.path.basename(f) for f in files], "gz_bytes": gz,
            "raw_bytes": raw, "compression_ratio": round(raw / gz, 2) if raw else None,
            "arms": arms, "ratios": ratios}


def _pkgs(v: dict) -> str:
    return ", ".join(f"{k} {x}" for k, x in v.items())


def write_markdown(res: dict, path: Path) -> None:
    L = ["# Extraction benchmark (stage 1)", "",
         f"Command: `{res['command']}`  ", f"Date: {res['date']}  ",
         f"Machine: {res['machine'].get('cpu', '?')}, {res['machine']['cpus']} CPUs, shared with other jobs "
         f"(load average {res['load_before'][0]:.1f} before, {res['load_after'][0]:.1f} after"
         + (f", {res['load_after_job'][0]:.1f} after the job runs" if "load_after_job" in res else "") + ").  ",
         *([f"Packages: ours {_pkgs(res['versions']['ours'])}; cc2dataset's venv "
            f"{_pkgs(res['versions']['cc2dataset'])}.  "] if res.get("versions") else []),
         "One process per arm pinned to one CPU; every round runs all arms in a shuffled order "
         f"({res['reps']} rounds). Rates use each process's CPU time (core-seconds of the work), "
         "median over rounds, so other jobs on the machine do not skew the ratios; wall-clock rates "
         "are in results.json. One-time process costs (imports, fastText model load) are excluded.", ""]
    for c in res["corpora"]:
        L += [f"## Corpus `{c['corpus']}`: {len(c['files'])} file(s), {c['gz_bytes'] / 1e6:.1f} MB gzipped, "
              f"{(c['raw_bytes'] or 0) / 1e6:.0f} MB inflated (ratio {c['compression_ratio']})", "",
              "| arm | CPU s | MB/s gz (per core) | MB/s inflated | pairs out | pairs/s | IMG links/s |",
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for arm, a in c["arms"].items():
            L.append(f"| {arm} | {a['cpu_s']:.3f} | {a['mb_per_s']:.1f} | {a.get('raw_mb_per_s', '')} | "
                     f"{a.get('pairs', '')} | {a.get('pairs_per_s', '')} | {a.get('img_links_per_s', '')} |")
        L += ["", "Ratios (speed of ours ÷ speed of the other arm; > 1: ours is faster):", ""]
        L += [f"- {k}: **{v}**" for k, v in c["ratios"].items()]
        L.append("")
        for arm, a in c["arms"].items():
            if "lid_us_per_distinct_text" in a:
                L.append(f"- {arm}: language ID {a['lid_cpu_s']:.3f} CPU-s for {a['lid_distinct_texts']} distinct "
                         f"captions = **{a['lid_us_per_distinct_text']} µs per distinct caption** "
                         f"({a['lid_share']:.0%} of the arm's CPU)")
            if a.get("engine"):
                L.append(f"- {arm}: engine `{a['engine']}`, {a.get('pages_wat_compiled', 0)} of "
                         f"{a.get('pages_wat', 0)} WAT pages through the compiled loop")
        L.append("")
    real = next((c for c in res["corpora"] if c["corpus"] == "real"), None)
    if real and real["ratios"]:
        r, arms = dict(real["ratios"]), real["arms"]
        for arm in ("floor_read", "floor_parse"):  # results written before these ratios were kept
            if "ours_nolid" in arms and arm in arms:
                r.setdefault(f"ours_nolid_vs_{arm}", round(arms[arm]["cpu_s"] / arms["ours_nolid"]["cpu_s"], 3))
        L += ["## Against the goals (corpus `real`, per core)", "",
              f"- ≥ 3× cc2dataset 1.5.0: ours (all filters + language ID) **{r.get('ours_vs_cc2dataset')}×**, "
              f"without language ID {r.get('ours_nolid_vs_cc2dataset')}× — "
              + ("met." if r.get("ours_vs_cc2dataset", 0) >= 3 else "**not met**."),
              *[f"- ≥ {goal:.0%} of {what}: ours **{r[f'ours_vs_{arm}']:.0%}**, without language ID "
                f"{r.get(f'ours_nolid_vs_{arm}', float('nan')):.0%} — "
                + ("met." if r[f"ours_vs_{arm}"] >= goal else "**not met**.")
                for goal, what, arm in ((0.55, "the inflate limit (FastWARC's inflate + framing)", "floor_read"),
                                        (0.6, "the floor (inflate + JSON-parse every record)", "floor_parse"))
                if f"ours_vs_{arm}" in r],
              ""]
    job = res.get("job")
    if job:
        L += ["## The job: `crawlpairs extract --master local[1]` (CLI, fresh process per run)", "",
              f"Median of {len(job['runs']['compiled_tiny'])} interleaved rounds, wall seconds (the machine's "
              "load hits wall time fully: compare arms, not absolutes). Fixed cost = the run on the 9-record "
              f"real WAT (JVM, Spark session, Python worker, model load, commit); marginal = the run on the "
              f"corpus ({job['gz_bytes'] / 1e6:.1f} MB gz) minus the fixed cost; task s = the task's own "
              "seconds for the file (its manifest); task CPU s = the Python worker's CPU seconds for the "
              "corpus file minus those for the tiny file (both tasks pay a fresh worker's first-task costs).", "",
              "| engine | fixed s | corpus run s | marginal s | marginal MB/s | task s | task MB/s | task CPU s "
              "(corpus − tiny) | engine in _stats.json |",
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
        for e in ("compiled", "python"):
            j = job[e]
            cpu = (f"{j['task_cpu_s']} − {j['task_cpu_tiny_s']} = {j['task_cpu_marginal_s']}"
                   if "task_cpu_marginal_s" in j else "")
            L.append(f"| {e} | {j['fixed_wall_s']} | {j['corpus_wall_s']} | {j['marginal_wall_s']} | "
                     f"{j['marginal_mb_per_s']} | {j['task_s']} | {j['task_mb_per_s']} | {cpu} | "
                     f"{j['engine_reported']} |")
        L.append("")
    L += res.get("notes", [])  # the reading of that run, written with it (see the module docstring)
    path.write_text("\n".join(L) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pages", type=int, default=8500, help="pages per WAT file (~50 MB gz for both corpora)")
    ap.add_argument("--files", type=int, default=1)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--corpora", default="real,gen")
    ap.add_argument("--arms", default=",".join(ARMS))
    ap.add_argument("--baseline-rev", default="", help="git revision whose udfs run as ours_baseline[_nolid]")
    ap.add_argument("--work", default=str(HERE / "work"))
    ap.add_argument("--out", default=str(HERE))
    ap.add_argument("--markdown-only", action="store_true", help="rewrite RESULTS.md from results.json")
    ap.add_argument("--job", action="store_true", help="also time the CLI job (local[1]) on the real corpus")
    ap.add_argument("--job-reps", type=int, default=2)
    args = ap.parse_args()
    if args.markdown_only:
        out = Path(args.out)
        write_markdown(json.loads((out / "results.json").read_text()), out / "RESULTS.md")
        return
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    py_cc2 = ensure_cc2dataset()
    corpora = {}
    for name in args.corpora.split(","):
        print("corpus", name, flush=True)
        corpora[name] = (corpus_gen if name == "gen" else corpus_real)(work, args.files, args.pages)
    arms = args.arms.split(",")
    baseline = None
    if args.baseline_rev:
        baseline = baseline_udfs(work, args.baseline_rev)
        arms += [a for a in ("ours_baseline", "ours_baseline_nolid") if a not in arms]
    load_before = os.getloadavg()
    runs: dict[str, dict[str, list[dict]]] = {c: {a: [] for a in arms} for c in corpora}
    rng = random.Random(0)
    for rep in range(args.reps):
        order = [(c, a) for c in corpora for a in arms]
        rng.shuffle(order)
        for c, a in order:
            r = run_arm(a, corpora[c], py_cc2, baseline)
            runs[c][a].append(r)
            print(f"round {rep} {c:5s} {a:15s} cpu {r['cpu']:.3f}s wall {r['wall']:.3f}s", flush=True)
    res = {
        "command": " ".join([".venv/bin/python", "bench/extract/run.py", *sys.argv[1:]]),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine(), "versions": {"ours": versions(sys.executable), "cc2dataset": versions(py_cc2)},
        "load_before": load_before, "load_after": os.getloadavg(), "reps": args.reps,
        "corpora": [summarise(c, corpora[c], runs[c]) for c in corpora],
    }
    if args.job:
        res["job"] = job_cost(corpora.get("real") or next(iter(corpora.values())), args.job_reps, work)
        res["load_after_job"] = os.getloadavg()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(res, indent=1) + "\n")
    write_markdown(res, out / "RESULTS.md")
    print((out / "RESULTS.md").read_text())


if __name__ == "__main__":
    main()
