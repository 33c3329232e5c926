"""Stage 6: scored/ + images/ (or deduped/ when the run stopped earlier) -> dataset/.

    crawlpairs publish --output OUT            # reads OUT/scored (+ OUT/images) or OUT/deduped
    spark-submit jobs/publish.py --output s3://bucket/run

Writes `OUT/dataset/`:
  data/part-NNNNN.parquet    every published row, `language` and every filter column inside the file
  laion/part-NNNNN.parquet   the same rows in LAION-5B's names and types (flat: img2dataset reads it)
  open/part-NNNNN.parquet    rows on CC0 / PDM pages (`--open-licenses`), with provenance
  README.md                  the Hugging Face dataset card (configs default/laion/open) and datasheet
and its stage stats in `OUT/dataset_meta/_stats.json`: the data folders hold data only.

Files are cut by row count (`--rows-per-file`, never hundreds of tiny files) and rows are
sorted by uid, so a re-run writes the same files. Each Spark task writes its own part
with pyarrow (no `_SUCCESS`/`.crc` litter). The new folders are built complete in a
hidden staging folder beside the old ones and then swapped in folder by folder; a crash
before the swap leaves the old dataset as it was, a crash during it a folder missing
until the re-run (which always rebuilds everything).
"""

from __future__ import annotations

import hashlib
import math
import os
import tempfile
import uuid
from collections.abc import Callable, Iterator

from crawlpairs import layout, storage
from crawlpairs.stage import Context, Stage, UsageError, exit_process, main
from crawlpairs.udfs.publish import tables as publish

# Columns the download shards carry from deduped/ that scored/ does not repeat: the provenance.
PROVENANCE = ("crawl", "source_file", "source_offset", "fetch_time", "license_url", "page_domain",
              "image_domain", "text_source")
# Bookkeeping of the score stage that is not part of a published row.
NOT_PUBLISHED = ("emb_row", "shard", "drop_reason", "error", "lsh_buckets", "img_emb", "similarity_model")
FOLDERS = ("data", "laion", "open")


def value_counts(rows, column: str, null: str = "none") -> dict[str, int]:
    """Rows per value of `column` (one Spark aggregate); a missing column counts nothing."""
    if column not in rows.columns:
        return {}
    return {str(r[0]) if r[0] is not None else null: int(r[1]) for r in rows.groupBy(column).count().collect()}


def sha256_of(uri: str, st) -> str | None:
    """A model or list file's sha256 (for the card); None when it cannot be read."""
    try:
        h = hashlib.sha256()
        with storage.open_uri(uri, "rb", st) as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        return h.hexdigest()
    except Exception:  # noqa: BLE001 - a tag such as `openai` is not a file
        return None


def part_writer(folder: str, transform: Callable, st) -> Callable[[Iterator], Iterator]:
    """mapInArrow body: the task streams its rows through `transform` into one Parquet part of `folder`."""

    def run(batches: Iterator) -> Iterator:
        import pyarrow as pa
        import pyarrow.parquet as pq
        from pyspark import TaskContext

        part = TaskContext.get().partitionId()
        rows, writer = 0, None
        with tempfile.TemporaryDirectory(prefix="crawlpairs-publish-") as tmp:
            local = os.path.join(tmp, "part.parquet")
            for batch in batches:
                out = transform(batch)
                if out.num_rows == 0:
                    continue
                if writer is None:
                    writer = pq.ParquetWriter(local, out.schema, compression="zstd")
                writer.write_batch(out)
                rows += out.num_rows
            if writer is not None:
                writer.close()
                storage.put_file(local, storage.join(folder, f"part-{part:05d}.parquet"), st)
        yield pa.RecordBatch.from_arrays([pa.array([part], pa.int32()), pa.array([rows], pa.int64())],
                                         names=["part", "rows"])

    return run


