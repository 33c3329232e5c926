"""Takedowns: remove rows by URL, domain or image sha256 from every artefact of a run root.

The job (jobs/takedown.py) only parses flags and rebuilds the kNN index; everything else is
here, Spark-free, file by file through `crawlpairs.storage` (local paths and s3:// alike):
no image bytes are ever shuffled, each file is rewritten by the code that read it.

How it is crash-safe (docs/publish.md, "Takedown"):
  1. a journal `ROOT/takedowns/<id>.json` is written first, status `pending`, with the request;
  2. the matched rows (uid, url) are written to `ROOT/takedowns/<id>.removed.parquet`, so a
     resumed run removes exactly what the first one matched, even from files it already changed;
  3. per artefact, every changed file is first written complete under
     `ROOT/takedowns/<id>.staging/<artefact>/`, the journal then says `staged` with the file list,
     and only then are the staged files renamed over the originals (local: one rename each;
     object stores: copy + delete). A crash before `staged` leaves the artefact as it was (the
     staging is thrown away and redone); a crash after it is rolled forward by the re-run;
  4. the removed items are added to the seen-set as `blocked` keys, then the journal says `done`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import os
import posixpath
import signal
import tarfile
import tempfile
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from crawlpairs import storage
from crawlpairs.config import StorageConfig
from crawlpairs.stats import Stats
from crawlpairs.udfs import wds
from crawlpairs.udfs.dedup import seen as dedup_seen
from crawlpairs.udfs.urls import normalize_url

JOURNALS = "takedowns"
# Artefacts in the order they are changed: what the public sees first, the index after the
# embeddings it is rebuilt from, then what only a re-run of the pipeline would read; the dataset
# card when every stage's stats it quotes have been lowered; the HTML report, which shows sample
# images inline and cannot be filtered, is removed (run `crawlpairs report` again).
ARTEFACTS = ("dataset", "embeddings", "index", "scored", "images", "deduped", "card", "report")
# The score stage's per-shard rows (kept and dropped): a re-run of score reuses them, so they lose
# the rows too. Where they live now, and where older roots kept them.
SCORE_SHARDS = ("scored_meta/shards", "_scored_shards")
CRASH_ENV = "CRAWLPAIRS_TAKEDOWN_CRASH_AT"  # test hook: SIGKILL this process at a named point


# -- the request ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """What was asked: normalised URLs, lower-case punycode domains, lower-case sha256 hex."""

    urls: frozenset[str] = frozenset()
    domains: frozenset[str] = frozenset()
    sha256: frozenset[str] = frozenset()

    def to_dict(self) -> dict[str, list[str]]:
        return {"urls": sorted(self.urls), "domains": sorted(self.domains), "sha256": sorted(self.sha256)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Request:
        return cls(frozenset(d.get("urls", [])), frozenset(d.get("domains", [])), frozenset(d.get("sha256", [])))

    def key(self) -> str:
        """Same request, same key: a re-run finds the journal of the first run."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:12]

    def empty(self) -> bool:
        return not (self.urls or self.domains or self.sha256)


def list_lines(text: str) -> list[str]:
    """One item a line; blank lines and `#` comments skipped (the format of every list file)."""
    return [s.strip() for s in text.splitlines() if s.strip() and not s.strip().startswith("#")]


def parse_urls(lines: Iterable[str]) -> tuple[set[str], list[str]]:
    """(normalised URLs, lines that are not http(s) URLs): the spelling in the list never matters."""
    good, bad = set(), []
    for line in lines:
        u = normalize_url(line)
        (good.add(u) if u else bad.append(line))
    return good, bad


def normalize_domain(line: str) -> str | None:
    """`Example.COM.`, `*.example.com`, `https://example.com/x` -> `example.com` (IDNA punycode)."""
    s = line.strip().lower()
    if "/" in s:
        s = urlsplit(s if "://" in s else "http://" + s).hostname or ""
    s = s.removeprefix("*.").strip(".")
    if not s or " " in s:
        return None
    host = host_of(f"http://{s}/")
    return host or None


