"""The download planner: which task fetches which row, in what order, into which shard.

Pure Python over Arrow batches and plain dicts (no Spark); the job wires it up.

Why a plan: a host may be fetched at `per_host_rps` at most, so a host with many rows
bounds the whole job (rows / rate); the plan prints and records that bound, and the
hosts that set it, before the first request. It also decides, once and for all:
  - tasks: `tasks` fetch tasks run side by side; a host's rows go to one task (chosen by
    a hash of the host), except "big" hosts (more rows than half a task's fair share),
    whose rows are spread over several tasks (the least loaded ones), each task getting
    `1/K` of the host's rate budget (`rate_shares`), so the global per-host rate still
    holds (the shares of a host sum to 1) and no task holds a host alone;
  - order inside a task: every row gets an expected start time, `rank / rate` (its rank
    among the task's rows of the same host, over the rate that task may use for that
    host), and a task fetches its rows in that order; hosts are therefore interleaved,
    and rows that are expected early (small hosts) come first;
  - shards: a task cuts its ordered rows into shards of `shard_size` consecutive rows and
    commits each shard as soon as all its rows have an outcome, so small hosts' shards
    commit early and a big host's rows follow at its pace.
Every step is a function of the input rows and the recorded plan only (uid hashes, host
keys, the plan's numbers), never of timing, so a re-run puts every row in the same
shard under the same key: that is what makes "skip committed shards" a correct resume.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pyarrow as pa

from crawlpairs.udfs.download.fetch import host_key
from crawlpairs.udfs.urls import normalize_url

PLAN_VERSION = 2
TAG_FIELDS = [pa.field("_host", pa.string()), pa.field("_h", pa.int64())]
RESIDUES = 64  # a split host's pieces are unions of uid-hash residues mod 64 (K divides 64)
SUMMARY_SCHEMA = pa.schema([("kind", pa.string()), ("host", pa.string()), ("rows", pa.int64()),
                            ("x", pa.int64()), ("task", pa.int64()), ("res", pa.list_(pa.int64()))])
ASSIGN_FIELDS = [pa.field("_task", pa.int32()), pa.field("_tkey", pa.int64()), pa.field("_rate", pa.float64())]
TOP_BOUND_HOSTS = 10  # hosts named as bounding the job in the plan


def checked_url(url: Any, max_length: int) -> str | None:
    """The WHATWG-normalised http(s) URL, or None (bad_url): never raises, whatever the row holds."""
    if not isinstance(url, str) or not url or len(url) > max_length:
        return None
    try:
        return normalize_url(url)
    except Exception:  # noqa: BLE001 - a strange row is a bad_url, never a failed task
        return None


def url_host(url: Any, max_length: int) -> str:
    """The politeness key (`host:port`) of a row's URL; "" when the URL is not fetchable."""
    norm = checked_url(url, max_length)
    if norm is None:
        return ""
    try:
        return host_key(norm)
    except Exception:  # noqa: BLE001
        return ""