class PublishStage(Stage):
    name = "publish"
    section = "publish"
    output_dir = "dataset"
    stats_dir = layout.meta_dir("dataset")
    input_required = False
    help = "scored/ + images/ (or deduped/) -> dataset/: data, laion and open configs and a dataset card"

    def run(self, ctx: Context) -> None:
        from pyspark.sql import functions as F

        cfg, st, spark, p = ctx.cfg, ctx.cfg.storage, ctx.spark, ctx.cfg.publish
        root = cfg.output
        source = next((s for s in ("scored", "deduped") if storage.exists(storage.join(root, s), st)), None)
        if source is None:
            raise UsageError(f"--output {root}: holds neither scored/ nor deduped/ to publish")
        rows = spark.read.parquet(ctx.spark_uri(storage.join(root, source)))
        rows = rows.drop(*[c for c in (*NOT_PUBLISHED, "batch") if c in rows.columns])
        if "similarity_band" in rows.columns:  # a folder name in scored/: a number inside the files
            rows = rows.withColumn("similarity_band", F.col("similarity_band").cast("double"))
        shards = storage.glob(storage.join(root, "images", "*.parquet"), st) if source == "scored" else []
        if shards:
            prov = spark.read.option("mergeSchema", "true").parquet(*[ctx.spark_uri(u) for u in shards])
            extra = [c for c in PROVENANCE if c in prov.columns and c not in rows.columns]
            if extra and "uid" in prov.columns:
                rows = rows.join(prov.select("uid", *extra).dropDuplicates(["uid"]), "uid", "left")
        rows = rows.persist()
        n = rows.count()
        parts = max(1, math.ceil(n / p.rows_per_file))
        ordered = rows.repartitionByRange(parts, "uid").sortWithinPartitions("uid")

        staging = storage.join(ctx.out, f".staging-{uuid.uuid4().hex[:8]}")
        licenses = list(p.open_licenses)
        transforms = {"data": lambda b: b, "laion": publish.laion_batch,
                      "open": lambda b: publish.open_batch(b, licenses)}
        counts = {}
        for folder, transform in transforms.items():
            written = ordered.mapInArrow(part_writer(storage.join(staging, folder), transform, st),
                                         "part int, rows long").collect()
            counts[folder] = sum(r["rows"] for r in written)
            if counts[folder] == 0:  # an empty config still loads: one empty file with the schema
                self.write_empty(ctx, storage.join(staging, folder, "part-00000.parquet"), folder, rows)
        facts = self.facts(ctx, rows, source)
        rows.unpersist()
        text = publish.card(p.pretty_name, p.card_license, n, counts["open"], facts["languages"],
                            facts["image_domains"], facts["page_domains"], facts["crawls"], facts["stages"],
                            self.models(ctx, facts["stages"]), licenses,
                            {f if f != "data" else "default": f"{f}/*.parquet" for f in FOLDERS}, source)
        storage.write_bytes(storage.join(staging, "README.md"), text.encode("utf-8"), st)
        self.swap_in(ctx, staging)
        for folder in FOLDERS:
            ctx.stats.incr(f"rows_{folder}", counts[folder])
        ctx.stats.incr("rows_in", n)
        ctx.stats.incr("rows_out", counts["data"])
        ctx.stats.extra["source"] = source
        ctx.stats.extra["concentration_image_domains"] = publish.concentration(facts["image_domains"])

    @staticmethod
    def write_empty(ctx: Context, uri: str, folder: str, rows) -> None:
        import io

        import pyarrow as pa
        import pyarrow.parquet as pq

        empty = pa.RecordBatch.from_pylist([], schema=rows.limit(0).toArrow().schema)
        if folder == "laion":
            empty = publish.laion_batch(empty)
        elif folder == "open":
            empty = publish.open_batch(empty, ctx.cfg.publish.open_licenses)
        buf = io.BytesIO()
        pq.write_table(pa.Table.from_batches([empty]), buf)
        storage.write_bytes(uri, buf.getvalue(), ctx.cfg.storage)

    @staticmethod
    def facts(ctx: Context, rows, source: str) -> dict:
        """Counts the card states: languages, domains, crawls, and every stage's own `_stats.json`."""
        return {"languages": value_counts(rows, "language", null="und"),
                "image_domains": value_counts(rows, "image_domain"), "page_domains": value_counts(rows, "page_domain"),
                "crawls": value_counts(rows, "crawl"),
                "stages": layout.stage_stats(ctx.cfg.output, ctx.cfg.storage)}

    @staticmethod
    def models(ctx: Context, stages: dict) -> dict[str, dict[str, str]]:
        """Model and list files named in the stages' recorded settings, with their sha256."""
        st = ctx.cfg.storage
        out: dict[str, dict[str, str]] = {}
        wanted = (("extract", "lid_model", "language ID"), ("score", "model", "CLIP architecture"),
                  ("score", "pretrained", "CLIP weights"), ("score", "nsfw_model", "NSFW head"),
                  ("score", "aesthetic_model", "aesthetic head"), ("score", "watermark_model", "watermark head"),
                  ("download", "url_blocklist", "URL blocklist"), ("download", "hash_blocklist", "image blocklist"),
                  ("download", "do_not_train", "Do-Not-Train list"))
        for stage, key, role in wanted:
            value = stages.get(stage, {}).get("config", {}).get(stage, {}).get(key)
            if not value:
                continue
            digest = None
            if key not in ("model",) and ("/" in str(value) or "://" in str(value)):
                digest = sha256_of(str(value), st)
            out[role] = {"name": str(value), "sha256": digest or ""}
        return out

    @staticmethod
    def swap_in(ctx: Context, staging: str) -> None:
        """Replace dataset/'s folders and card by the complete new ones, one rename each (locally)."""
        st = ctx.cfg.storage
        for name in (*FOLDERS, "README.md"):
            target = storage.join(ctx.out, name)
            if storage.exists(target, st):
                storage.rm(target, st, recursive=True)
            storage.move(storage.join(staging, name), target, st)
        storage.rm(staging, st, recursive=True)


if __name__ == "__main__":
    exit_process(main(PublishStage))
