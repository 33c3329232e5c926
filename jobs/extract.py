"""Stage 1: WAT/WARC files -> `candidates/` (one row per image-text pair).

Committed per input file, by the Spark task that read it; no batch barrier. A task
extracts its file, writes the file's rows as one Parquet file per crawl id under a
name derived from the input URI, then the file's manifest `candidates_meta/files/<key>.json` (counts,
errors, the settings fingerprint). Both writes are atomic (local: temp name + rename;
S3: one object appears whole). A re-run skips exactly the files that have a manifest.

Why no reader sees rows twice or rows nobody counted:
- a data file's name is fixed by its input (`crawl=<id>/<key>.parquet`), and its rows
  are a function of the input and the settings, so a redo overwrites, never adds;
- a task killed between the data file and the manifest leaves an orphan data file
  holding exactly the rows its redo writes; the driver deletes every data file no
  manifest names before it schedules any work and again when the tasks are done
  (a pending file's rows, a crashed attempt's temp file), so between runs every visible row belongs to a manifested file and
  `_stats.json` (summed from the manifests) counts exactly what `candidates/` holds.
  While a run is in flight a reader may see files whose manifest is being written.

Failures by kind: a file whose transient I/O outlasted its retries (TransientIOError)
or whose writes failed is not committed: it is listed as pending in `_stats.json` and
on the console and the job exits with status 3 (`crawlpairs.stage.PENDING_EXIT`); the
next run reads only those. An unusable `--lid-model` stops the job on the driver before
any input is read (exit 2). Committed files made with other output-affecting settings
stop the job too, unless `--force` re-extracts them.

Layout: candidates/crawl=<id>/<key>.parquet (data only: no `crawl` column inside, as
Spark's partitionBy writes it); beside it `candidates_meta/files/<key>.json` (manifests)
and `candidates_meta/_stats.json` (totals over every committed file, plus this run's).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import sys
import tempfile
import time
from typing import Any

from crawlpairs import fingerprint, inputs, layout, storage
from crawlpairs.config import Config, ExtractConfig
from crawlpairs.stage import Context, Stage, UsageError, exit_process, main
from crawlpairs.stats import Stats

MANIFESTS = "files"  # under candidates_meta/
OLD_MANIFESTS = "_files"  # inside candidates/, before the data-only layout
DATA_NAME = re.compile(r"^[0-9a-f]{16}\.parquet$")
# Fields that change which files are read or how they are scheduled, never a file's rows.
# The language model enters the fingerprint by its content (lid_model_sha256), not its name.
NOT_IN_FINGERPRINT = ("prefix", "crawl_index_url", "force", "lid_model")
# Columns whose values repeat (a page's, a file's, a few sources and languages): Parquet
# dictionary-encodes these; uid, url and text are near-unique, where trying a dictionary first
# costs time for nothing: writing the bench corpus' 60,210 rows took 21.1 ms with every column
# tried as a dictionary, 17.2 ms with these only (min of 5, in process).
DICTIONARY_COLUMNS = ["text_source", "page_url", "page_domain", "image_domain", "language", "license",
                      "license_url", "source_file"]
# Test hook (tests/extract/test_job_faults.py): seconds a task sleeps after publishing a
# file's rows and before writing its manifest, so a kill can land exactly there.
PAUSE_ENV = "CRAWLPAIRS_TEST_PAUSE_BEFORE_MANIFEST"


def file_key(uri: str) -> str:
    return hashlib.sha1(uri.encode()).hexdigest()[:16]


def data_path(crawl: str, key: str) -> str:
    """A file's rows for one crawl id, relative to candidates/ (deterministic: redo overwrites)."""
    return f"crawl={crawl}/{key}.parquet"


def manifest_dir(out: str) -> str:
    """Where the manifests of `out` (the candidates/ folder) live: beside it, never inside."""
    return storage.join(layout.meta_dir(out), MANIFESTS)


def lid_off(cfg: ExtractConfig) -> bool:
    return not cfg.lid_model or cfg.lid_model.lower() == "none"


def output_settings(cfg: ExtractConfig, lid_sha256: str | None) -> dict[str, Any]:
    """The settings that shaped a file's rows (what a manifest records and a re-run compares)."""
    doc = fingerprint.settings(cfg, ignore=NOT_IN_FINGERPRINT)
    doc["lid_model_sha256"] = lid_sha256
    return doc


# -- executor side: one input file -> its rows and manifest ------------------------------