def parse_domains(lines: Iterable[str]) -> tuple[set[str], list[str]]:
    good, bad = set(), []
    for line in lines:
        d = normalize_domain(line)
        (good.add(d) if d else bad.append(line))
    return good, bad


def parse_sha256(lines: Iterable[str]) -> tuple[set[str], list[str]]:
    good, bad = set(), []
    for line in lines:
        s = line.strip().lower()
        (good.add(s) if len(s) == 64 and all(c in "0123456789abcdef" for c in s) else bad.append(line))
    return good, bad


# -- matching ------------------------------------------------------------------------------


def host_of(url: str | None) -> str | None:
    """The URL's host as normalize_url writes it (lower-case punycode), or None."""
    if not url:
        return None
    norm = normalize_url(url)
    try:
        return urlsplit(norm or url).hostname
    except ValueError:
        return None


def suffixes(host: str | None) -> list[str]:
    """`a.b.example.com` -> itself, `b.example.com`, `example.com`, `com`: what a listed domain covers."""
    if not host:
        return []
    labels = host.split(".")
    return [".".join(labels[i:]) for i in range(len(labels))]


def url_key(url: str) -> str:
    """The seen-set's url key: 32 hex chars of sha256(url), as dedup computes it in Spark."""
    return hashlib.sha256(url.encode("utf-8")).hexdigest()[:32]


def domain_key(domain: str) -> str:
    """The seen-set key of a blocked domain (tagged, so it never equals a uid or url key)."""
    return hashlib.sha256(("domain\t" + domain).encode("utf-8")).hexdigest()[:32]


def blocked_keys(req: Request, removed: pa.Table) -> pa.Table:
    """Keys that dedup drops as `blocked`: removed uids, asked URLs (+ URLs of matched images), domains."""
    keys: dict[str, str] = {}
    for u in removed.column("uid").to_pylist():
        if u:
            keys[u] = "uid"
    for u in req.urls:
        keys[url_key(u)] = "url"
    if req.sha256:  # the URL that served a taken-down image is blocked with any caption
        for u, why in zip(removed.column("url").to_pylist(), removed.column("why").to_pylist(), strict=True):
            if u and why == "sha256":
                keys[url_key(u)] = "url"
    for d in req.domains:
        keys[domain_key(d)] = "domain"
    items = sorted(keys.items())
    return pa.table({"key": [k for k, _ in items], "what": [w for _, w in items]})


def is_blocked(uid: str | None, url: str | None, page_url: str | None, keys: set[str] | frozenset[str]) -> bool:
    """Whether dedup must drop a row: its uid, url or page url, or a domain above either host, is blocked."""
    if uid and uid in keys:
        return True
    for u in (url, page_url):
        if not u:
            continue
        if url_key(u) in keys:
            return True
        if any(domain_key(s) in keys for s in suffixes(host_of(u))):
            return True
    return False


def blocked_series(keys: Callable[[], frozenset[str]]) -> Callable[[pd.Series, pd.Series, pd.Series], pd.Series]:
    """A pandas UDF body for dedup (uid, url, page_url -> blocked?); `keys` returns the broadcast key set.

    Defined here, where `pd` is a module name, so Spark can read its type hints.
    """

    def blocked(uid: pd.Series, url: pd.Series, page: pd.Series) -> pd.Series:
        k = keys()
        return pd.Series([is_blocked(a, b, c, k) for a, b, c in zip(uid, url, page, strict=True)], dtype=bool)

    return blocked


def _column(table: pa.Table, *names: str) -> list[Any] | None:
    for n in names:
        if n in table.column_names:
            return table.column(n).to_pylist()
    return None


