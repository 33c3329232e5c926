"""The download planner (udfs/download/plan): host keys that never throw, the bound, big hosts split with shares."""

from __future__ import annotations

import pyarrow as pa
import pytest

from crawlpairs.udfs.download import plan as dl_plan


def _plan(urls: list[str], tasks: int, rps: float = 2.0, reverse: bool = False,
          max_split: int = dl_plan.RESIDUES) -> tuple[dict, list[dict]]:
    """Run tag -> summarize -> make_plan -> assign over plain Arrow batches, as the job does on executors."""
    uids = [f"uid-{i}" for i in range(len(urls))]
    order = slice(None, None, -1) if reverse else slice(None)
    batch = pa.RecordBatch.from_pydict({"uid": uids[order], "url": urls[order]})
    tagged = list(dl_plan.tag_batches([batch], max_url_length=2048))
    # two "partitions", each holding whole hosts (the job repartitions by host first)
    hosts = sorted({h for b in tagged for h in b.column("_host").to_pylist()})
    parts = [[], []]
    for b in tagged:
        for row in b.to_pylist():
            parts[hosts.index(row["_host"]) % 2].append(row)
    rate = lambda h: rps  # noqa: E731
    summary = []
    for part in parts:
        if part:
            rb = pa.RecordBatch.from_pylist(part)
            summary += next(dl_plan.summarize_hosts([rb], tasks, rate, top=2 * tasks + 10)).to_pylist()
    plan = dl_plan.make_plan(summary, tasks, rate, max_split=max_split)
    plan.update(task_keys=dl_plan.partition_keys(tasks), order_rps=rps)
    rows = [r for b in dl_plan.assign_batches(tagged, plan, 100.0) for r in b.to_pylist()]
    return plan, rows


def test_bad_urls_get_no_host_and_never_raise() -> None:
    bad = ["not a url", "Thailand 2011-01/thumbs/img-246.jpg", "http://[::1/a.jpg", "ftp://h/a.jpg",
           "http://h/" + "x" * 3000, "", None, 42, "http://exa mple.com/a.jpg", "javascript:alert(1)"]
    assert [dl_plan.url_host(u, 2048) for u in bad] == [""] * len(bad)
    assert dl_plan.url_host("http://Example.COM./a b.jpg", 2048) == "example.com:80"
    assert dl_plan.url_host("https://１２７.０.０.１/a.jpg", 2048) == "127.0.0.1:443"  # the host the client connects to


def test_plan_bound_split_and_shares() -> None:
    """1,200 rows on one host and 800 over 50: the big host bounds the job and is split over tasks."""
    urls = [f"http://big.example/{i}.jpg" for i in range(1200)]
    urls += [f"http://s{i % 50}.example/{i}.jpg" for i in range(800)]
    urls += ["not a url"] * 3
    plan, rows = _plan(urls, tasks=8, rps=5.0)
    assert plan["input"]["rows"] == 2003 and plan["input"]["hosts"] == 52  # 51 hosts + "" (bad URLs)
    assert plan["bound_seconds"] == pytest.approx(1200 / 5.0)
    assert plan["bounding_hosts"][0]["host"] == "big.example:80"
    big = plan["big_hosts"]["big.example:80"]
    assert big["k"] >= 4 and len(set(big["tasks"])) == big["k"] and big["share"] * big["k"] == pytest.approx(1.0)
    assert set(plan["big_hosts"]) == {"big.example:80"}  # small hosts stay whole: their own limit holds
    # every row placed once; row counts per task in the plan are exact (shard numbering relies on it)
    assert len(rows) == len(urls)
    per_task = [sum(1 for r in rows if r["_task"] == t) for t in range(8)]
    assert per_task == plan["task_rows"]
    # each small host lives in exactly one task; the big host's rows spread over its K tasks evenly-ish
    for h in {r["_host"] for r in rows if r["_host"].startswith("s")}:
        assert len({r["_task"] for r in rows if r["_host"] == h}) == 1
    big_rows = [r for r in rows if r["_host"] == "big.example:80"]
    assert {r["_task"] for r in big_rows} == set(big["tasks"])
    assert all(r["_rate"] == pytest.approx(5.0 / big["k"]) for r in big_rows)
    assert {r["_tkey"] for r in rows if r["_task"] == 0} == {plan["task_keys"][0]}
    # shares of a host sum to at most 1: the global per-host limit still holds
    shares = dl_plan.rate_shares(plan)
    assert sum(shares["big.example:80"] for _ in big["tasks"]) == pytest.approx(1.0)


@pytest.mark.parametrize("tasks", [3, 6, 8])
@pytest.mark.parametrize("max_split", [1, 2, 4, 64])
def test_split_is_a_power_of_two_within_the_host_concurrency(tasks: int, max_split: int) -> None:
    """K pieces get 1/K of the host's concurrency each, so K <= per_host_concurrency (max_split); and K is a
    power of two whatever the task count (rows are placed by uid-hash bits), so the plan's counts are exact."""
    urls = [f"http://big.example/{i}.jpg" for i in range(1200)] + [f"http://s{i % 50}.example/{i}" for i in range(800)]
    plan, rows = _plan(urls, tasks=tasks, rps=5.0, max_split=max_split)
    big = plan["big_hosts"].get("big.example:80")
    if max_split < 2:
        assert big is None  # one task holds the host: its own per-host limits hold as they are
    else:
        k = big["k"]
        assert k & (k - 1) == 0 and 2 <= k <= min(tasks, max_split)
        assert {r["_task"] for r in rows if r["_host"] == "big.example:80"} == set(big["tasks"])
    assert [sum(1 for r in rows if r["_task"] == t) for t in range(tasks)] == plan["task_rows"]


def test_plan_is_deterministic_and_independent_of_row_order() -> None:
    urls = [f"http://h{i % 7}.example/{i}.jpg" for i in range(300)] + [f"http://big.example/{i}" for i in range(400)]
    plan_a, rows_a = _plan(urls, tasks=4)
    plan_b, rows_b = _plan(urls, tasks=4, reverse=True)
    plan_a.pop("created_at", None)
    assert plan_a == plan_b
    place = {r["url"]: r["_task"] for r in rows_a}
    assert {r["url"]: r["_task"] for r in rows_b} == place


def test_partition_keys_match_spark_hash_partitioning(spark) -> None:
    """The job relies on `repartition(n, _tkey)` putting task t alone in partition t."""
    from pyspark.sql import functions as F

    tasks = 7
    keys = dl_plan.partition_keys(tasks)
    df = spark.createDataFrame([(t, k) for t, k in enumerate(keys)], "t int, k long").repartition(tasks, "k")
    got = df.select("t", F.spark_partition_id().alias("p")).collect()
    assert {r["t"]: r["p"] for r in got} == {t: t for t in range(tasks)}
    vals = [0, 1, -1, 2**40 + 7, -(2**63), 123456789012]
    row = spark.sql("select " + ", ".join(f"hash(cast({v} as bigint))" for v in vals)).first()
    assert list(row) == [dl_plan.spark_hash_long(v) for v in vals]


def test_shard_layout_numbers_shards_per_task() -> None:
    lay = dl_plan.shard_layout([25, 0, 10], 10)
    assert lay["task_first_shard"] == [0, 3, 3] and lay["shards"] == 4
    assert lay["shard_digits"] == 5 and lay["index_digits"] == 4