class _WriteFailed(Exception):
    """Writing the rows failed: the file stays pending (never committed as a bad file)."""


def commit_file(uri: str, crawl: str | None, cfg: Config, out: str, settings: dict[str, Any]) -> dict[str, Any]:
    """Extract one input file and commit it; return its manifest, or a `pending` record.

    Runs in a Spark task. Nothing is committed for a file that hit TransientIOError, a
    failing model load or a failing write: the driver lists it as pending.
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from crawlpairs.errors import TransientIOError
    from crawlpairs.udfs.extract import langid
    from crawlpairs.udfs.extract.candidates import CANDIDATE_SCHEMA, FileDedup, extract_file

    ex, st = cfg.extract, cfg.storage
    key = file_key(uri)
    started, started_cpu = time.perf_counter(), time.process_time()
    stats = Stats()
    dedup = FileDedup() if ex.exact_dedup else None
    file_schema = pa.schema([f for f in CANDIDATE_SCHEMA if f.name != "crawl"])
    writers: dict[str, tuple[pq.ParquetWriter, str, str]] = {}  # crawl -> (writer, temp path, target)
    rows: dict[str, int] = {}
    remote = storage.is_remote(out)
    tmp_root = tempfile.gettempdir() if remote else None

    def writer_for(crawl_id: str) -> pq.ParquetWriter:
        if crawl_id not in writers:
            target = storage.join(out, data_path(crawl_id, key))
            if remote:
                fd, tmp = tempfile.mkstemp(prefix=f"{key}.", suffix=".parquet", dir=tmp_root)
                os.close(fd)
            else:
                os.makedirs(os.path.dirname(target), exist_ok=True)
                tmp = os.path.join(os.path.dirname(target), f".{key}.{os.getpid()}.parquet.tmp")
            writers[crawl_id] = (pq.ParquetWriter(tmp, file_schema, compression="zstd",
                                                  use_dictionary=DICTIONARY_COLUMNS), tmp, target)
            rows[crawl_id] = 0
        return writers[crawl_id][0]

    def discard() -> None:
        for w, tmp, _ in writers.values():
            with contextlib.suppress(Exception):
                w.close()
            with contextlib.suppress(OSError):
                os.unlink(tmp)

    def pending(reason: str) -> dict[str, Any]:
        discard()
        return {"file": uri, "key": key, "pending": reason[:500]}

    try:
        if not lid_off(ex):
            langid.load_model(ex.lid_model, st)  # checked on the driver; an executor may still fail
    except Exception as exc:  # noqa: BLE001 - not this file's fault: leave it for a re-run
        return pending(f"lid_model: {exc.__class__.__name__}: {exc}")
    try:
        for rb in extract_file(uri, crawl, ex, st, stats):
            if dedup is not None:  # repeated (url, text) within this file: first in file order survives
                keep = dedup.keep(rb.column("uid"))
                if keep is not None:
                    stats.drop("duplicate_in_file", rb.num_rows - keep.true_count)
                    rb = rb.filter(keep)
            if not rb.num_rows:
                continue
            crawl_ids = rb.column("crawl").unique().to_pylist()  # one id per file, bar odd warcinfo
            for crawl_id in crawl_ids:
                part = rb if len(crawl_ids) == 1 else rb.filter(pc.equal(rb.column("crawl"), crawl_id))
                part = part.drop_columns(["crawl"])
                try:
                    writer_for(crawl_id).write_batch(part)
                except Exception as exc:  # noqa: BLE001 - our write, not the input: never a file_error
                    raise _WriteFailed(f"{exc.__class__.__name__}: {exc}") from exc
                rows[crawl_id] += part.num_rows
    except TransientIOError as exc:
        return pending(f"{exc.__class__.__name__}: {exc}")
    except _WriteFailed as exc:
        return pending(f"write: {exc}")
    except FileNotFoundError as exc:  # gone since the driver listed it, or 404: not transient
        stats.error("missing_input", input=uri, message=str(exc))
    except Exception as exc:  # noqa: BLE001 - a broken file never fails the job; its rows so far are kept
        stats.error("file_error", input=uri, message=f"{exc.__class__.__name__}: {exc}")
    try:
        for w, _, _ in writers.values():
            w.close()
        for _, tmp, target in writers.values():
            storage.put_file(tmp, target, st)
    except Exception as exc:  # noqa: BLE001 - a write that failed: the file is not committed
        return pending(f"write: {exc.__class__.__name__}: {exc}")
    finally:
        discard()
    pause = float(os.environ.get(PAUSE_ENV) or 0)
    if pause:
        time.sleep(pause)
    written = sum(rows.values())
    stats.incr("rows_out", written)
    stats.incr("files_committed")
    manifest = {
        "file": uri,
        "key": key,
        "data": sorted(data_path(c, key) for c in rows),
        "rows": written,
        "settings": settings,
        "fingerprint": fingerprint.digest(settings),
        "seconds": round(time.perf_counter() - started, 3),
        "cpu_seconds": round(time.process_time() - started_cpu, 3),  # this Python worker's CPU for the file
        **stats.to_dict(),
    }
    try:
        storage.write_json(storage.join(manifest_dir(out), key + ".json"), manifest, st)
    except Exception as exc:  # noqa: BLE001 - no manifest, no commit: the data file is an orphan
        return {"file": uri, "key": key, "pending": f"manifest: {exc.__class__.__name__}: {exc}"[:500]}
    return manifest


def commit_files(cfg: Config, out: str, settings: dict[str, Any]):
    """The function each Spark task runs over its (uri, crawl) items."""

    def run(items):
        for uri, crawl in items:
            yield commit_file(uri, crawl, cfg, out, settings)

    return run


# -- driver side ----------------------------------------------------------------------


class ExtractStage(Stage):
    name = "extract"
    section = "extract"
    output_dir = "candidates"
    stats_dir = layout.meta_dir(output_dir)
    uses_spark = False  # the session starts only when there are files to read
    help = "Crawl files (WAT/WARC: paths, globs, folders, s3://, https://, @list, crawl id) -> candidates/"

    def run(self, ctx: Context) -> None:
        cfg, st, out = ctx.cfg, ctx.cfg.storage, ctx.out
        if storage.exists(storage.join(out, "_committed"), st):
            raise UsageError(f"--output {cfg.output}: candidates/ was written by an older crawlpairs "
                             "(batch layout); write to a new --output")
        self.move_old_manifests(ctx)
        settings = output_settings(cfg.extract, self.check_lid_model(cfg))
        digest = fingerprint.digest(settings)
        resolved = inputs.resolve(cfg.input, cfg.extract, st)
        unresolved = Stats()  # errors of inputs that never became files: they belong to no manifest
        for kind, spec, message in resolved.errors:
            unresolved.error(kind, input=spec, message=message)
        if not resolved.files and resolved.errors:
            kind, spec, message = resolved.errors[0]
            raise UsageError(f"--input: nothing to read ({spec}: {message})")

        manifests = self.read_manifests(ctx)
        wanted = {f.uri for f in resolved.files}
        stale = {k: m for k, m in manifests.items() if m.get("fingerprint") != digest}
        if stale and not cfg.extract.force:
            old = next(iter(stale.values())).get("settings") or {}
            try:
                fingerprint.check(old, settings, f"{out}: {len(stale)} committed input file(s)")
            except fingerprint.StaleOutput as exc:
                raise UsageError(f"--force: {exc}") from None
            raise UsageError(f"--force: {out}: {len(stale)} committed input file(s) predate settings "
                             "fingerprints: re-run with --force to re-extract them, or write to a new --output")
        redo = {k for k, m in manifests.items() if cfg.extract.force and (m["file"] in wanted or k in stale)}
        for key in sorted(redo):  # manifest first: its data files become orphans, removed below
            storage.rm(storage.join(manifest_dir(out), key + ".json"), st, recursive=False)
            del manifests[key]
        self.remove_orphans(ctx, manifests)

        committed = {m["file"] for m in manifests.values()}
        todo = [f for f in resolved.files if f.uri not in committed]
        this_run = Stats().merge(unresolved)
        this_run.incr("inputs_resolved", len(resolved.files))
        this_run.incr("files_skipped_committed", len(resolved.files) - len(todo))
        if redo:
            this_run.incr("files_forced", len(redo))
        pending: list[dict[str, Any]] = []
        if todo:
            for result in self.extract(ctx, todo, settings):
                if "pending" in result:
                    pending.append(result)
                else:
                    manifests[result["key"]] = result
                    this_run.merge(Stats.from_dict(result))
            # a pending file's write may have landed, a crashed attempt may have left a temp file
            self.remove_orphans(ctx, manifests)
        this_run.incr("files_pending", len(pending))
        ctx.stats = self.totals(list(manifests.values()), unresolved, this_run)
        # which WAT loop the executors ran this time (udfs/extract/_hotloop.c or Python): counts engine.<name>
        engines = sorted(k[7:] for k, v in this_run.counts.items() if k.startswith("engine.") and v)
        if engines:
            ctx.stats.extra["engine"] = "|".join(engines)
        lid_engines = sorted(k[11:] for k, v in this_run.counts.items() if k.startswith("lid_engine.") and v)
        if lid_engines:
            ctx.stats.extra["lid_engine"] = "|".join(lid_engines)
        if pending:
            ctx.stats.extra["pending"] = [{"file": p["file"], "reason": p["pending"]} for p in pending]
            ctx.pending = [p["file"] for p in pending]
            for p in pending[:20]:
                print(f"extract: pending {p['file']}: {p['pending'][:200]}", file=sys.stderr)
            if len(pending) > 20:
                print(f"extract: ... and {len(pending) - 20} more pending (see _stats.json)", file=sys.stderr)

    def check_lid_model(self, cfg: Config) -> str | None:
        """Fetch and load `--lid-model` here, before any input is read; its sha256, or None when off."""
        if lid_off(cfg.extract):
            return None
        from crawlpairs.udfs.extract import langid

        try:
            return langid.check_model(cfg.extract.lid_model, cfg.storage)
        except langid.ModelError as exc:
            raise UsageError(f"--lid-model {cfg.extract.lid_model}: {exc} (or --lid-model none)") from None

    def extract(self, ctx: Context, todo: list[inputs.InputFile], settings: dict[str, Any]) -> list[dict]:
        """One Spark task per input file; each commits its own file and returns its manifest."""
        if ctx.spark is None:
            from crawlpairs.spark import get_spark, light_driver

            ctx.spark = get_spark(light_driver(ctx.cfg))
        sc = ctx.spark.sparkContext
        items = [(f.uri, f.crawl) for f in sorted(todo, key=lambda f: f.uri)]
        sc.setJobDescription(f"extract {len(items)} file(s)")
        rdd = sc.parallelize(items, len(items))
        return rdd.mapPartitions(commit_files(ctx.cfg, ctx.out, settings)).collect()

    # -- bookkeeping ----------------------------------------------------------------

    def read_manifests(self, ctx: Context) -> dict[str, dict]:
        """Every committed file's manifest, keyed by file key (read in one batched call)."""
        pattern = storage.join(manifest_dir(ctx.out), "*.json")
        uris = storage.glob(pattern, ctx.cfg.storage)
        if not uris:
            return {}
        import orjson

        fs, _ = storage.filesystem(pattern, ctx.cfg.storage)
        paths = [storage.filesystem(u, ctx.cfg.storage)[1] for u in uris]
        docs = [orjson.loads(blob) for blob in fs.cat(paths).values()]
        return {d["key"]: d for d in docs}

    def move_old_manifests(self, ctx: Context) -> None:
        """An output from before the data-only layout: its manifests and stats move beside candidates/."""
        st = ctx.cfg.storage
        for uri in storage.glob(storage.join(ctx.out, OLD_MANIFESTS, "*.json"), st):
            storage.move(uri, storage.join(manifest_dir(ctx.out), storage.basename(uri)), st)
        for name in (OLD_MANIFESTS, "_stats.json"):
            if storage.exists(storage.join(ctx.out, name), st):
                storage.rm(storage.join(ctx.out, name), st, recursive=name == OLD_MANIFESTS)

    def remove_orphans(self, ctx: Context, manifests: dict[str, dict]) -> None:
        """Delete data files no manifest names (a killed or pending file's rows), and temp files."""
        st = ctx.cfg.storage
        named = {d for m in manifests.values() for d in m.get("data", [])}
        base = ctx.out.rstrip("/") + "/"
        for uri in storage.glob(storage.join(ctx.out, "crawl=*", "*"), st):
            rel = uri[len(base):] if uri.startswith(base) else uri
            name = storage.basename(uri)
            if (DATA_NAME.match(name) and rel not in named) or (name.startswith(".") and name.endswith(".tmp")):
                storage.rm(uri, st, recursive=False)

    @staticmethod
    def totals(manifests: list[dict], unresolved: Stats, this_run: Stats) -> Stats:
        """`_stats.json` describes the whole table (every committed file) plus this run."""
        total = Stats()
        for m in manifests:
            total.merge(Stats.from_dict(m))
        total.merge(unresolved)
        total.incr("rows_out", 0)
        total.extra["this_run"] = {k: v for k, v in this_run.to_dict().items() if k != "error_samples"}
        return total


if __name__ == "__main__":
    exit_process(main(ExtractStage))