def match_rows(table: pa.Table, req: Request) -> tuple[np.ndarray, list[str | None]]:
    """(mask, why) of rows the request names directly: url or page url, either host, image sha256."""
    n = table.num_rows
    mask = np.zeros(n, dtype=bool)
    why: list[str | None] = [None] * n
    memo: dict[str, tuple[bool, bool]] = {}

    def check(u: str | None) -> tuple[bool, bool]:
        """(url listed, host under a listed domain), once per distinct URL."""
        if not u:
            return False, False
        if u not in memo:
            norm = normalize_url(u)
            memo[u] = ((norm or u) in req.urls,
                       bool(req.domains) and any(s in req.domains for s in suffixes(host_of(u))))
        return memo[u]

    for col in (_column(table, "url", "URL"), _column(table, "page_url")):
        if col is None or not (req.urls or req.domains):
            continue
        for i, u in enumerate(col):
            if why[i] is not None:
                continue
            by_url, by_domain = check(u)
            if by_url or by_domain:
                mask[i], why[i] = True, "url" if by_url else "domain"
    shas = _column(table, "sha256")
    if shas is not None and req.sha256:
        for i, s in enumerate(shas):
            if why[i] is None and s and s.lower() in req.sha256:
                mask[i], why[i] = True, "sha256"
    return mask, why


@dataclass
class Removal:
    """What to remove: the uids matched anywhere in the root, plus anything the request names directly."""

    req: Request
    uids: frozenset[str] = frozenset()
    sample_ids: frozenset[int] = field(default_factory=frozenset)  # LAION's SAMPLE_ID of those uids

    @classmethod
    def of(cls, req: Request, removed: pa.Table) -> Removal:
        uids = frozenset(u for u in removed.column("uid").to_pylist() if u)
        ids = frozenset(_uid_int64(u) for u in uids)
        return cls(req, uids, ids)

    def mask(self, table: pa.Table) -> np.ndarray:
        mask, _ = match_rows(table, self.req)
        uids = _column(table, "uid")
        if uids is not None and self.uids:
            mask |= np.fromiter((u in self.uids for u in uids), bool, len(uids))
        ids = _column(table, "SAMPLE_ID")
        if ids is not None and self.sample_ids:
            mask |= np.fromiter((i in self.sample_ids for i in ids), bool, len(ids))
        return mask


def _uid_int64(uid: str) -> int:
    """publish's SAMPLE_ID: the first 8 bytes of the uid as a signed int64."""
    try:
        return int.from_bytes(bytes.fromhex(uid[:16]), "big", signed=True)
    except ValueError:
        return 0


# -- files of an artefact --------------------------------------------------------------------


def data_files(folder: str, suffix: str, st: StorageConfig | None) -> list[str]:
    """Every `suffix` file below `folder`, skipping `_`/`.` names (bookkeeping, temp files) at any depth."""
    out = []
    base = folder.rstrip("/")
    for uri in storage.find(base, st):
        rel = uri[len(base):].lstrip("/")
        if rel.endswith(suffix) and not any(p.startswith(("_", ".")) for p in rel.split("/")):
            out.append(uri)
    return out


def read_table(uri: str, st: StorageConfig | None) -> pa.Table:
    return read_file(uri, st)[0]


def read_file(uri: str, st: StorageConfig | None) -> tuple[pa.Table, dict[str, Any]]:
    """The table and the writer options that keep its timestamps as its writer stored them.

    Spark writes timestamps as INT96 and cannot read pyarrow's default nanosecond INT64: a
    rewritten Spark file keeps INT96, any other file gets microseconds (what every reader takes).
    """
    with storage.open_uri(uri, "rb", st) as fh:
        f = pq.ParquetFile(fh)
        int96 = any(f.schema.column(i).physical_type == "INT96" for i in range(len(f.schema)))
        table = f.read()
    opts: dict[str, Any] = {"use_deprecated_int96_timestamps": True} if int96 else \
        {"coerce_timestamps": "us", "allow_truncated_timestamps": True}
    return table, opts


def table_bytes(table: pa.Table, **opts: Any) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd", **opts)
    return buf.getvalue()


def matched_in(uri: str, req: Request, st: StorageConfig | None) -> list[tuple[str | None, str | None, str]]:
    """(uid, url, why) of the rows of one Parquet file that the request names."""
    t = read_table(uri, st)
    mask, why = match_rows(t, req)
    if not mask.any():
        return []
    uids = _column(t, "uid") or [None] * t.num_rows
    urls = _column(t, "url", "URL") or [None] * t.num_rows
    return [(uids[i], urls[i], why[i] or "") for i in np.nonzero(mask)[0]]


