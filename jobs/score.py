"""Stage 4: images/ (webdataset shards) -> scored/ (Parquet) + embeddings/ (clip-retrieval layout).

One Spark task per shard (`udfs.score.clip.score_shard` does the work on the executor: decode in
a thread pool, open_clip once per Python worker, GPU from the task's resources when Spark
assigned one). The driver then reads the per-shard rows, flags semantic near-duplicates
when asked, and writes the kept rows as flat Parquet files ranged by language and similarity band.

    crawlpairs score --input OUT/images --output OUT
    spark-submit --conf spark.executor.resource.gpu.amount=1 --conf spark.task.resource.gpu.amount=1 \\
        jobs/score.py --input s3://b/images --output s3://b/out
"""

from __future__ import annotations

import json
import math
import os

from crawlpairs import fingerprint, layout, storage
from crawlpairs.stage import Context, Stage, UsageError, exit_process, main
from crawlpairs.stats import Stats

DROP_COLUMNS = ("drop_reason", "error", "lsh_buckets", "img_emb")


def list_shards(inputs: list[str], st) -> list[str]:
    """Folders, globs or .tar paths -> sorted unique .tar shard URIs."""
    found: list[str] = []
    for uri in inputs:
        if uri.endswith(".tar"):
            found += storage.glob(uri, st) if any(c in uri for c in "*?[") else [uri]
        elif any(c in uri for c in "*?["):
            found += [u for u in storage.glob(uri, st) if u.endswith(".tar")]
        else:
            found += storage.glob(storage.join(uri, "*.tar"), st)
    return sorted(set(found))


def check_config(ctx: Context) -> None:
    """Fail on the driver, in one line, for what needs I/O or open_clip (choices and ranges: ScoreConfig.validate)."""
    opts, st = ctx.cfg.score, ctx.cfg.storage
    import open_clip

    from crawlpairs.udfs.score import clip

    clip.register_model_configs(opts.model_config_dir)
    for flag, name in (("--model", opts.model), ("--multilingual-model", opts.multilingual_model)):
        if name and name not in open_clip.list_models() and not name.startswith(("hf-hub:", "local-dir:")):
            raise UsageError(f"{flag} {name}: not an open_clip architecture (see open_clip.list_models())")
    for flag, uri in (("--pretrained", opts.pretrained), ("--multilingual-pretrained", opts.multilingual_pretrained),
                      ("--nsfw-model", opts.nsfw_model), ("--aesthetic-model", opts.aesthetic_model),
                      ("--watermark-model", opts.watermark_model)):
        looks_like_path = bool(uri) and ("://" in uri or "/" in uri or uri.endswith((".pt", ".pth", ".npz", ".bin")))
        if looks_like_path and not uri.startswith("hf-hub:") and not storage.exists(uri, st):
            raise UsageError(f"{flag} {uri}: no such file")
    for kind, uri in (("nsfw", opts.nsfw_model), ("aesthetic", opts.aesthetic_model), ("watermark", opts.watermark_model)):
        if uri:
            try:
                clip.get_head(kind, uri, st)
            except Exception as exc:  # noqa: BLE001
                raise UsageError(f"--{kind}-model {uri}: cannot load ({exc.__class__.__name__}: {exc})") from None


def _existing(uris: list[str], st) -> list[str]:
    """The URIs that exist: one listing per parent folder, not one request per URI (10k shards on S3)."""
    names: dict[str, set[str]] = {}
    out = []
    for uri in uris:
        parent = uri.rsplit("/", 1)[0]
        if parent not in names:
            names[parent] = {storage.basename(u) for u in storage.ls(parent, st)}
        if storage.basename(uri) in names[parent]:
            out.append(uri)
    return out


