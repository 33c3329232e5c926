"""One benchmark arm over a list of files, in its own process on one core; prints JSON.

Run by bench/extract/run.py, with the project venv for our arms and the floor, and with
bench/.venvs/cc2dataset's python for cc2dataset (so this file imports nothing at top level
that only one of them has).
"""

from __future__ import annotations

import json
import os
import sys
import time

# A tiny real WAT run once before timing by the extractor arms: one-time costs (imports,
# Arrow's compute/timezone init, model load) are per executor process, not per file.
WARMUP = os.environ.get("BENCH_WARMUP_FILE", "")


# (file name in the baseline folder, module it stands for): before udfs/ was grouped by stage
# (issue 12) these were flat modules, `crawlpairs.udfs.wat` ...; after it, `crawlpairs.udfs.extract.wat`.
BASELINE_MODULES = [("urls", "urls"), ("text", "extract.text"), ("langid", "extract.langid"),
                    ("license", "extract.license"), ("wat", "extract.wat"), ("html", "extract.html"),
                    ("warcread", "extract.warcread"), ("extract", "extract.candidates")]  # dependency order
OPTIONAL_BASELINE_MODULES = {"warcread"}  # not in every revision: today's is used there


def use_baseline_udfs(folder: str) -> None:
    """Make the extraction modules the ones saved in `folder` (an older revision's udfs, written by
    run.py --baseline-rev), so before and after run in the same conditions. Each is registered under
    its grouped name and, for revisions before the grouping, under its flat name too (their own
    imports say `crawlpairs.udfs.wat`)."""
    import importlib
    import importlib.util

    import crawlpairs.udfs
    import crawlpairs.udfs.extract.compiled as compiled

    so = os.path.join(folder, "_hotloop.so")
    if os.path.exists(so):  # that revision's own C extension (built by run.py): its modules import it from here
        spec = importlib.util.spec_from_file_location("bench_baseline._hotloop", so)
        ext = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(ext)
        compiled.hot = ext
    for old, new in BASELINE_MODULES:
        if not os.path.exists(os.path.join(folder, f"{old}.py")):
            continue
        spec = importlib.util.spec_from_file_location(f"crawlpairs.udfs.{new}", os.path.join(folder, f"{old}.py"))
        mod = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = mod
        if old != "extract":  # the flat name `extract` is now the package
            sys.modules[f"crawlpairs.udfs.{old}"] = mod
            setattr(crawlpairs.udfs, old, mod)
        spec.loader.exec_module(mod)
        parent, _, leaf = f"crawlpairs.udfs.{new}".rpartition(".")
        setattr(importlib.import_module(parent), leaf, mod)


def arm_ours(files: list[str], lid: bool, baseline: bool = False, engine: str = "") -> dict:
    if engine:  # read when crawlpairs.udfs.extract.candidates is imported
        os.environ["CRAWLPAIRS_EXTRACT_ENGINE"] = engine
    if baseline:
        use_baseline_udfs(os.environ["BENCH_BASELINE_UDFS"])
    from crawlpairs.config import ExtractConfig
    from crawlpairs.stats import Stats
    from crawlpairs.udfs.extract import candidates as _extract
    from crawlpairs.udfs.extract import langid
    from crawlpairs.udfs.extract.candidates import extract_stream

    lid_cost = {"cpu": 0.0, "distinct": 0, "texts": 0}
    predict = langid.predict

    def timed_predict(texts, *a, **kw):  # language ID's share: CPU per distinct caption of a batch
        c = time.process_time()
        out = predict(texts, *a, **kw)
        lid_cost["cpu"] += time.process_time() - c
        lid_cost["distinct"] += len(set(texts))
        lid_cost["texts"] += len(texts)
        return out

    langid.predict = timed_predict
    column = getattr(langid, "predict_column", None)  # since 2026-12-02: over the C columns' buffers

    def timed_column(offsets, data, n, *a, **kw):
        c = time.process_time()
        out = column(offsets, data, n, *a, **kw)
        lid_cost["cpu"] += time.process_time() - c
        if out is not None:  # (not timed) the distinct texts it predicted
            import pyarrow as pa
            import pyarrow.compute as pc

            texts = pa.Array.from_buffers(pa.string(), n, [None, pa.py_buffer(offsets), pa.py_buffer(data)])
            lid_cost["distinct"] += pc.count_distinct(texts.filter(pc.not_equal(texts, ""))).as_py()
            lid_cost["texts"] += n
        return out

    if column is not None:
        langid.predict_column = timed_column

    model = os.environ["BENCH_LID_MODEL"] if lid else None
    cfg = ExtractConfig(lid_model=model)
    if model:
        langid.load_model(model)  # once per executor process: not part of the per-file rate
    with open(WARMUP, "rb") as fh:  # one-time imports/inits, once per executor process
        for _ in extract_stream(fh, WARMUP, cfg, Stats()):
            pass
    stats = Stats()
    pairs = 0
    lid_cost.update(cpu=0.0, distinct=0, texts=0)
    t0, c0 = time.perf_counter(), time.process_time()
    for f in files:
        with open(f, "rb") as fh:
            for batch in extract_stream(fh, f, cfg, stats):
                pairs += batch.num_rows
    out = {"wall": time.perf_counter() - t0, "cpu": time.process_time() - c0, "pairs": pairs,
           "pairs_found": stats.counts["pairs_found"], "errors": sum(stats.errors.values()),
           "engine": _extract.engine() if hasattr(_extract, "engine") else "python",
           "pages_wat": stats.counts["pages.wat"], "pages_wat_compiled": stats.counts["pages.wat_compiled"]}
    if lid:
        out.update(lid_cpu=lid_cost["cpu"], lid_distinct=lid_cost["distinct"], lid_texts=lid_cost["texts"])
    return out


