"""Stage 1: WAT/WARC files -> `candidates/` (one row per image-text pair).

Resumable by input file: input files are processed in commit batches; a batch is
written by one Spark write into its own `batch=<id>` partition (dynamic partition
overwrite, so a re-run of the same batch replaces it instead of appending), then a
manifest `_committed/<id>.json` lists its files. A later run skips every file named
in a manifest. A crash before the manifest leaves either nothing visible (Spark's
committer) or a complete partition that the re-run of the same batch overwrites.

Layout: candidates/crawl=<id>/batch=<id>/part-*.parquet, plus
`_committed/` (manifests), `_files/` (per-input-file counters and errors) and
`_stats.json` (totals over every committed batch, and this run's).
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Iterator

from crawlpairs import inputs, storage
from crawlpairs.config import Config
from crawlpairs.stage import Context, Stage, UsageError, main
from crawlpairs.stats import Stats


def file_key(uri: str) -> str:
    return hashlib.sha1(uri.encode()).hexdigest()[:16]


def batch_id(files: list[str]) -> str:
    return hashlib.sha1("\n".join(sorted(files)).encode()).hexdigest()[:12]


def make_batches(files: list[inputs.InputFile], per_batch: int) -> list[list[inputs.InputFile]]:
    """Deterministic chunks of the sorted pending files (same pending set -> same batches)."""
    files = sorted(files, key=lambda f: f.uri)
    if per_batch <= 0:
        return [files] if files else []
    return [files[i : i + per_batch] for i in range(0, len(files), per_batch)]


def extract_partition(cfg: Config, out: str, bid: str):
    """The function each Spark task runs over its input files (Arrow batches of `path, crawl`)."""

    def run(batches: Iterator) -> Iterator:
        import pyarrow as pa

        from crawlpairs.udfs.extract import extract_stream

        for arrow_batch in batches:
            for path, crawl in zip(arrow_batch.column("path").to_pylist(), arrow_batch.column("crawl").to_pylist(), strict=True):
                stats = Stats()
                try:
                    with storage.open_uri(path, "rb", cfg.storage) as fh:
                        for rb in extract_stream(fh, path, cfg.extract, stats, crawl=crawl, storage=cfg.storage):
                            if rb.num_rows:
                                yield rb.append_column("batch", pa.array([bid] * rb.num_rows, pa.string()))
                except FileNotFoundError as exc:
                    stats.error("missing_input", input=path, message=str(exc))
                except Exception as exc:  # noqa: BLE001 - a broken file never fails the job
                    stats.error("file_error", input=path, message=f"{exc.__class__.__name__}: {exc}")
                doc = {"file": path, "batch": bid, **stats.to_dict()}
                storage.write_json(storage.join(out, "_files", bid, file_key(path) + ".json"), doc, cfg.storage)

    return run


class ExtractStage(Stage):
    name = "extract"
    section = "extract"
    output_dir = "candidates"
    help = "Crawl files (WAT/WARC: paths, globs, folders, s3://, https://, @list, crawl id) -> candidates/"

    def run(self, ctx: Context) -> None:
        cfg, st = ctx.cfg, ctx.cfg.storage
        resolved = inputs.resolve(cfg.input, cfg.extract, st)
        unresolved = Stats()  # errors of inputs that never became files: they belong to no batch
        for kind, spec, message in resolved.errors:
            unresolved.error(kind, input=spec, message=message)
        manifests = self.read_manifests(ctx)  # read once: the skip list and the totals both use them
        committed = {f for m in manifests for f in m.get("files", [])}
        pending = [f for f in resolved.files if f.uri not in committed]
        this_run = Stats().merge(unresolved)
        this_run.incr("inputs_resolved", len(resolved.files))
        this_run.incr("files_skipped_committed", len(resolved.files) - len(pending))
        for batch in make_batches(pending, cfg.extract.files_per_batch):
            manifest = self.run_batch(ctx, batch)
            manifests.append(manifest)
            this_run.merge(Stats.from_dict(manifest))
        ctx.stats = self.totals(manifests, unresolved, this_run)
        if not resolved.files and resolved.errors:
            kind, spec, message = resolved.errors[0]
            raise UsageError(f"--input: nothing to read ({spec}: {message})")

    # -- one commit batch -----------------------------------------------------------

    def run_batch(self, ctx: Context, batch: list[inputs.InputFile]) -> dict:
        """Extract, dedup and write one batch; commit it with its manifest (which it returns)."""
        from pyspark.sql import Window
        from pyspark.sql import functions as F
        from pyspark.sql.pandas.types import from_arrow_schema

        from crawlpairs.udfs.extract import CANDIDATE_SCHEMA

        cfg, spark, out = ctx.cfg, ctx.spark, ctx.out
        bid = batch_id([f.uri for f in batch])
        paths = spark.sparkContext.parallelize([(f.uri, f.crawl) for f in batch], len(batch))
        files_df = spark.createDataFrame(paths, "path string, crawl string")
        schema = from_arrow_schema(CANDIDATE_SCHEMA).add("batch", "string")
        rows = files_df.mapInArrow(extract_partition(cfg, out, bid), schema)
        if cfg.extract.exact_dedup:
            # Deterministic survivor: earliest fetch, then first in file order.
            order = Window.partitionBy("uid").orderBy("fetch_time", "source_file", "source_offset", "page_url")
            rows = rows.withColumn("_rn", F.row_number().over(order)).where("_rn = 1").drop("_rn")
        (rows.write.mode("overwrite").partitionBy("crawl", "batch")
         .parquet(ctx.spark_uri(out)))

        stats = Stats()
        for uri in storage.glob(storage.join(out, "_files", bid, "*.json"), cfg.storage):
            stats.merge(Stats.from_dict(storage.read_json(uri, cfg.storage)))
        written = self.count_batch(ctx, bid)
        kept = stats.counts.get("pairs_kept", 0)
        stats.drop("duplicate_in_batch", max(kept - written, 0))
        stats.incr("rows_out", written)
        stats.incr("files_committed", len(batch))
        manifest = {"batch": bid, "files": [f.uri for f in batch], **stats.to_dict()}
        storage.write_json(storage.join(out, "_committed", bid + ".json"), manifest, cfg.storage)
        return manifest

    def count_batch(self, ctx: Context, bid: str) -> int:
        """Rows this batch wrote, from its own partitions' Parquet footers (not the whole table)."""
        base = ctx.spark_uri(ctx.out)
        try:
            df = ctx.spark.read.option("basePath", base).parquet(storage.join(base, "crawl=*", f"batch={bid}"))
        except Exception:  # noqa: BLE001 - the batch kept no row: no partition to read
            return 0
        return df.count()

    # -- bookkeeping ----------------------------------------------------------------

    def read_manifests(self, ctx: Context) -> list[dict]:
        uris = storage.glob(storage.join(ctx.out, "_committed", "*.json"), ctx.cfg.storage)
        return [storage.read_json(u, ctx.cfg.storage) for u in uris]

    @staticmethod
    def totals(manifests: list[dict], unresolved: Stats, this_run: Stats) -> Stats:
        """`_stats.json` describes the whole table (every committed batch) plus this run."""
        total = Stats()
        for m in manifests:
            total.merge(Stats.from_dict(m))
        total.merge(unresolved)
        total.extra["this_run"] = {k: v for k, v in this_run.to_dict().items() if k != "error_samples"}
        return total

if __name__ == "__main__":
    sys.exit(main(ExtractStage))