def find_matches(root: str, req: Request, st: StorageConfig | None) -> pa.Table:
    """Every row of the root's tables that the request names, as (uid, url, why), one row per uid.

    Scanned: deduped/, images/ (the shard Parquet carries sha256), scored/, the score stage's
    per-shard rows, the embeddings metadata and dataset/data and open; a row named in any of
    them is removed everywhere by its uid.
    """
    seen: dict[tuple[str | None, str | None], str] = {}
    folders = [("deduped", ""), ("images", ""), ("scored", ""), *((d, "*") for d in SCORE_SHARDS),
               ("embeddings/metadata", ""), ("dataset/data", ""), ("dataset/open", "")]
    for folder, mode in folders:
        base = storage.join(root, folder)
        files = (storage.glob(storage.join(base, "*.parquet"), st) if mode == "*"
                 else data_files(base, ".parquet", st))
        for uri in files:
            for uid, url, why in matched_in(uri, req, st):
                seen.setdefault((uid, url), why)
    items = sorted(seen.items(), key=lambda kv: (kv[0][0] or "", kv[0][1] or ""))
    return pa.table({"uid": pa.array([k[0] for k, _ in items], pa.string()),
                     "url": pa.array([k[1] for k, _ in items], pa.string()),
                     "why": pa.array([w for _, w in items], pa.string())})


# -- rewriting ---------------------------------------------------------------------------------


def filter_table(table: pa.Table, removal: Removal) -> tuple[pa.Table, int]:
    """The table without the removed rows, and how many went."""
    mask = removal.mask(table)
    n = int(mask.sum())
    return (table.filter(pa.array(~mask)) if n else table), n


def rewrite_tar(src: Any, dst: Any, drop_keys: set[str]) -> int:
    """Stream a webdataset tar into `dst` without the samples whose key is in `drop_keys`; samples dropped."""
    dropped: set[str] = set()
    with tarfile.open(fileobj=src, mode="r|*") as tin, tarfile.open(fileobj=dst, mode="w|") as tout:
        for member in tin:
            key, _ = wds.split_member(member.name)
            if key in drop_keys or posixpath.basename(key) in drop_keys:
                dropped.add(key)
                continue
            data = tin.extractfile(member) if member.isfile() else None
            tout.addfile(member, data)
    return len(dropped)


def renumber(meta: pa.Table) -> pa.Table:
    """emb_row is the row's index in its .npy: after a filter it is 0..n-1 again."""
    if "emb_row" not in meta.column_names:
        return meta
    i = meta.column_names.index("emb_row")
    return meta.set_column(i, "emb_row", pa.array(np.arange(meta.num_rows), meta.schema.field(i).type))


def npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def adjust_stats(doc: dict[str, Any], tid: str, removed: int, counter: str = "rows_out") -> dict[str, Any]:
    """A stage's `_stats.json` after a takedown: `counter` lowered, `dropped.takedown` raised, once per id."""
    extra = doc.setdefault("extra", {})
    done = extra.setdefault("takedowns", [])
    if tid in done:
        return doc
    done.append(tid)
    counts = doc.setdefault("counts", {})
    if counter in counts:
        counts[counter] = max(0, int(counts[counter]) - removed)
    dropped = doc.setdefault("dropped", {})
    dropped["takedown"] = int(dropped.get("takedown", 0)) + removed
    return doc


class Staging:
    """Changed files of one artefact, written complete under the staging folder before any rename."""

    def __init__(self, root: str, tid: str, artefact: str, st: StorageConfig | None) -> None:
        self.base = storage.join(root, JOURNALS, f"{tid}.staging", artefact)
        self.root, self.st = root.rstrip("/"), st
        self.files: list[str] = []  # targets, relative to the root
        self.rows = 0

    def _rel(self, target: str) -> str:
        if not target.startswith(self.root + "/"):
            raise ValueError(f"{target}: not under {self.root}")
        return target[len(self.root) + 1:]

    def put_bytes(self, target: str, data: bytes) -> None:
        rel = self._rel(target)
        storage.write_bytes(storage.join(self.base, rel), data, self.st)
        self.files.append(rel)

    def put_file(self, target: str, local: str) -> None:
        rel = self._rel(target)
        storage.put_file(local, storage.join(self.base, rel), self.st)
        self.files.append(rel)

    def put_table(self, target: str, table: pa.Table, **opts: Any) -> None:
        self.put_bytes(target, table_bytes(table, **opts))


