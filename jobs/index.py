"""Stage 5: `embeddings/` -> `index/` (autofaiss kNN indices + metadata to map hits back).

`crawlpairs index --input OUT/embeddings --output OUT/index`. The work is in
`crawlpairs.udfs.index.build.build`; this job only hands it Spark where Spark helps:
autofaiss's pyspark mode (`--distributed`, one index or `--nb-indices-to-keep` of them)
finds this session itself, and `--shard-by partition` runs one autofaiss build per
embedding part as one Spark task each.
"""

from __future__ import annotations

from typing import Any

from crawlpairs import storage
from crawlpairs.stage import Context, Stage, UsageError, exit_process, main
from crawlpairs.udfs.index import build as knn_build


class IndexStage(Stage):
    name = "index"
    section = "index"
    output_dir = ""  # the user names the index folder: --output OUT/index
    help = "embeddings/ -> index/: autofaiss kNN indices, sharded, with row-aligned metadata"

    def run(self, ctx: Context) -> None:
        cfg = ctx.cfg
        if len(cfg.input) != 1:
            raise UsageError(f"--input: give one embeddings folder (got {len(cfg.input)})")
        icfg = cfg.index
        spark = ctx.spark
        root = cfg.input[0].rstrip("/")
        if not any(storage.exists(storage.join(root, d), cfg.storage) for d in ("metadata", *icfg.kinds)) and \
                storage.exists(storage.join(root, "embeddings", "metadata"), cfg.storage):
            root = storage.join(root, "embeddings")  # --input OUT works as well as OUT/embeddings
        if icfg.distributed and icfg.shard_by == "none" and icfg.tmp_dir is None and not _local_master(spark):
            raise UsageError("--tmp-dir: a URI every executor can reach (s3://...) is needed on a cluster")

        def spark_map(fn: Any, items: list) -> list:
            if not items:
                return []
            return spark.sparkContext.parallelize(items, len(items)).map(fn).collect()

        use_spark = icfg.distributed and spark is not None
        try:
            info = knn_build.build(
                root, ctx.out, icfg, cfg.storage, ctx.stats, score_cfg=cfg.score,
                map_fn=spark_map if use_spark else None,
            )
        except knn_build.IndexBuildError as exc:
            raise UsageError(str(exc)) from None
        ctx.stats.incr("rows_out", info["count"])  # rows_in and drops by reason: counted per part by knn_build
        ctx.stats.extra.setdefault("clip", info.get("clip"))

    def summary(self, ctx: Context) -> str:
        c = ctx.stats.counts
        skipped = " (unchanged, skipped)" if c.get("skipped_up_to_date") else ""
        return f"index: {c.get('rows_out', 0)} vectors from {c.get('parts_used', 0)} parts -> {ctx.out}{skipped}"


def _local_master(spark: Any) -> bool:
    if spark is None:
        return True
    return str(spark.sparkContext.master).startswith("local")


if __name__ == "__main__":
    exit_process(main(IndexStage))
