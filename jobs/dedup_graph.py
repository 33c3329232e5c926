"""Near-duplicate graph for dedup: LSH star edges and connected components, in Spark.

Everything here is a DataFrame transformation whose memory does not depend on how
the data clusters: no operator ever holds all pairs of a bucket, every per-node step
is an aggregate (one row per key) joined back to a table that streams, and every
round of connected components starts from a checkpoint, so the query plan stays the
same size however many rounds a cluster needs.

Checkpoints are Parquet files on the output's filesystem (`Checkpoints`), not
`localCheckpoint` blocks: a local checkpoint lives in the block manager of the executor
that computed it and cuts the lineage, so losing that executor lost the blocks and
failed the job; Parquet written beside the output outlives any executor.

* `star_edges`: each LSH bucket becomes a star (every member -> the bucket's smallest
  id): a bucket of n captions gives n-1 edges, not n(n-1)/2.
* `connected_components`: the alternating large-star / small-star algorithm of
  Kiveris et al. (SoCC 2014, "Connected Components in MapReduce and Beyond"):
  O(log^2 n) rounds proven, a handful in practice; each round at most keeps the edge
  count. It ends when the edges form stars around each component's smallest id.

Used by `jobs/dedup.py`; `udfs/dedup/components.py` holds the Spark-free parts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from crawlpairs.udfs.dedup.components import SIZE_BUCKETS


@dataclass
class Components:
    labels: Any  # DataFrame (id long, comp long): comp = smallest id of the component
    rounds: int  # large-star + small-star rounds run
    converged: bool  # False: max_rounds reached, some components may be split
    plan_nodes: list[int] = field(default_factory=list)  # analysed plan size of each round (flat)


class Checkpoints:
    """Durable checkpoints: each table written as Parquet under `root`, read back as one scan.

    The read-back plan is one file scan, so the plan of every round is the same size;
    the files sit on the output's filesystem (local disk, HDFS, s3a://), so an executor
    lost after a checkpoint costs only the tasks it was running: the lineage from the
    files is still there. `root` is a plain URI (s3://...); `close()` removes it.
    """

    def __init__(self, spark: Any, root: str, st: Any = None) -> None:
        self.spark, self.root, self.st, self.count = spark, root.rstrip("/"), st, 0

    def __call__(self, df: Any) -> Any:
        from crawlpairs import storage

        self.count += 1
        path = storage.spark_uri(storage.join(self.root, f"t{self.count:04d}"), self.st)
        df.write.mode("overwrite").parquet(path)
        # the schema is given, so reading back lists the files but infers nothing (and an
        # empty table, written as one schema-only file, reads back as empty)
        return self.spark.read.schema(df.schema).parquet(path)

    def close(self) -> None:
        from crawlpairs import storage

        storage.rm(self.root, self.st)

    def __enter__(self) -> Checkpoints:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def star_edges(buckets):
    """(id, bucket) -> distinct (a, b): a = the bucket's smallest id, b = another member.

    A window per bucket key; a bucket of 100k members is one sorted, spillable group,
    and yields 100k - 1 edges.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    w = Window.partitionBy("bucket")
    return (buckets.withColumn("rep", F.min("id").over(w)).where(F.col("id") != F.col("rep"))
            .select(F.col("rep").alias("a"), F.col("id").alias("b")).distinct())


def _canonical(edges):
    """Undirected edges as (hi, lo), hi > lo, no self loops, no duplicates."""
    from pyspark.sql import functions as F

    return (edges.select(F.greatest("a", "b").alias("hi"), F.least("a", "b").alias("lo"))
            .where(F.col("hi") != F.col("lo")).distinct())


def _min_lower(edges):
    """(hi, m): for every node with a smaller neighbour, its smallest neighbour."""
    from pyspark.sql import functions as F

    return edges.groupBy("hi").agg(F.min("lo").alias("m"))


def large_star(edges):
    """Every edge (v, u), v > u, becomes (v, m(u)), m(u) = min of u and its neighbours.

    The per-node minimum is an aggregate (one row per node) joined to the edges, which
    stream: a hub with a million neighbours is a million rows passing through a join.
    """
    from pyspark.sql import functions as F

    m = _min_lower(edges).select(F.col("hi").alias("lo"), F.col("m").alias("ml"))
    return edges.join(m, "lo", "left").select("hi", F.coalesce("ml", "lo").alias("lo")).distinct()


def small_star(edges):
    """Node u with smaller neighbours N' and m = min(N'): link u and all of N' to m."""
    from pyspark.sql import functions as F

    m = _min_lower(edges)
    spokes = (edges.join(m, "hi").where(F.col("lo") != F.col("m"))
              .select(F.col("lo").alias("hi"), F.col("m").alias("lo")))
    return spokes.unionByName(m.select("hi", F.col("m").alias("lo"))).distinct()


def is_star_forest(edges) -> bool:
    """True when every component is a star around its smallest id.

    That is: no node is the larger end of two edges, and no node is both the larger
    end of one edge and the smaller end of another. Then hi -> lo is the final label.
    """
    from pyspark.sql import functions as F

    ends = (edges.select(F.col("hi").alias("n"), F.lit(1).alias("h"), F.lit(0).alias("l"))
            .unionByName(edges.select(F.col("lo").alias("n"), F.lit(0).alias("h"), F.lit(1).alias("l"))))
    bad = (ends.groupBy("n").agg(F.sum("h").alias("h"), F.max("l").alias("l"))
           .where((F.col("h") > 1) | ((F.col("h") > 0) & (F.col("l") > 0))))
    return bad.limit(1).count() == 0


def connected_components(edges, max_rounds: int, checkpoint: Checkpoints) -> Components:
    """Label every node of `edges` (a long, b long) with the smallest id of its component.

    Isolated nodes (not in `edges`) get no label. Each round is large-star then
    small-star from a checkpoint; the driver only sees one boolean per round.
    """
    from pyspark.sql import functions as F

    current = checkpoint(_canonical(edges))
    rounds, plan_nodes = 0, []
    converged = is_star_forest(current)
    while not converged and rounds < max_rounds:
        rounds += 1
        step = small_star(large_star(current))
        plan_nodes.append(_plan_nodes(step))
        current = checkpoint(step)
        converged = is_star_forest(current)
    if converged:
        labels = current.select(F.col("hi").alias("id"), F.col("lo").alias("comp"))
    else:  # a best effort: each node's smallest known neighbour (some components split)
        labels = _min_lower(current).select(F.col("hi").alias("id"), F.col("m").alias("comp"))
    roots = labels.select(F.col("comp").alias("id"), F.col("comp")).distinct()
    labels = labels.unionByName(roots).groupBy("id").agg(F.min("comp").alias("comp"))
    return Components(checkpoint(labels), rounds, converged, plan_nodes)


def _plan_nodes(df) -> int:
    """Operators in the analysed plan of `df` (-1 where the JVM plan is not reachable)."""
    try:
        return df._jdf.queryExecution().analyzed().treeString().count("\n")
    except Exception:  # noqa: BLE001 - Spark Connect has no _jdf: the number is diagnostic only
        return -1


def size_bucket_column(size):
    """SQL CASE over SIZE_BUCKETS: the bucket label of a cluster size column."""
    from pyspark.sql import functions as F

    expr = None
    for lo, hi, label in SIZE_BUCKETS:
        cond = (size >= lo) if hi is None else size.between(lo, hi)
        expr = F.when(cond, label) if expr is None else expr.when(cond, label)
    return expr