def commit_staged(root: str, tid: str, artefact: str, files: list[str], st: StorageConfig | None) -> None:
    """Rename every staged file over its target; a file no longer staged was renamed by an earlier try."""
    base = storage.join(root, JOURNALS, f"{tid}.staging", artefact)
    for i, rel in enumerate(files):
        src = storage.join(base, rel)
        if storage.exists(src, st):
            storage.move(src, storage.join(root, rel), st)
        crash_point(f"rename:{artefact}:{i}")
    storage.rm(base, st, recursive=True)


def crash_point(name: str) -> None:
    """Test hook: SIGKILL this process when CRAWLPAIRS_TAKEDOWN_CRASH_AT names this point."""
    if os.environ.get(CRASH_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


def stage_parquet_folder(stg: Staging, folder: str, removal: Removal, st: StorageConfig | None,
                         fix: Callable[[pa.Table], pa.Table] | None = None, pattern: str | None = None) -> None:
    """Filter every Parquet file of a folder (any layout: flat, Hive partitions, parts)."""
    files = storage.glob(storage.join(folder, pattern), st) if pattern else data_files(folder, ".parquet", st)
    for uri in files:
        t, opts = read_file(uri, st)
        out, n = filter_table(t, removal)
        fixed = fix(out) if fix else out
        if n or fixed is not out:
            stg.put_table(uri, fixed, **opts)
            stg.rows += n


def stage_stats_file(stg: Staging, uri: str, tid: str, st: StorageConfig | None, counter: str = "rows_out",
                     removed: int | None = None) -> None:
    """The stage's `_stats.json` with the rows it no longer holds (a report's funnel stays true)."""
    n = stg.rows if removed is None else removed
    folder = uri[: -len("/_stats.json")]
    meta = folder.removesuffix("_meta") + "_meta/_stats.json"  # stats kept in <folder>_meta/ or inside it
    for where in dict.fromkeys((uri, meta, folder.removesuffix("_meta") + "/_stats.json")):
        if n and storage.exists(where, st):
            stg.put_bytes(where, json.dumps(adjust_stats(storage.read_json(where, st), tid, n, counter),
                                            indent=2, sort_keys=True, default=str).encode())


def stage_deduped(stg: Staging, root: str, removal: Removal, tid: str, st: StorageConfig | None) -> None:
    folder = storage.join(root, "deduped")
    stage_parquet_folder(stg, folder, removal, st)
    stage_stats_file(stg, storage.join(folder, "_stats.json"), tid, st)


def stage_images(stg: Staging, root: str, removal: Removal, tid: str, st: StorageConfig | None) -> None:
    """Each shard: its Parquet rows, its tar samples and its `_stats.json`, consistent with each other."""
    from crawlpairs.udfs.download.shards import shard_stats

    folder = storage.join(root, "images")
    successes = 0
    for uri in storage.glob(storage.join(folder, "*.parquet"), st):
        t, opts = read_file(uri, st)
        mask = removal.mask(t)
        n = int(mask.sum())
        if not n:
            continue
        keys = {k for k in pa.array(_column(t, "key") or [], pa.string()).filter(pa.array(mask)).to_pylist() if k}
        kept = t.filter(pa.array(~mask))
        stem = uri[: -len(".parquet")]
        tar = stem + ".tar"
        if keys and storage.exists(tar, st):
            with tempfile.TemporaryDirectory(prefix="crawlpairs-takedown-") as tmp:
                local = os.path.join(tmp, "shard.tar")
                with storage.open_uri(tar, "rb", st) as src, open(local, "wb") as dst:
                    rewrite_tar(src, dst, keys)
                stg.put_file(tar, local)
        stg.put_table(uri, kept, **opts)
        stats_uri = stem + "_stats.json"
        if storage.exists(stats_uri, st):
            old = storage.read_json(stats_uri, st)
            doc = shard_stats(kept.to_pylist(), storage.basename(stem), old.get("start_time"))
            for k in ("duration", "start_time", "end_time", "started_at", "ended_at"):
                if k in old:
                    doc[k] = old[k]
            doc["takedown_removed"] = int(old.get("takedown_removed", 0)) + n
            stg.put_bytes(stats_uri, json.dumps(doc, indent=2, sort_keys=True, default=str).encode())
        stg.rows += n
        status = _column(t, "status")
        successes += sum(1 for i in np.nonzero(mask)[0] if status is None or status[i] == "success")
    stage_stats_file(stg, storage.join(root, "images_meta", "_stats.json"), tid, st, removed=successes)


def emb_row_map(root: str, st: StorageConfig | None) -> dict[tuple[str, str], int]:
    """(shard, key) -> emb_row as the embeddings metadata holds it now (after its own takedown)."""
    out: dict[tuple[str, str], int] = {}
    for uri in data_files(storage.join(root, "embeddings", "metadata"), ".parquet", st):
        t = read_table(uri, st)
        if not {"shard", "key", "emb_row"} <= set(t.column_names):
            continue
        for s, k, e in zip(*(t.column(c).to_pylist() for c in ("shard", "key", "emb_row")), strict=True):
            out[(s, k)] = e
    return out


def realign(mapping: dict[tuple[str, str], int]) -> Callable[[pa.Table], pa.Table]:
    """Scored rows point at their embedding by (shard, emb_row): follow the renumbered metadata."""

    def fix(t: pa.Table) -> pa.Table:
        if not mapping or not {"shard", "key", "emb_row"} <= set(t.column_names):
            return t
        old = t.column("emb_row").to_pylist()
        new = [mapping.get((s, k), e) if e is not None else None
               for s, k, e in zip(t.column("shard").to_pylist(), t.column("key").to_pylist(), old, strict=True)]
        if new == old:
            return t
        i = t.column_names.index("emb_row")
        return t.set_column(i, "emb_row", pa.array(new, t.schema.field(i).type))

    return fix


def stage_scored(stg: Staging, root: str, removal: Removal, tid: str, st: StorageConfig | None) -> None:
    """scored/ and the score stage's per-shard rows (a re-run of score reuses those: they must not resurrect)."""
    fix = realign(emb_row_map(root, st))
    stage_parquet_folder(stg, storage.join(root, "scored"), removal, st, fix)
    scored_rows = stg.rows
    for folder in SCORE_SHARDS:
        stage_parquet_folder(stg, storage.join(root, folder), removal, st, fix, pattern="*.parquet")
    stg.rows = scored_rows  # rows removed counts scored/'s rows; the per-shard rows mirror them
    stage_stats_file(stg, storage.join(root, "scored", "_stats.json"), tid, st)


def stage_embeddings(stg: Staging, root: str, removal: Removal, tid: str, st: StorageConfig | None) -> None:
    """Each part's metadata and every .npy beside it lose the same rows, so row i stays row i."""
    base = storage.join(root, "embeddings")
    for uri in data_files(storage.join(base, "metadata"), ".parquet", st):
        name = storage.basename(uri)
        if not name.startswith("metadata_"):
            continue
        sid = name[len("metadata_"): -len(".parquet")]
        t, opts = read_file(uri, st)
        mask = removal.mask(t)
        n = int(mask.sum())
        if not n:
            continue
        keep = ~mask
        for kind in sorted({storage.basename(u) for u in storage.ls(base, st)} - {"metadata"}):
            npy = storage.join(base, kind, f"{kind}_{sid}.npy")
            if not storage.exists(npy, st):
                continue
            arr = np.load(io.BytesIO(storage.read_bytes(npy, st)))
            if len(arr) != t.num_rows:
                raise ValueError(f"{npy}: {len(arr)} rows, its metadata {t.num_rows}: not aligned, left as is")
            stg.put_bytes(npy, npy_bytes(arr[keep]))
        stg.put_table(uri, renumber(t.filter(pa.array(keep))), **opts)
        stg.rows += n


def stage_dataset(stg: Staging, root: str, removal: Removal, tid: str, st: StorageConfig | None) -> None:
    base = storage.join(root, "dataset")
    for folder in ("data", "laion", "open"):
        before = stg.rows
        stage_parquet_folder(stg, storage.join(base, folder), removal, st)
        if folder != "data":
            stg.rows = before  # rows removed counts published rows once (data/); laion/open mirror it
    stage_stats_file(stg, storage.join(root, "dataset_meta", "_stats.json"), tid, st, counter="rows_data")


STAGERS: dict[str, Callable[[Staging, str, Removal, str, StorageConfig | None], None]] = {
    "dataset": stage_dataset, "embeddings": stage_embeddings, "scored": stage_scored,
    "images": stage_images, "deduped": stage_deduped,
}


# -- the journal -----------------------------------------------------------------------------


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


def absolute(root: str) -> str:
    """Listings return absolute local paths: the root must be spelled the same way to cut them."""
    return root.rstrip("/") if storage.is_remote(root) else os.path.abspath(root)


def journal_uri(root: str, tid: str) -> str:
    return storage.join(root, JOURNALS, f"{tid}.json")


def removed_uri(root: str, tid: str) -> str:
    return storage.join(root, JOURNALS, f"{tid}.removed.parquet")


def journals(root: str, st: StorageConfig | None) -> list[dict[str, Any]]:
    """Every takedown recorded under the root, oldest first."""
    out = []
    for uri in storage.glob(storage.join(root, JOURNALS, "*.json"), st):
        if storage.basename(uri).startswith("_"):
            continue
        out.append(storage.read_json(uri, st))
    return sorted(out, key=lambda d: (d.get("created_at", ""), d.get("id", "")))


def new_journal(req: Request) -> dict[str, Any]:
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
    return {"id": f"{stamp}-{req.key()}-{uuid.uuid4().hex[:4]}", "request_key": req.key(), "request": req.to_dict(),
            "created_at": now(), "status": "pending", "artefacts": {}, "rows_removed": {}, "files_changed": {}}


def save(root: str, doc: dict[str, Any], st: StorageConfig | None) -> None:
    doc["updated_at"] = now()
    storage.write_json(journal_uri(root, doc["id"]), doc, st)


def present(root: str, st: StorageConfig | None) -> list[str]:
    """The artefacts this root holds (a takedown touches what exists, nothing else)."""
    checks = {"dataset": "dataset", "embeddings": "embeddings/metadata", "index": "index", "scored": "scored",
              "images": "images", "deduped": "deduped", "card": "dataset/README.md", "report": "report"}
    return [a for a in ARTEFACTS if storage.exists(storage.join(root, checks[a]), st)]


def write_blocked(seen_root: str, doc: dict[str, Any], keys: pa.Table, st: StorageConfig | None) -> int:
    """Add the blocked keys to the seen-set as one committed attempt of run key `takedown-<id>`."""
    seen = dedup_seen.SeenSet(seen_root, st)
    run = f"takedown-{doc['id']}"
    attempt = dedup_seen.new_attempt(run)
    prefixes = []
    if keys.num_rows:
        first = pc.utf8_slice_codeunits(keys.column("key"), 0, 1)
        for p in sorted(set(first.to_pylist())):
            part = keys.filter(pc.equal(first, p))
            storage.write_bytes(storage.join(seen.attempt_dir("blocked", attempt), f"p={p}", "part-00000.parquet"),
                                table_bytes(part), st)
            prefixes.append(p)
    seen.commit(run, attempt, {"blocked": {"prefixes": prefixes, "rows": keys.num_rows}},
                {"output": doc.get("root"), "takedown": doc["id"], "prefix_chars": 1})
    seen.collect_garbage(run, attempt)
    return keys.num_rows


Card = Callable[[str], bytes | None]  # root -> the dataset card made again from what dataset/ holds now


def run(root: str, req: Request | None, seen_root: str, st: StorageConfig | None, stats: Stats,
        rebuild_index: Callable[[], None], card: Card | None = None) -> list[dict[str, Any]]:
    """Finish every pending takedown of the root, then carry out `req`; the journals of this call.

    A request that a finished journal already carried out, and that matches nothing more now,
    is not recorded again (a re-run is a no-op and says so in the returned journal's `noop`).
    """
    root = absolute(root)
    done: list[dict[str, Any]] = []
    for doc in journals(root, st):
        if doc.get("status") != "done":
            done.append(carry_out(root, doc, seen_root, st, stats, rebuild_index, card))
    if req is None:
        return done
    earlier = [d for d in journals(root, st) if d.get("request_key") == req.key() and d.get("status") == "done"]
    doc = new_journal(req)
    doc["root"] = root
    if earlier and find_matches(root, req, st).num_rows == 0:
        stats.incr("noop")
        return [*done, {**earlier[-1], "noop": True}]
    save(root, doc, st)
    done.append(carry_out(root, doc, seen_root, st, stats, rebuild_index, card))
    return done


def carry_out(root: str, doc: dict[str, Any], seen_root: str, st: StorageConfig | None, stats: Stats,
              rebuild_index: Callable[[], None], card: Card | None = None) -> dict[str, Any]:
    """Do (or finish) one journalled takedown, artefact by artefact."""
    tid, req = doc["id"], Request.from_dict(doc["request"])
    if not storage.exists(removed_uri(root, tid), st) or doc.get("status") == "pending":
        matches = find_matches(root, req, st)
        storage.write_bytes(removed_uri(root, tid), table_bytes(matches), st)
        doc["status"], doc["matched"] = "matched", matches.num_rows
        doc["artefacts"] = {a: "todo" for a in present(root, st)}
        save(root, doc, st)
        crash_point("matched")
    removed = read_table(removed_uri(root, tid), st)
    removal = Removal.of(req, removed)
    for artefact in [a for a in ARTEFACTS if a in doc["artefacts"]]:  # the journal's keys come back sorted
        state = doc["artefacts"][artefact]
        if state == "done":
            continue
        if artefact == "report":
            if any(doc["rows_removed"].values()):
                storage.rm(storage.join(root, "report"), st, recursive=True)
                doc["files_changed"]["report"] = ["report/ (removed: it showed the rows; run crawlpairs report again)"]
        elif artefact == "index":
            if doc["rows_removed"].get("embeddings", 0) or state == "rebuilding":
                doc["artefacts"]["index"] = "rebuilding"
                save(root, doc, st)
                crash_point("index")
                rebuild_index()
                doc["files_changed"]["index"] = ["index/ (rebuilt)"]
            doc["rows_removed"]["index"] = doc["rows_removed"].get("embeddings", 0)
        else:
            if state != "staged":
                storage.rm(storage.join(root, JOURNALS, f"{tid}.staging", artefact), st, recursive=True)
                stg = Staging(root, tid, artefact, st)
                if artefact == "card":
                    text = card(root) if card and doc["rows_removed"].get("dataset", 0) else None
                    if text is not None:
                        stg.put_bytes(storage.join(root, "dataset", "README.md"), text)
                else:
                    STAGERS[artefact](stg, root, removal, tid, st)
                doc["artefacts"][artefact] = "staged"
                doc["rows_removed"][artefact] = stg.rows
                doc["files_changed"][artefact] = stg.files
                save(root, doc, st)
                crash_point(f"staged:{artefact}")
            commit_staged(root, tid, artefact, doc["files_changed"][artefact], st)
        doc["artefacts"][artefact] = "done"
        save(root, doc, st)
        stats.incr(f"rows_removed_{artefact}", int(doc["rows_removed"].get(artefact, 0)))
    if doc["status"] != "blocked":  # blocked already: a crash came between that and done
        keys = blocked_keys(req, removed)
        doc["seen"] = {"root": seen_root, "keys": write_blocked(seen_root, doc, keys, st)}
        doc["status"] = "blocked"
        save(root, doc, st)
    storage.rm(storage.join(root, JOURNALS, f"{tid}.staging"), st, recursive=True)
    doc["status"], doc["finished_at"] = "done", now()
    save(root, doc, st)
    return doc