def uid_hash(uid: Any) -> int:
    """A signed 64-bit hash of the uid, stable across processes and machines (not Python's hash)."""
    d = hashlib.blake2b(str(uid).encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(d, "big", signed=True)


def _stable(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "big")


def small_task(host: str, tasks: int) -> int:
    """The task of a host that is not split: a stable hash of the host key."""
    return _stable(host) % max(1, tasks)


def tag_batches(batches: Iterable[pa.RecordBatch], max_url_length: int) -> Iterator[pa.RecordBatch]:
    """Add `_host` and `_h` (uid hash) to every row; runs on executors, cannot throw on data."""
    for b in batches:
        urls = b.column("url").to_pylist()
        uids = b.column("uid").to_pylist()
        hosts = pa.array([url_host(u, max_url_length) for u in urls], pa.string())
        hashes = pa.array([uid_hash(u) for u in uids], pa.int64())
        yield pa.RecordBatch.from_arrays([*b.columns, hosts, hashes],
                                         schema=b.schema.append(TAG_FIELDS[0]).append(TAG_FIELDS[1]))


def summarize_hosts(batches: Iterable[pa.RecordBatch], tasks: int, rate_of: Callable[[str], float],
                    top: int) -> Iterator[pa.RecordBatch]:
    """Rows of (`_host`, `_h`), all rows of a host in one partition -> a small summary of it.

    Emits: one `total` row (rows, xor of uid hashes, hosts in `task`), per-task `load` rows
    (rows per hash task, big hosts included: the driver subtracts them), and `host` rows
    for the `top` hosts by rows and by rows / rate, with their rows per residue of the uid
    hash mod RESIDUES (so the driver knows the exact size of every piece of a split host).
    """
    counts: dict[str, list[int]] = {}
    total = x = 0
    for b in batches:
        for h, hx in zip(b.column("_host").to_pylist(), b.column("_h").to_pylist(), strict=True):
            res = counts.get(h)
            if res is None:
                res = counts[h] = [0] * RESIDUES
            res[hx & (RESIDUES - 1)] += 1
            total += 1
            x ^= hx
    load = [0] * tasks
    rows_of = {h: sum(r) for h, r in counts.items()}
    for h, n in rows_of.items():
        load[small_task(h, tasks)] += n
    by_rows = sorted(rows_of, key=lambda h: (-rows_of[h], h))[:top]
    by_time = sorted(rows_of, key=lambda h: (-_seconds(rows_of[h], rate_of(h)), h))[:TOP_BOUND_HOSTS]
    out = [{"kind": "total", "host": None, "rows": total, "x": x, "task": len(counts), "res": None}]
    out += [{"kind": "load", "host": None, "rows": n, "x": 0, "task": t, "res": None} for t, n in enumerate(load) if n]
    out += [{"kind": "host", "host": h, "rows": rows_of[h], "x": 0, "task": -1, "res": counts[h]}
            for h in sorted(set(by_rows) | set(by_time))]
    yield pa.RecordBatch.from_pylist(out, schema=SUMMARY_SCHEMA)


def _seconds(rows: int, rps: float) -> float:
    return rows / rps if rps > 0 else 0.0


def make_plan(summary: list[dict[str, Any]], tasks: int, rate_of: Callable[[str], float],
              max_split: int = RESIDUES) -> dict[str, Any]:
    """The task layout from the merged partition summaries (driver side, pure).

    A host with more rows than half a task's fair share is split into K pieces (a power
    of two, at most `tasks`, RESIDUES and `max_split`) by uid hash; each piece goes to one of
    the K least loaded tasks and gets 1/K of the host's rate and of its concurrency. The job
    passes `per_host_concurrency` as `max_split`, so each piece keeps at least one request in
    flight and the K pieces together never exceed the host's limit. Row counts per task are exact.
    """
    rows = xor = n_hosts = 0
    load = [0] * tasks
    hosts: dict[str, list[int]] = {}
    for r in summary:
        if r["kind"] == "total":
            rows += r["rows"]
            xor ^= r["x"]
            n_hosts += r["task"]
        elif r["kind"] == "load":
            load[r["task"]] += r["rows"]
        else:
            hosts[r["host"]] = list(r["res"])
    piece = max(1, math.ceil(rows / tasks) // 2)
    big: dict[str, dict[str, Any]] = {}
    for h, res in sorted(hosts.items(), key=lambda kv: (-sum(kv[1]), kv[0])):
        n = sum(res)
        if not h or n <= piece or tasks < 2:
            continue
        most = min(tasks, RESIDUES, max(1, max_split))
        k = 1
        while k * 2 <= most and math.ceil(n / k) > piece:
            k *= 2
        if k < 2:
            continue
        load[small_task(h, tasks)] -= n
        pieces = [sum(res[j::k]) for j in range(k)]
        chosen = sorted(range(tasks), key=lambda t: (load[t], t))[:k]
        for t, p in zip(chosen, pieces, strict=True):
            load[t] += p
        big[h] = {"rows": n, "k": k, "tasks": chosen, "share": 1.0 / k, "rps": rate_of(h)}
    bound = sorted(((_seconds(sum(res), rate_of(h)), h, sum(res)) for h, res in hosts.items() if h),
                   key=lambda b: (-b[0], b[1]))[:TOP_BOUND_HOSTS]
    return {
        "version": PLAN_VERSION,
        "input": {"rows": rows, "uid_xor": xor, "hosts": n_hosts},
        "tasks": tasks,
        "big_hosts": big,
        "bound_seconds": round(bound[0][0], 3) if bound else 0.0,
        "bounding_hosts": [{"host": h, "rows": n, "rps": rate_of(h), "seconds": round(sec, 3)}
                           for sec, h, n in bound],
        "task_rows": load,
    }


def rate_shares(plan: dict[str, Any]) -> dict[str, float]:
    """host -> the fraction of its rate one task may use (hosts not listed: all of it)."""
    return {h: float(info["share"]) for h, info in plan["big_hosts"].items()}


def assign_batches(batches: Iterable[pa.RecordBatch], plan: dict[str, Any],
                   nominal_rps: float) -> Iterator[pa.RecordBatch]:
    """Add `_task` (index), `_tkey` (its partition key) and `_rate` (the rate the task plans with).

    A big host's row goes to piece `_h mod K` of the host's task list; any other row to the
    host's hash task (bad URLs, host "", spread by uid hash). `_rate` orders rows inside a task:
    the host's planned rps times the task's share, or `nominal_rps` for unlimited hosts.
    """
    tasks, keys, big = plan["tasks"], plan["task_keys"], plan["big_hosts"]
    default = float(plan["order_rps"])
    for b in batches:
        hs, hh = b.column("_host").to_pylist(), b.column("_h").to_pylist()
        ts, rates = [], []
        for h, x in zip(hs, hh, strict=True):
            info = big.get(h) if h else None
            if info is not None:
                t = info["tasks"][x & (info["k"] - 1)]
                r = float(info["rps"]) * float(info["share"])
            else:
                t = small_task(h, tasks)  # bad URLs (host "") all go to one task: they cost no request
                r = default
            ts.append(t)
            rates.append(r if r > 0 else nominal_rps)
        schema = b.schema
        for f in ASSIGN_FIELDS:
            schema = schema.append(f)
        yield pa.RecordBatch.from_arrays(
            [*b.columns, pa.array(ts, pa.int32()), pa.array([keys[t] for t in ts], pa.int64()),
             pa.array(rates, pa.float64())], schema=schema)


def _rotl32(x: int, r: int) -> int:
    return ((x << r) | (x >> (32 - r))) & 0xFFFFFFFF


def _mix(h1: int, k1: int) -> int:
    k1 = (k1 * 0xCC9E2D51) & 0xFFFFFFFF
    k1 = (_rotl32(k1, 15) * 0x1B873593) & 0xFFFFFFFF
    h1 = _rotl32(h1 ^ k1, 13)
    return (h1 * 5 + 0xE6546B64) & 0xFFFFFFFF


def spark_hash_long(v: int, seed: int = 42) -> int:
    """Spark's `hash(bigint)` (Murmur3_x86_32.hashLong), which its hash partitioning uses."""
    u = v & 0xFFFFFFFFFFFFFFFF
    h = _mix(_mix(seed, u & 0xFFFFFFFF), u >> 32) ^ 8
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & 0xFFFFFFFF
    h ^= h >> 16
    return h - (1 << 32) if h >= 1 << 31 else h


def partition_keys(tasks: int) -> list[int]:
    """One bigint per task whose Spark hash partition (`repartition(tasks, col)`) is that task's index."""
    keys: dict[int, int] = {}
    v = 0
    while len(keys) < tasks:
        keys.setdefault(spark_hash_long(v) % tasks, v)
        v += 1
    return [keys[t] for t in range(tasks)]


def shard_layout(task_rows: list[int], shard_size: int) -> dict[str, Any]:
    """Global shard numbering: task t owns shards first[t] .. first[t] + ceil(rows_t / size) - 1."""
    first, n = [], 0
    for r in task_rows:
        first.append(n)
        n += math.ceil(r / shard_size) if r else 0
    return {"task_first_shard": first, "shards": n,
            "shard_digits": max(5, len(str(max(0, n - 1)))), "index_digits": max(4, len(str(shard_size - 1)))}


def describe(plan: dict[str, Any]) -> str:
    """The lines printed before the first request."""
    inp = plan["input"]
    lines = [f"download plan: {inp['rows']} rows over {inp['hosts']} hosts, {plan['tasks']} tasks, "
             f"{plan.get('shards', '?')} shards; politeness bound {plan['bound_seconds']:.1f} s"]
    for b in [b for b in plan["bounding_hosts"] if b["rps"] > 0][:3]:
        lines.append(f"  bounded by {b['host']}: {b['rows']} rows at {b['rps']} req/s = {b['seconds']:.1f} s")
    for h, info in list(plan["big_hosts"].items())[:5]:
        lines.append(f"  {h}: {info['rows']} rows split over {info['k']} tasks, {info['share']:.3f} of its rate each")
    return "\n".join(lines)
