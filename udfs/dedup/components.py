"""Near-duplicate clusters: the size buckets `_stats.json` reports, Spark-free.

The connected-components algorithm itself is DataFrame wiring (`jobs/dedup_graph.py`);
what is a plain fact about cluster sizes lives here, so the job, the benchmark and the
tests share one definition.
"""

from __future__ import annotations

from collections.abc import Iterable

# (smallest size, largest size or None, label): every cluster has >= 2 members.
SIZE_BUCKETS: tuple[tuple[int, int | None, str], ...] = (
    (2, 2, "2"),
    (3, 9, "3-9"),
    (10, 99, "10-99"),
    (100, 999, "100-999"),
    (1000, None, "1k+"),
)


def size_bucket(n: int) -> str:
    """The label of the size bucket a cluster of `n` members falls into."""
    for lo, hi, label in SIZE_BUCKETS:
        if n >= lo and (hi is None or n <= hi):
            return label
    raise ValueError(f"a cluster has at least 2 members, got {n}")


def size_histogram(counts: Iterable[tuple[str, int, int]]) -> dict[str, dict[str, int]]:
    """{label: {"clusters", "rows"}} in bucket order, every bucket present (zeros included).

    `counts` holds (label, clusters, rows) triples as the job collects them.
    """
    out = {label: {"clusters": 0, "rows": 0} for _, _, label in SIZE_BUCKETS}
    for label, clusters, rows in counts:
        out[label]["clusters"] += int(clusters)
        out[label]["rows"] += int(rows)
    return out
