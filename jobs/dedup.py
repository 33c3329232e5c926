"""Stage 2: candidates/ -> deduped/ (exact, near-duplicate, and across runs).

Every input row ends with a `reason` (null = kept), decided in this order:
  blocked              a takedown blocked its uid, url, page url or a domain above either
                       host (`blocked` keys of the seen-set: --seen, else <output>/seen)
  seen_uid / seen_url  its uid (or url) was published by an earlier run (--seen)
  exact_uid            another row has the same uid (url + text)
  exact_url            another row has the same url (dedup_url)
  near_dup             (off by default) its caption is a near-duplicate (MinHash LSH
                       + exact Jaccard check + connected components, dedup_graph.py)
                       of a better-ranked row's, within the same image domain or
                       globally (near_dup_scope)
Which row of a group survives is the best by `url_keep`: `earliest` = earliest
fetch_time, then longest text; `longest_text` = longest text, then earliest fetch;
then uid, source_file, source_offset as the final tie-break, so the choice never
depends on partitioning. Everything is Spark shuffles/joins; the driver only sees
counts and the seen-set manifests. See docs/dedup.md.
"""

from __future__ import annotations

from crawlpairs import layout
from crawlpairs.stage import Context, Stage, exit_process, main
from crawlpairs.udfs.dedup import seen as dedup_seen
from crawlpairs.udfs.dedup.seen import SeenSet

REASONS = ("blocked", "seen_uid", "seen_url", "exact_uid", "exact_url", "near_dup")
INTERNAL = "batch"  # extract's commit-batch partition column: not part of the dataset
# The full table is cached twice (before near-dup, and annotated). DISK_ONLY streams each
# partition to local disk: MEMORY_AND_DISK builds whole cached partitions on the heap and
# ran a 3 GB local[2] JVM out of memory at 10M rows (bench/dedup/RESULTS.md).
CACHE_LEVEL = "DISK_ONLY"  # a pyspark StorageLevel name
# Near-dup checkpoints (Parquet, dedup_graph.Checkpoints) live in <output>/deduped_meta/_checkpoints/,
# beside the data folder (whose overwrite would delete them): removed at the end of the run, and at
# the start of the next one (what a killed run left).
CHECKPOINTS = "_checkpoints"


def rank_columns(url_keep: str):
    """Sort order of "better" rows; the first row of a group survives."""
    from pyspark.sql import functions as F

    early = F.col("fetch_time").asc_nulls_last()
    longer = F.length("text").desc_nulls_last()
    first = [early, longer] if url_keep == "earliest" else [longer, early]
    return [*first, F.col("uid").asc(), F.col("source_file").asc_nulls_last(),
            F.col("source_offset").asc_nulls_last(), F.col("page_url").asc_nulls_last()]


def phase(ctx: Context, name: str) -> None:
    """Label the Spark jobs that follow (UI, event logs, job-count checks)."""
    ctx.spark.sparkContext.setJobGroup(f"dedup:{name}", f"dedup: {name}", interruptOnCancel=False)


def url_key(col):
    """32 hex chars of sha256(url): the seen-set key for a url, same width as a uid."""
    from pyspark.sql import functions as F

    return F.substring(F.sha2(col, 256), 1, 32)