class ScoreStage(Stage):
    name = "score"
    section = "score"
    output_dir = "scored"
    stats_dir = layout.meta_dir(output_dir)
    help = "CLIP embeddings, similarity, NSFW / watermark / aesthetic heads, filters per language"

    @staticmethod
    def check_settings(ctx: Context) -> None:
        """Stop, in one line, before reusing shards scored under other settings (unless --force).

        The driver records the settings beside the per-shard rows; each shard also carries them,
        so a shard left over from an interrupted --force run is scored again, never reused.
        """
        from crawlpairs.udfs.score.clip import settings_uri, shard_settings

        cfg, st = ctx.cfg, ctx.cfg.storage
        uri, wanted = settings_uri(cfg.output), shard_settings(cfg.score)
        old = storage.read_json(uri, st) if storage.exists(uri, st) else None
        if not cfg.score.force:
            try:
                fingerprint.check(old, wanted, f"--output {cfg.output} (its scored shards)")
            except fingerprint.StaleOutput as exc:
                raise UsageError(str(exc)) from None
        if old != wanted:
            storage.write_json(uri, wanted, st)

    def run(self, ctx: Context) -> None:
        from pyspark.sql import functions as F

        cfg, opts, st = ctx.cfg, ctx.cfg.score, ctx.cfg.storage
        check_config(ctx)
        shards = list_shards(cfg.input, st)
        if not shards:
            raise UsageError(f"--input {' '.join(cfg.input)}: no .tar shards found")
        ctx.stats.incr("shards_in", len(shards))
        self.check_settings(ctx)
        spark = ctx.spark
        executor_cores = int(spark.conf.get("spark.executor.cores", "0") or 0) or spark.sparkContext.defaultParallelism
        out_root, force = cfg.output, opts.force

        def score_partition(it):
            from pyspark import TaskContext

            from crawlpairs.udfs.score import clip

            tc = TaskContext.get()
            res = tc.resources() if tc is not None else {}
            gpus = list(res["gpu"].addresses) if "gpu" in res else None
            cpus = tc.cpus() if tc is not None else 1
            for shard in it:
                try:
                    stats = clip.score_shard(shard, out_root, opts, st, gpu_addresses=gpus, task_cpus=cpus,
                                             executor_cores=executor_cores, force=force)
                except Exception as exc:  # noqa: BLE001 - a broken shard never fails the job
                    stats = Stats()
                    stats.incr("shards_failed")
                    stats.error("shard_failed", input=shard, message=f"{exc.__class__.__name__}: {exc}")
                yield json.dumps(stats.to_dict())

        rdd = spark.sparkContext.parallelize(shards, len(shards))
        for doc in rdd.mapPartitions(score_partition).collect():
            ctx.stats.merge(Stats.from_dict(json.loads(doc)))
        failed = ctx.stats.counts.get("shards_failed", 0)
        if failed and failed == len(shards):
            sample = next((s for s in ctx.stats.error_samples if s["kind"] == "shard_failed"), {})
            raise RuntimeError(f"every shard failed; first: {sample.get('input')}: {sample.get('message')}")

        from crawlpairs.udfs.score.clip import emb_uris, rows_uri
        from crawlpairs.udfs.wds import shard_id

        rows = _existing([rows_uri(out_root, shard_id(s)) for s in shards], st)
        df = spark.read.option("mergeSchema", "true").parquet(*[ctx.spark_uri(u) for u in rows])
        kept = df.filter(F.col("drop_reason").isNull())
        w = float(opts.similarity_band_width)
        kept = (kept.withColumn("language", F.coalesce(F.col("language"), F.lit("und")))
                .withColumn("similarity_band", F.round(
                    F.floor(F.round(F.col("similarity") / F.lit(w), 6)) * F.lit(w), 6)))
        flagged = opts.semantic_dup_threshold > 0
        if flagged:
            kept = self.flag_semantic_dups(kept, opts.semantic_dup_threshold)
        kept = kept.drop(*[c for c in DROP_COLUMNS if c in kept.columns]).persist()
        n = kept.count()
        if flagged:
            ctx.stats.incr("semantic_dups_flagged", kept.filter(F.col("semantic_dup")).count())
        # Flat files, every column inside (language and the band too: DuckDB and HF datasets read
        # them as columns, not folder names). Each file holds a range of (language, band), so a
        # reader's filter on either skips whole files by their Parquet statistics.
        files = max(1, math.ceil(n / max(1, opts.rows_per_file)))
        (kept.repartitionByRange(files, "language", "similarity_band", "key")
         .sortWithinPartitions("language", "similarity_band", "key")
         .write.mode("overwrite").parquet(ctx.spark_uri(ctx.out)))
        kept.unpersist()
        ctx.stats.extra["embeddings"] = storage.join(out_root, "embeddings")
        ctx.stats.extra["embedding_files"] = len(_existing([emb_uris(out_root, shard_id(s))["img_emb"]
                                                            for s in shards], st))
        ctx.stats.extra.setdefault("executor_cores", executor_cores)
        ctx.stats.extra.setdefault("pid", os.getpid())

    @staticmethod
    def flag_semantic_dups(kept, threshold: float):
        """Rows whose image embedding is within `threshold` cosine of an earlier row (key order)
        sharing an LSH bucket get semantic_dup=True and semantic_dup_of=<that key>."""
        from pyspark.sql import functions as F

        from crawlpairs.udfs.score.clip import flag_semantic_dups

        pairs = kept.select("key", "img_emb", F.explode("lsh_buckets").alias("bucket"))

        def per_bucket(pdf):
            import numpy as np
            import pandas as pd

            if len(pdf) < 2:
                return pd.DataFrame({"key": pd.Series([], dtype=str), "dup_of": pd.Series([], dtype=str)})
            emb = np.stack(pdf["img_emb"].to_numpy())
            dup = flag_semantic_dups(list(pdf["key"]), emb, threshold)
            out = pd.DataFrame({"key": pdf["key"].to_numpy(), "dup_of": dup})
            return out[out["dup_of"].notna()]

        flags = (pairs.groupBy("bucket").applyInPandas(per_bucket, "key string, dup_of string")
                 .groupBy("key").agg(F.min("dup_of").alias("semantic_dup_of")))
        return (kept.join(flags, on="key", how="left")
                .withColumn("semantic_dup", F.col("semantic_dup_of").isNotNull()))


if __name__ == "__main__":
    exit_process(main(ScoreStage))