def arm_cc2dataset(files: list[str]) -> dict:
    import logging

    from loguru import logger

    logger.remove()  # its per-file INFO line is not part of the work
    logging.disable(logging.CRITICAL)
    from cc2dataset.main import process_wat

    for _ in process_wat(WARMUP, "image"):  # one-time imports/inits, as for ours
        pass
    pairs = 0
    t0, c0 = time.perf_counter(), time.process_time()
    for f in files:
        for _ in process_wat(f, "image"):
            pairs += 1
    return {"wall": time.perf_counter() - t0, "cpu": time.process_time() - c0, "pairs": pairs}


def arm_floor_parse(files: list[str]) -> dict:
    """FastWARC iterate + read + orjson-parse EVERY record: what any WAT extractor must pay
    if it parses all JSON (ours skips 2/3 of it, so it can beat this)."""
    import orjson
    from fastwarc.warc import ArchiveIterator

    n = 0
    t0, c0 = time.perf_counter(), time.process_time()
    for f in files:
        with open(f, "rb") as fh:
            for rec in ArchiveIterator(fh, parse_http=False):
                payload = rec.reader.read()
                if rec.headers.get("Content-Type") == "application/json":
                    orjson.loads(payload)
                    n += 1
    return {"wall": time.perf_counter() - t0, "cpu": time.process_time() - c0, "records_parsed": n}


def arm_floor_read(files: list[str]) -> dict:
    """FastWARC iterate + read every record payload (inflate + WARC framing), no JSON."""
    from fastwarc.warc import ArchiveIterator

    n = 0
    t0, c0 = time.perf_counter(), time.process_time()
    for f in files:
        with open(f, "rb") as fh:
            for rec in ArchiveIterator(fh, parse_http=False):
                n += len(rec.reader.read())
    return {"wall": time.perf_counter() - t0, "cpu": time.process_time() - c0, "bytes_out": n}


def arm_read_members(files: list[str]) -> dict:
    """udfs.extract.warcread: member by member, every record framed and its payload read (no JSON)."""
    from crawlpairs.stats import Stats
    from crawlpairs.udfs.extract.warcread import Caps, iter_records

    n = 0
    caps = Caps(10_000_000, 256 << 20)
    t0, c0 = time.perf_counter(), time.process_time()
    for f in files:
        with open(f, "rb") as fh:
            for rec in iter_records(fh, f, caps, Stats()):
                n += len(rec.payload)
    return {"wall": time.perf_counter() - t0, "cpu": time.process_time() - c0, "bytes_out": n}


def _inflate_members(files: list[str], mod) -> dict:
    n = 0
    t0, c0 = time.perf_counter(), time.process_time()
    for f in files:
        with open(f, "rb") as fh:
            d = mod.decompressobj(31)
            while chunk := fh.read(1 << 20):
                while chunk:
                    n += len(d.decompress(chunk))
                    if d.eof:  # next gzip member
                        chunk = d.unused_data
                        d = mod.decompressobj(31)
                    else:
                        chunk = b""
    return {"wall": time.perf_counter() - t0, "cpu": time.process_time() - c0, "bytes_out": n}


def arm_inflate_isal(files: list[str]) -> dict:
    from isal import isal_zlib

    return _inflate_members(files, isal_zlib)


def arm_inflate_zlibng(files: list[str]) -> dict:
    from zlib_ng import zlib_ng

    return _inflate_members(files, zlib_ng)


def arm_inflate_zlib(files: list[str]) -> dict:
    import zlib

    return _inflate_members(files, zlib)


ARMS = {
    "ours": lambda fs: arm_ours(fs, lid=True),
    "ours_nolid": lambda fs: arm_ours(fs, lid=False),
    "ours_python": lambda fs: arm_ours(fs, lid=True, engine="python"),
    "ours_python_nolid": lambda fs: arm_ours(fs, lid=False, engine="python"),
    "ours_baseline": lambda fs: arm_ours(fs, lid=True, baseline=True),
    "ours_baseline_nolid": lambda fs: arm_ours(fs, lid=False, baseline=True),
    "cc2dataset": arm_cc2dataset,
    "floor_parse": arm_floor_parse,
    "floor_read": arm_floor_read,
    "read_members": arm_read_members,
    "inflate_isal": arm_inflate_isal,
    "inflate_zlibng": arm_inflate_zlibng,
    "inflate_zlib": arm_inflate_zlib,
}


def main() -> None:
    arm, files = sys.argv[1], sys.argv[2:]
    if hasattr(os, "sched_setaffinity"):  # one core, whichever the scheduler gave us first
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    for f in files:  # page cache warm for every arm alike
        with open(f, "rb") as fh:
            while fh.read(1 << 24):
                pass
    out = ARMS[arm](files)
    out["arm"] = arm
    print(json.dumps(out))


if __name__ == "__main__":
    main()