class DedupStage(Stage):
    name = "dedup"
    section = "dedup"
    output_dir = "deduped"
    stats_dir = layout.meta_dir(output_dir)
    help = "candidates/ -> deduped/: exact (uid, url), near-duplicate captions, and a seen-set across runs"

    def run(self, ctx: Context) -> None:
        if not ctx.cfg.dedup.near_dup:
            self.dedup(ctx, None)
            return
        with self.checkpoints(ctx) as checkpoint:
            self.dedup(ctx, checkpoint)

    def checkpoints(self, ctx: Context):
        """A fresh checkpoint folder for this run; what an earlier (killed) run left is removed."""
        import uuid

        from crawlpairs import storage
        from crawlpairs.jobs.dedup_graph import Checkpoints

        root = storage.join(ctx.cfg.output, self.stats_dir, CHECKPOINTS)
        storage.rm(root, ctx.cfg.storage)
        return Checkpoints(ctx.spark, storage.join(root, uuid.uuid4().hex[:12]), ctx.cfg.storage)

    def dedup(self, ctx: Context, checkpoint) -> None:
        """The whole job; near-dup runs when `checkpoint` (a dedup_graph.Checkpoints) is given."""
        from pyspark import StorageLevel
        from pyspark.sql import functions as F

        cache_level = getattr(StorageLevel, CACHE_LEVEL)
        cfg, opts = ctx.cfg, ctx.cfg.dedup
        phase(ctx, "read")
        rows = ctx.read_parquet_input()
        if INTERNAL in rows.columns:
            rows = rows.drop(INTERNAL)
        ctx.stats.extra["shuffle_partitions"] = ctx.size_shuffles(rows)
        columns = rows.columns
        rows = rows.withColumn("_ukey", url_key(F.col("url")))
        reason = F.lit(None).cast("string")

        # -- across runs: the seen-set ------------------------------------------------
        seen = SeenSet(opts.seen, cfg.storage) if opts.seen else None
        own = dedup_seen.run_key(ctx.out)
        commits = seen.commits(exclude_run=own) if seen else []
        n = opts.seen_prefix_chars
        prefixes_read: dict[str, int] = {}
        if commits:
            phase(ctx, "seen_read")
            needed = {r[0] for r in rows.select(F.substring("uid", 1, n)).distinct().collect()}
            seen_uid = self.read_seen(ctx, seen, "uid", commits, needed, prefixes_read)
            if seen_uid is not None:
                rows = rows.join(seen_uid.select(F.col("key").alias("uid"), F.lit(True).alias("_seen_uid")),
                                 "uid", "left")
                reason = F.when(F.col("_seen_uid"), "seen_uid")
            if opts.seen_by_url:
                needed_u = {r[0] for r in rows.select(F.substring("_ukey", 1, n)).distinct().collect()}
                seen_url = self.read_seen(ctx, seen, "url", commits, needed_u, prefixes_read)
                if seen_url is not None:
                    rows = rows.join(seen_url.select(F.col("key").alias("_ukey"), F.lit(True).alias("_seen_url")),
                                     "_ukey", "left")
                    reason = F.when(reason.isNotNull(), reason).when(F.col("_seen_url"), "seen_url")
        blocked = self.blocked_keys(ctx, seen)
        if blocked:  # takedowns win over every other reason, whatever run this is
            rows = self.mark_blocked(ctx, rows, blocked)
            reason = F.when(F.col("_blocked"), "blocked").otherwise(reason)
        rows = rows.withColumn("_reason", reason)

        # -- exact: one row per uid, then one row per url -------------------------------
        # No splitting and re-unioning (that multiplies partitions): each rule is a window
        # over all rows, ordered so that rows already dropped sort last and never win.
        from pyspark.sql import Window

        order = rank_columns(opts.url_keep)
        dropped_last = F.col("_reason").isNotNull().asc()
        if opts.dedup_uid:
            w = Window.partitionBy("uid").orderBy(dropped_last, *order)
            rows = rows.withColumn("_reason", F.coalesce(
                "_reason", F.when(F.row_number().over(w) > 1, F.lit("exact_uid"))))
        if opts.dedup_url:
            w = Window.partitionBy("url").orderBy(dropped_last, *order)
            rows = rows.withColumn("_reason", F.coalesce(
                "_reason", F.when(F.row_number().over(w) > 1, F.lit("exact_url"))))

        # -- near-duplicate captions among the rows still alive ------------------------------
        rows = rows.withColumn("_id", F.xxhash64("uid"))
        cached = None
        if checkpoint is not None:
            phase(ctx, "near_dup")
            rows = cached = rows.persist(cache_level)
            live = rows.where(F.col("_reason").isNull())
            drops = self.near_dup_drops(ctx, live, order, checkpoint)
            if drops is not None:
                rows = (rows.join(drops.select("_id", F.lit("near_dup").alias("_nd")), "_id", "left")
                        .withColumn("_reason", F.coalesce("_reason", "_nd")))
        ann = rows.select(*columns, "_ukey", "_reason").persist(cache_level)

        # -- outputs: deduped rows, counts, then the seen-set -------------------------------
        phase(ctx, "write")
        (ann.where(F.col("_reason").isNull()).select(*columns)
         .write.mode("overwrite").option("partitionOverwriteMode", "static")
         .parquet(ctx.spark_uri(ctx.out)))
        phase(ctx, "count")
        counts = {r["_reason"]: r["count"] for r in ann.groupBy("_reason").count().collect()}
        ctx.stats.incr("rows_in", sum(counts.values()))
        ctx.stats.incr("rows_out", counts.get(None, 0))
        for why in REASONS:
            ctx.stats.drop(why, counts.get(why, 0))
        if seen:
            phase(ctx, "seen_append")
            self.append_seen(ctx, seen, own, ann, commits, prefixes_read)
        ann.unpersist()
        if cached is not None:
            cached.unpersist()

    # -- checks ---------------------------------------------------------------------------

    # -- seen-set -------------------------------------------------------------------------

    @staticmethod
    def blocked_keys(ctx: Context, seen: SeenSet | None) -> set[str]:
        """Keys takedowns blocked: from --seen, else from <output>/seen (where takedown writes them)."""
        from crawlpairs import storage

        if seen is None:
            default = storage.join(ctx.cfg.output, "seen")
            if not storage.exists(storage.join(default, "_commits"), ctx.cfg.storage):
                return set()
            seen = SeenSet(default, ctx.cfg.storage)
        return seen.blocked_keys()

    @staticmethod
    def mark_blocked(ctx: Context, rows, keys: set[str]):
        """`_blocked`: the takedown rule (udfs.publish.takedown.is_blocked) with the keys broadcast once."""
        from pyspark.sql import functions as F

        from crawlpairs.udfs.publish.takedown import blocked_series

        shared = ctx.spark.sparkContext.broadcast(frozenset(keys))
        blocked = F.pandas_udf(blocked_series(lambda: shared.value), "boolean")
        page = F.col("page_url") if "page_url" in rows.columns else F.lit(None).cast("string")
        return rows.withColumn("_blocked", blocked(F.col("uid"), F.col("url"), page))

    def read_seen(self, ctx: Context, seen: SeenSet, kind: str, commits, needed: set[str],
                  prefixes_read: dict[str, int]):
        """Keys of committed attempts, only in the hash-prefix partitions this input touches."""
        paths = seen.paths(kind, commits, needed)
        prefixes_read[kind] = len(paths)
        if not paths:
            return None
        base = ctx.spark_uri(seen.kind_root(kind))
        df = ctx.spark.read.option("basePath", base).parquet(*[ctx.spark_uri(p) for p in paths])
        return df.select("key").distinct()

    def append_seen(self, ctx: Context, seen: SeenSet, own: str, ann, commits, prefixes_read) -> None:
        """Write this run's keys under a new attempt, then commit it with one manifest write."""
        from pyspark.sql import functions as F

        opts = ctx.cfg.dedup
        n = opts.seen_prefix_chars
        attempt = dedup_seen.new_attempt(own)
        fresh = ann.where(~F.coalesce(F.col("_reason").isin("blocked", "seen_uid", "seen_url"), F.lit(False)))
        keys = {"uid": fresh.select(F.col("uid").alias("key")).distinct()}
        url_keys = fresh.select(F.col("_ukey").alias("key")).distinct()
        known = None
        if commits and not opts.seen_by_url:  # with --seen-by-url, `fresh` holds no published url already
            needed = {r[0] for r in url_keys.select(F.substring("key", 1, n)).distinct().collect()}
            known = self.read_seen(ctx, seen, "url", commits, needed, prefixes_read)
        keys["url"] = url_keys.join(known, "key", "left_anti") if known is not None else url_keys
        kinds = {}
        for kind, df in keys.items():
            target = seen.attempt_dir(kind, attempt)
            (df.withColumn("p", F.substring("key", 1, n)).repartition("p").sortWithinPartitions("key")
             .write.mode("overwrite").partitionBy("p").parquet(ctx.spark_uri(target)))
            try:
                written = ctx.spark.read.parquet(ctx.spark_uri(target)).count()
            except Exception:  # noqa: BLE001 - nothing new: Spark wrote no file to infer a schema from
                written = 0
            kinds[kind] = {"prefixes": seen.written_prefixes(kind, attempt), "rows": written}
        seen.commit(own, attempt, kinds, {"output": ctx.out, "inputs": ctx.cfg.input,
                                          "prefix_chars": n})
        removed = seen.collect_garbage(own, attempt)
        ctx.stats.extra["seen"] = {"root": opts.seen, "run_key": own, "attempt": attempt,
                                   "runs_read": len(commits), "partitions_read": prefixes_read,
                                   "appended": {k: v["rows"] for k, v in kinds.items()},
                                   "old_attempts_removed": len(removed)}

    # -- near-duplicates -------------------------------------------------------------------

    def near_dup_drops(self, ctx: Context, live, order, checkpoint):
        """Ids (`_id`) of rows whose caption near-duplicates a better-ranked row's.

        LSH buckets become stars (member -> bucket's smallest id), each star edge is
        verified by exact Jaccard against that representative, and the verified edges
        are clustered by `dedup_graph.connected_components`. Memory per task never
        depends on cluster size (see jobs/dedup_graph.py).
        """
        from pyspark.sql import Window
        from pyspark.sql import functions as F

        from crawlpairs.jobs import dedup_graph as graph
        from crawlpairs.udfs.dedup import minhash

        opts = ctx.cfg.dedup
        k, perm, seed = opts.shingle_size, opts.num_perm, opts.seed
        bands, rows_per_band = opts.bands, opts.rows_per_band
        scope = F.xxhash64("image_domain") if opts.near_dup_scope == "image_domain" else F.lit(None).cast("long")
        src = live.select(F.col("_id").alias("id"), "text", scope.alias("scope"))

        def band_keys(batches):
            return minhash.band_batches(batches, k, perm, bands, rows_per_band, seed)

        edges = checkpoint(graph.star_edges(src.mapInArrow(band_keys, "id long, bucket long")))
        # what the banding promises: the S-curve's midpoint, and the chance that a pair right at
        # the verify threshold shares a band at all (the recall ceiling of these settings)
        midpoint = minhash.lsh_threshold(bands, rows_per_band)
        at_threshold = minhash.candidate_probability(opts.threshold, bands, rows_per_band)
        info: dict = {"candidate_pairs": edges.count(), "lsh_midpoint": round(midpoint, 3),
                      "p_candidate_at_threshold": round(at_threshold, 3)}
        ctx.stats.extra["near_dup"] = info
        if info["candidate_pairs"] and opts.threshold > 0:
            phase(ctx, "near_dup_verify")
            texts = live.select(F.col("_id").alias("id"), "text")
            pairs = (edges.join(texts.withColumnRenamed("id", "a").withColumnRenamed("text", "text_a"), "a")
                     .join(texts.withColumnRenamed("id", "b").withColumnRenamed("text", "text_b"), "b"))

            def verify(batches):
                return minhash.verify_batches(batches, k)

            scored = pairs.select("a", "b", "text_a", "text_b").mapInArrow(verify, "a long, b long, jaccard float")
            edges = checkpoint(scored.where(F.col("jaccard") >= opts.threshold).select("a", "b"))
        info["verified_pairs"] = edges.count() if opts.threshold > 0 else info["candidate_pairs"]
        if info["verified_pairs"] == 0:
            info.update(clusters=0, rows_in_clusters=0, cc_rounds=0)
            return None
        phase(ctx, "components")
        cc = graph.connected_components(edges, opts.max_cc_iterations, checkpoint)
        info["cc_rounds"] = cc.rounds
        if not cc.converged:
            ctx.stats.error("near_dup_not_converged", message=f"{cc.rounds} rounds; some clusters split")
        phase(ctx, "near_dup_rank")
        ranked = live.select(F.col("_id").alias("id"), "uid", "url", "text", "fetch_time", "source_file",
                             "source_offset", "page_url", "image_domain").join(cc.labels, "id")
        w = Window.partitionBy("comp").orderBy(*order)
        numbered = checkpoint(ranked.withColumn("_rn", F.row_number().over(w))
                              .select("id", "comp", "_rn", "url", "text", "page_url", "image_domain"))
        self.cluster_stats(ctx, numbered, info)
        return numbered.where("_rn > 1").select(F.col("id").alias("_id"))

    def cluster_stats(self, ctx: Context, numbered, info: dict, top: int = 10) -> None:
        """Cluster-size histogram and the largest clusters (survivor's domain, text, url)."""
        from pyspark.sql import functions as F

        from crawlpairs.jobs import dedup_graph as graph
        from crawlpairs.udfs.dedup import components

        sizes = numbered.groupBy("comp").agg(F.count("*").alias("size"),
                                             F.countDistinct("page_url").alias("pages"))
        hist = (sizes.groupBy(graph.size_bucket_column(F.col("size")).alias("bucket"))
                .agg(F.count("*").alias("clusters"), F.sum("size").alias("rows")).collect())
        info["size_histogram"] = components.size_histogram((h["bucket"], h["clusters"], h["rows"]) for h in hist)
        info["clusters"] = sum(h["clusters"] for h in hist)
        info["rows_in_clusters"] = sum(h["rows"] for h in hist)
        biggest = sizes.orderBy(F.col("size").desc(), "comp").limit(top)
        best = numbered.where("_rn = 1").select("comp", "image_domain", "text", "url")
        info["largest"] = [
            {"size": x["size"], "pages": x["pages"], "image_domain": x["image_domain"], "kept_text": x["text"],
             "kept_url": x["url"]}
            for x in biggest.join(best, "comp").orderBy(F.col("size").desc(), "comp").collect()]


if __name__ == "__main__":
    exit_process(main(DedupStage))
