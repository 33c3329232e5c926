"""Connected components of the near-duplicate graph (jobs/dedup_graph.py) on local Spark.

Checked against a plain union-find on graphs that are hard for label propagation: a
long path with shuffled ids (diameter n), a gallery bucket of 20k members, random
sparse graphs with 64-bit (also negative) ids. The query plan of every round must be
the same size: a plan that grows per round is what ran the old code out of heap.
"""

from __future__ import annotations

import random

import pytest

from crawlpairs.udfs.dedup import components


def union_find(edges: list[tuple[int, int]]) -> dict[int, int]:
    """node -> smallest node of its component (the oracle)."""
    parent: dict[int, int] = {}

    def find(x: int) -> int:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in edges:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return {x: find(x) for x in list(parent)}


def run_cc(spark, edges: list[tuple[int, int]], where, max_rounds: int = 40):
    from crawlpairs.jobs import dedup_graph

    df = spark.createDataFrame(edges, "a long, b long")
    with dedup_graph.Checkpoints(spark, str(where)) as checkpoint:
        cc = dedup_graph.connected_components(df, max_rounds, checkpoint)
        return cc, {r["id"]: r["comp"] for r in cc.labels.collect()}


def test_size_buckets():
    assert [components.size_bucket(n) for n in (2, 3, 9, 10, 99, 100, 999, 1000, 10**7)] == [
        "2", "3-9", "3-9", "10-99", "10-99", "100-999", "100-999", "1k+", "1k+"]
    with pytest.raises(ValueError):
        components.size_bucket(1)
    hist = components.size_histogram([("2", 3, 6), ("1k+", 1, 5000)])
    assert list(hist) == ["2", "3-9", "10-99", "100-999", "1k+"]
    assert hist["2"] == {"clusters": 3, "rows": 6} and hist["3-9"] == {"clusters": 0, "rows": 0}


def test_star_steps_on_small_graphs(spark):
    from crawlpairs.jobs import dedup_graph as g

    def edges_of(df):
        return sorted((r["hi"], r["lo"]) for r in df.collect())

    e = spark.createDataFrame([(3, 2), (2, 1)], "hi long, lo long")  # path 1-2-3
    assert edges_of(g.large_star(e)) == [(2, 1), (3, 1)]
    assert not g.is_star_forest(e) and g.is_star_forest(g.large_star(e))
    hub = spark.createDataFrame([(3, 1), (3, 2)], "hi long, lo long")  # 1-3-2: large-star keeps it
    assert edges_of(g.large_star(hub)) == [(3, 1), (3, 2)]
    assert edges_of(g.small_star(hub)) == [(2, 1), (3, 1)]


def test_long_path_with_shuffled_ids_converges_with_a_flat_plan(spark, tmp_path):
    rng = random.Random(7)
    ids = rng.sample(range(-10**12, 10**12), 3000)
    path = list(zip(ids, ids[1:], strict=False))
    cc, labels = run_cc(spark, path, tmp_path / "ckpt")
    assert cc.converged and 1 <= cc.rounds <= 20
    assert labels == union_find(path)
    assert len(set(labels.values())) == 1
    # every round starts from a checkpoint: the plan it builds does not grow with the rounds
    assert len(set(cc.plan_nodes)) == 1, cc.plan_nodes
    assert not (tmp_path / "ckpt").exists()  # the checkpoints are removed when done


def test_random_graphs_and_a_gallery_bucket(spark, tmp_path):
    from crawlpairs.jobs import dedup_graph

    rng = random.Random(11)
    nodes = [rng.getrandbits(64) - 2**63 for _ in range(4000)]
    edges = [(rng.choice(nodes), rng.choice(nodes)) for _ in range(3000)]
    edges += [(nodes[0], nodes[0])]  # a self loop is no edge
    cc, labels = run_cc(spark, edges, tmp_path / "ckpt")
    truth = union_find([e for e in edges if e[0] != e[1]])
    assert cc.converged and labels == truth
    assert len(set(truth.values())) > 100  # many components, not one

    # one gallery: 20k captions share three LSH buckets; a few also sit in small buckets
    gallery = list(range(1000, 21000))
    buckets = [(i, 7) for i in gallery] + [(i, 8) for i in gallery[::2]] + [(i, 9) for i in gallery[5000:]]
    buckets += [(1, 100), (2, 100), (5, 101), (1000, 101), (3, 102)]
    edges_df = dedup_graph.star_edges(spark.createDataFrame(buckets, "id long, bucket long"))
    n_edges = edges_df.count()
    assert n_edges <= len(buckets)  # a star per bucket: linear, never all pairs
    with dedup_graph.Checkpoints(spark, str(tmp_path / "ckpt2")) as checkpoint:
        cc = dedup_graph.connected_components(edges_df, 40, checkpoint)
        labels = {r["id"]: r["comp"] for r in cc.labels.collect()}
    assert cc.converged and cc.rounds <= 3
    assert labels == union_find([(r["a"], r["b"]) for r in edges_df.collect()])
    assert {labels[i] for i in gallery} == {5} and labels[1] == labels[2] == 1 and 3 not in labels
