"""Seen-set bookkeeping without Spark: only committed attempts are read; re-runs replace their own."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from crawlpairs.udfs.dedup.seen import SeenSet, new_attempt, run_key


def _write(seen: SeenSet, attempt: str, prefixes: list[str]) -> None:
    for p in prefixes:
        d = seen.attempt_dir("uid", attempt) + f"/p={p}"
        pq.write_table(pa.table({"key": [p + "0" * 30]}), _mk(d) + "/part-0.parquet")


def _mk(d: str) -> str:
    import os

    os.makedirs(d, exist_ok=True)
    return d


def test_only_committed_attempts_count(tmp_path):
    seen = SeenSet(str(tmp_path / "seen"))
    k1, k2 = run_key(str(tmp_path / "crawl1")), run_key(str(tmp_path / "crawl2"))
    assert k1 != k2 and run_key(str(tmp_path / "crawl1") + "/") == k1
    a1 = new_attempt(k1)
    _write(seen, a1, ["ab", "cd"])
    assert seen.commits() == []  # written but not committed: invisible (a crash here leaves no trace)
    seen.commit(k1, a1, {"uid": {"prefixes": seen.written_prefixes("uid", a1), "rows": 2}}, {})
    a2 = new_attempt(k2)
    _write(seen, a2, ["ab"])  # crawl 2 crashed before its manifest
    [c] = seen.commits()
    assert c.attempt == a1 and c.prefixes == {"uid": ["ab", "cd"]}
    assert [p.rsplit("/", 1)[1] for p in seen.paths("uid", seen.commits(), {"ab", "ef"})] == ["p=ab"]
    assert seen.commits(exclude_run=k1) == []  # a run never filters against its own output

    # re-run of crawl 1: new attempt, manifest replaced, the old attempt collected
    a1b = new_attempt(k1)
    _write(seen, a1b, ["ab"])
    seen.commit(k1, a1b, {"uid": {"prefixes": ["ab"], "rows": 1}}, {})
    removed = seen.collect_garbage(k1, a1b)
    assert [r.rsplit("/", 1)[1] for r in removed] == [f"a={a1}"]
    assert [c.attempt for c in seen.commits()] == [a1b]
    assert (tmp_path / "seen" / "uid" / f"a={a2}").exists()  # other runs' debris is theirs to clean
