"""Bookkeeping of the persistent seen-set: which data is committed, where it lives.

The seen-set is a Parquet dataset of keys (32 hex chars: the row `uid`, or the first
32 hex chars of sha256(url)) that earlier runs published. Layout under its root:

    <kind>/a=<attempt>/p=<prefix>/part-*.parquet   kind: uid | url | blocked; column `key`
    _commits/<run_key>.json                        one manifest per run: the attempt
                                                   it committed, its prefixes, counts

A run writes its keys under a fresh attempt id, then writes its manifest last
(one atomic PUT / rename). Readers only read attempts named by a manifest, so a
run that dies before its manifest leaves nothing that anyone trusts, and a re-run
with the same run key (same --output) replaces its own earlier manifest. A run's
key is derived from its output URI: a run never filters against its own earlier
contribution, which is what makes a re-run rewrite the same output.

`blocked` keys are written by takedowns (udfs/publish/takedown.py, one run key per takedown):
uids, url keys and tagged domain keys that dedup drops whatever run it is (`blocked`).

Spark-free: only paths and small JSON documents, so it is unit-tested without a JVM.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import uuid
from dataclasses import dataclass
from typing import Any

from crawlpairs import storage
from crawlpairs.config import StorageConfig

KINDS = ("uid", "url", "blocked")


def run_key(output: str) -> str:
    """Stable id of "the run that publishes into this output" (absolute local path or URI)."""
    norm = output if storage.is_remote(output) else os.path.abspath(output)
    return hashlib.sha1(norm.rstrip("/").encode()).hexdigest()[:16]


def new_attempt(key: str) -> str:
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
    return f"{key}-{stamp}-{uuid.uuid4().hex[:8]}"


@dataclass
class Commit:
    run_key: str
    attempt: str
    prefixes: dict[str, list[str]]  # kind -> prefixes written
    doc: dict[str, Any]


class SeenSet:
    def __init__(self, root: str, st: StorageConfig | None = None):
        self.root = root.rstrip("/")
        self.st = st

    def kind_root(self, kind: str) -> str:
        return storage.join(self.root, kind)

    def attempt_dir(self, kind: str, attempt: str) -> str:
        return storage.join(self.root, kind, f"a={attempt}")

    def manifest_uri(self, key: str) -> str:
        return storage.join(self.root, "_commits", f"{key}.json")

    def commits(self, exclude_run: str | None = None) -> list[Commit]:
        """Committed runs (every manifest), optionally without one run's own."""
        out = []
        for uri in storage.glob(storage.join(self.root, "_commits", "*.json"), self.st):
            doc = storage.read_json(uri, self.st)
            if doc.get("run_key") == exclude_run:
                continue
            out.append(Commit(doc["run_key"], doc["attempt"],
                              {k: list(v.get("prefixes", [])) for k, v in doc.get("kinds", {}).items()}, doc))
        return sorted(out, key=lambda c: c.run_key)

    def paths(self, kind: str, commits: list[Commit], prefixes: set[str] | None) -> list[str]:
        """Partition folders to read: committed attempts x the prefixes the caller needs."""
        out = []
        for c in commits:
            for p in c.prefixes.get(kind, []):
                if prefixes is None or p in prefixes:
                    out.append(storage.join(self.attempt_dir(kind, c.attempt), f"p={p}"))
        return out

    def blocked_keys(self) -> set[str]:
        """Every committed `blocked` key (takedowns): small, read whole on the driver."""
        import pyarrow.parquet as pq

        keys: set[str] = set()
        for c in self.commits():
            for folder in self.paths("blocked", [c], None):
                for uri in storage.glob(storage.join(folder, "*.parquet"), self.st):
                    with storage.open_uri(uri, "rb", self.st) as fh:
                        keys.update(k for k in pq.read_table(fh, columns=["key"]).column("key").to_pylist() if k)
        return keys

    def written_prefixes(self, kind: str, attempt: str) -> list[str]:
        """Prefix folders an attempt's Spark write produced (listed, not guessed)."""
        names = [storage.basename(u) for u in storage.ls(self.attempt_dir(kind, attempt), self.st)]
        return sorted(n[2:] for n in names if n.startswith("p="))

    def commit(self, key: str, attempt: str, kinds: dict[str, dict[str, Any]], extra: dict[str, Any]) -> None:
        """Make an attempt visible: one atomic write of the manifest, written last."""
        doc = {"run_key": key, "attempt": attempt, "kinds": kinds,
               "committed_at": dt.datetime.now(dt.UTC).isoformat(), **extra}
        storage.write_json(self.manifest_uri(key), doc, self.st)

    def collect_garbage(self, key: str, keep_attempt: str | None) -> list[str]:
        """Remove this run key's attempts other than the committed one (crashed or replaced)."""
        removed = []
        for kind in KINDS:
            for uri in storage.glob(storage.join(self.kind_root(kind), f"a={key}-*"), self.st):
                if keep_attempt and storage.basename(uri) == f"a={keep_attempt}":
                    continue
                storage.rm(uri, self.st)
                removed.append(uri)
        return removed
