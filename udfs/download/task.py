"""One download task: fetch its rows, write and commit its shards (Arrow/pandas, no Spark).

`download_shards` is what the job hands to `mapInArrow`: it streams the task's rows (in
plan order) into a FetchPool (network in a background thread) and, in `decode_threads`
threads (Pillow releases the GIL), vets and transforms each body as it arrives: image
hash blocklist first (a listed image is dropped before it is decoded or stored), then
dl_images.process. Finished rows collect in their shard, and a shard is written and
committed as soon as all its rows are in (dl_shards); only a small row per shard leaves
the task. `fetch_records` is the engine underneath; `download_frames` is the same engine
without shards (fetcher tests, the benchmark).
"""

from __future__ import annotations

import contextlib
import queue
import resource
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import pyarrow as pa

from crawlpairs import storage
from crawlpairs.config import DownloadConfig, StorageConfig
from crawlpairs.udfs.download.board import BoardClient
from crawlpairs.udfs.download.fetch import BLOCKED, ERROR, SUCCESS, Fetched, FetchPool, is_transient
from crawlpairs.udfs.download.images import ImageReject, process
from crawlpairs.udfs.download.optout import DoNotTrain, HashList, list_entries
from crawlpairs.udfs.download.plan import checked_url
from crawlpairs.udfs.download.shards import BAD_URL, Spool, read_tar_images, shard_name, write_shard

# Columns the stage adds to every input row (the input's own columns pass through).
RESULT_SCHEMA = pa.schema([
    ("status", pa.string()),
    ("error_message", pa.string()),
    ("width", pa.int32()),
    ("height", pa.int32()),
    ("original_width", pa.int32()),
    ("original_height", pa.int32()),
    ("sha256", pa.string()),
    ("phash", pa.string()),
    ("http_status", pa.int32()),
    ("final_url", pa.string()),
    ("politeness", pa.string()),  # what set the host's request rate (dl_rates: rule, crawl-delay, back-off)
    ("image", pa.binary()),
])
RESULT_COLUMNS = [f.name for f in RESULT_SCHEMA]


_LISTS: dict[tuple[str, str | None], Any] = {}
_LISTS_LOCK = threading.Lock()


def _lines(uri: str | None, st: StorageConfig | None) -> list[str]:
    if not uri:
        return []
    return list_entries(storage.read_bytes(uri, st).decode("utf-8", "replace").splitlines())


def load_lists(cfg: DownloadConfig, st: StorageConfig | None = None) -> tuple[HashList, DoNotTrain, HashList]:
    """URL blocklist, Do-Not-Train list, image hash blocklist; loaded once per executor process."""
    with _LISTS_LOCK:
        out = []
        for kind, uri in (("url", cfg.url_blocklist), ("dnt", cfg.do_not_train), ("img", cfg.hash_blocklist)):
            key = (kind, uri)
            if key not in _LISTS:
                lines = _lines(uri, st)
                _LISTS[key] = DoNotTrain(lines) if kind == "dnt" else HashList(lines)
            out.append(_LISTS[key])
        return out[0], out[1], out[2]


def _result(status: str, message: str | None = None, **kw: Any) -> dict[str, Any]:
    r: dict[str, Any] = dict.fromkeys(RESULT_COLUMNS)
    r.update(status=status, error_message=message, **kw)
    return r


def download_frames(batches: Iterator[pd.DataFrame], cfg: DownloadConfig, st: StorageConfig | None = None,
                    out_rows: int = 256, base_resolver: Any = None) -> Iterator[pd.DataFrame]:
    """Fetch and process the `url` of every row; yield the rows with RESULT_COLUMNS added.

    The engine without shards (tests of the fetcher, the benchmark's engine arm); the job
    uses `download_shards`, which writes and commits shards as they fill.
    """
    def records() -> Iterator[dict[str, Any]]:
        for df in batches:
            yield from df.to_dict("records")

    done: list[dict[str, Any]] = []
    for rec in fetch_records(records(), cfg, st, base_resolver=base_resolver):
        done.append(rec)
        if len(done) >= out_rows:
            yield _frame(done)
            done = []
    if done:
        yield _frame(done)


def bad_url_result(rec: dict[str, Any], url: Any, max_length: int) -> dict[str, Any]:
    """The outcome of a row whose URL cannot be fetched at all (never reaches the fetcher)."""
    why = "over --max-url-length" if isinstance(url, str) and len(url) > max_length else "not an absolute http(s) URL"
    rec.update(_result(BAD_URL, f"bad_url: {why}: {str(url)[:200]!r}"))
    return rec


def fetch_records(records: Iterator[dict[str, Any]], cfg: DownloadConfig, st: StorageConfig | None = None,
                  base_resolver: Any = None, rate_shares: dict[str, float] | None = None,
                  on_input: Callable[[dict[str, Any]], bool] | None = None,
                  may_read: Callable[[], bool] | None = None,
                  board: dict[str, str] | None = None) -> Iterator[dict[str, Any]]:
    """Each input record back with RESULT_COLUMNS set, in order of completion.

    URLs are checked here, in Python (WHATWG parse, length): a bad one is a `bad_url` row,
    never an exception. `on_input(rec)` sees every record as it is read (the shard writer
    counts rows per shard) and may return False to skip it. At most `max_pending` URLs are
    queued ahead and `4 * decode_threads` bodies wait for decoding, and while `may_read()` is
    False no further record is read (the shard writer holds reading until a shard commits):
    memory stays bounded. `board`: the driver's back-off board (`Board.spec()`), which this
    task's cuts of split hosts go to and their shared ceilings come from.
    """
    url_bl, dnt, img_bl = load_lists(cfg, st)
    threads = max(1, cfg.decode_threads)
    max_pending = max(cfg.max_pending, cfg.in_flight_per_task * 2)
    rows: dict[int, dict[str, Any]] = {}
    client = BoardClient(board) if board and rate_shares and cfg.adaptive_backoff and cfg.share_backoff else None
    with client if client is not None else contextlib.nullcontext(), \
            FetchPool(cfg, url_bl, dnt, base_resolver, rate_shares=rate_shares, board=client) as pool, \
            ThreadPoolExecutor(threads, thread_name_prefix="crawlpairs-decode") as ex:
        decoding: deque[Future[dict[str, Any]]] = deque()

        def take(block: bool) -> Iterator[dict[str, Any]]:
            """Hand finished fetches to the decoders; yield decoded rows (in order, bounded queue)."""
            while pool.pending and (block and pool.pending >= max_pending or not pool.results.empty()):
                i, f = pool.get()
                decoding.append(ex.submit(_finish, rows.pop(i), f, img_bl, cfg))
            while decoding and (decoding[0].done() or len(decoding) > 4 * threads):
                yield decoding.popleft().result()

        feed = _prefetch(records)
        n = -1
        while True:
            try:
                kind, rec = feed.get(timeout=_IDLE_S)
            except queue.Empty:  # the input is late (its end, from the JVM): keep finished rows moving
                yield from take(block=False)
                continue
            if kind == "end":
                break
            if kind == "error":
                raise rec
            n += 1
            if on_input is None or on_input(rec):
                url = rec.get("url")
                norm = checked_url(url, cfg.max_url_length)
                if norm is None:
                    yield bad_url_result(rec, url, cfg.max_url_length)
                else:
                    rows[n] = rec
                    pool.submit(n, norm)
                    yield from take(block=True)
            while may_read is not None and not may_read() and (pool.pending or decoding):
                if decoding and (decoding[0].done() or not pool.pending):
                    yield decoding.popleft().result()
                else:
                    i, f = pool.get()
                    decoding.append(ex.submit(_finish, rows.pop(i), f, img_bl, cfg))
        while pool.pending:
            # a decoded row is handed on within _IDLE_S, not when the next fetch (maybe of a
            # slow host) happens to finish
            got = pool.get(_IDLE_S if decoding else None)
            if got is not None:
                decoding.append(ex.submit(_finish, rows.pop(got[0]), got[1], img_bl, cfg))
            yield from take(block=False)
        while decoding:
            yield decoding.popleft().result()


_IDLE_S = 0.05  # how long the task loop waits on one source (input, fetches) before serving the others


def _prefetch(records: Iterator[dict[str, Any]], size: int = 1024) -> queue.Queue:
    """Read the input in a thread, at most `size` records ahead: the task loop then never sits
    blocked on the input (e.g. the JVM's end-of-data) while fetched rows wait to be committed."""
    q: queue.Queue = queue.Queue(size)

    def run() -> None:
        try:
            for rec in records:
                q.put(("record", rec))
            q.put(("end", None))
        except BaseException as exc:  # noqa: BLE001 - re-raised in the task loop
            q.put(("error", exc))

    threading.Thread(target=run, name="crawlpairs-input", daemon=True).start()
    return q


def _finish(rec: dict[str, Any], f: Fetched, img_bl: HashList, iopts: DownloadConfig) -> dict[str, Any]:
    """Hash blocklist, then decode/vet/resize: the CPU half of one URL (runs in a decode thread)."""
    if f.status != SUCCESS or f.body is None:
        res = _result(f.status, f.error_message, http_status=f.http_status)
    else:
        alg = img_bl.match_bytes(f.body)
        if alg:
            res = _result(BLOCKED, f"blocklist_hash: {alg} of image listed", http_status=f.http_status)
        else:
            try:
                p = process(f.body, iopts)
                res = _result(SUCCESS, None, width=p.width, height=p.height,
                              original_width=p.original_width, original_height=p.original_height,
                              sha256=p.sha256, phash=p.phash, http_status=f.http_status,
                              final_url=f.final_url, image=p.data)
            except ImageReject as exc:
                res = _result(ERROR, str(exc), http_status=f.http_status)
            except Exception as exc:  # a broken image never fails the task
                res = _result(ERROR, f"decode: {exc.__class__.__name__}: {str(exc)[:120]}",
                              http_status=f.http_status)
    res["politeness"] = f.politeness
    rec.update(res)
    return rec


def _frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    df = pd.DataFrame(records)
    for f in RESULT_SCHEMA:  # ints with gaps must not turn into floats on the way to Arrow
        if pa.types.is_int32(f.type):
            df[f.name] = df[f.name].astype("Int32")
    return df


# The result columns of a shard's Parquet: img2dataset's `status`, then ours.
SHARD_RESULT_SCHEMA = pa.schema([("status", pa.string()), ("download_status", pa.string()),
                                 *[f for f in RESULT_SCHEMA if f.name not in ("status", "image")],
                                 ("image", pa.binary())])
TASK_SCHEMA = pa.schema([("task", pa.int32()), ("shard", pa.int64()), ("count", pa.int64()),
                         ("successes", pa.int64()), ("skipped", pa.bool_()), ("end_time", pa.string()),
                         ("peak_rss_mb", pa.float64()), ("stats", pa.string())])


@dataclass
class _Open:
    """A shard being filled: its rows with outcomes, how many were read, whether its input ended."""

    records: list[dict[str, Any]] = field(default_factory=list)
    expected: int = 0
    closed: bool = False
    skip: bool = False
    started: float = field(default_factory=time.time)
    old: dict[str, dict[str, Any]] | None = None  # --retry-failed: uid -> the committed row (image spooled)
    spool: Spool | None = None  # image bytes of the rows in `records` (made on first use)

    def keep(self, rec: dict[str, Any]) -> None:
        """Add a finished row; its image bytes go to the spool, the row keeps a reference."""
        img = rec.get("image")
        if isinstance(img, bytes | bytearray | memoryview):
            rec["image"] = self.spooled().put(bytes(img))
        self.records.append(rec)

    def spooled(self) -> Spool:
        if self.spool is None:
            self.spool = Spool()
        return self.spool

    def image(self, rec: dict[str, Any]) -> bytes:
        return self.spooled().get(rec["image"])

    def close(self) -> None:
        if self.spool is not None:
            self.spool.close()


def _old_rows(out: str, name: str, st: StorageConfig | None, ext: str, spool: Spool) -> dict[str, dict[str, Any]]:
    """A committed shard's rows by uid, success rows with a spool reference to their image from the tar."""
    import pyarrow.parquet as pq

    with storage.open_uri(storage.join(out, f"{name}.parquet"), "rb", st) as fh:
        rows = pq.read_table(fh).to_pylist()
    images = read_tar_images(storage.join(out, f"{name}.tar"), st, ext, spool)
    for r in rows:
        r["image"] = images.get(r.get("key"))
    return {str(r["uid"]): r for r in rows}


def peak_rss_mb() -> float:
    """Peak RSS of this Python worker process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def download_shards(batches: Iterator[pa.RecordBatch], cfg: DownloadConfig, out: str, layout: dict[str, Any],
                    schema: pa.Schema, st: StorageConfig | None = None, ext: str = "jpg",
                    rate_shares: dict[str, float] | None = None, base_resolver: Any = None,
                    retry: set[int] | frozenset[int] = frozenset(),
                    board: dict[str, str] | None = None) -> Iterator[pa.RecordBatch]:
    """One download task: fetch its rows (sorted by `_shard`) and commit each shard when it is complete.

    Rows arrive in plan order (`_shard`, position); a shard's input is complete when the
    next shard's first row is read, and the shard is written as soon as every one of its
    rows has an outcome (tar, Parquet, then `_stats.json`). A shard that is already
    committed (an earlier run, or an earlier attempt of this task) is skipped without a
    request. Image bytes never leave the task; it yields one small row per shard.
    Memory: the rows of open shards, which the ordering and `max_pending` keep to about one
    shard plus what is in flight, without their images (spooled to local disk, dl_shards.Spool).
    Shards in `retry` (--retry-failed) are rewritten: rows whose committed outcome is not
    transient keep it (and their image); the others are fetched again.
    """
    open_: dict[int, _Open] = {}
    order: list[int] = []
    task = -1

    def on_input(rec: dict[str, Any]) -> bool:
        nonlocal task
        shard = int(rec["_shard"])
        task = int(rec.get("_task", task))
        sh = open_.get(shard)
        if sh is None:
            for prev in order:
                open_[prev].closed = True
            name = shard_name(shard, layout)
            sh = open_[shard] = _Open(skip=storage.exists(storage.join(out, f"{name}_stats.json"), st))
            if sh.skip and shard in retry:
                sh.skip, sh.old = False, _old_rows(out, name, st, ext, sh.spooled())
            order.append(shard)
        if sh.skip:
            return False
        sh.expected += 1
        old = sh.old.get(str(rec.get("uid"))) if sh.old is not None else None
        if old is not None and not is_transient(old.get("download_status"), old.get("error_message")):
            rec.update({c: old.get(c) for c in SHARD_RESULT_SCHEMA.names if c != "status"})
            sh.records.append(rec)  # kept as committed, its image already spooled: no request
            return False
        return True

    def records() -> Iterator[dict[str, Any]]:
        for b in batches:
            yield from b.to_pylist()

    def ready() -> Iterator[pa.RecordBatch]:
        for shard in list(order):
            sh = open_[shard]
            if not sh.closed or len(sh.records) < sh.expected:
                continue
            order.remove(shard)
            del open_[shard]
            if sh.skip:
                yield _task_row(task, shard, None, True)
                continue
            try:
                doc = write_shard(sh.records, shard, out, layout, st, schema, ext, sh.started, sh.image)
            finally:
                sh.close()
            yield _task_row(task, shard, doc, False)

    # rows read but not committed: one shard plus what is in flight (max_pending bounds the queue besides)
    limit = int(layout.get("shard_size", 0)) + max(1, cfg.in_flight_per_task)

    def may_read() -> bool:
        """Hold reading only while an earlier, fully read shard waits to commit (never the current one)."""
        return not any(sh.closed for sh in open_.values()) or sum(sh.expected for sh in open_.values()) < limit

    for rec in fetch_records(records(), cfg, st, base_resolver, rate_shares, on_input, may_read, board):
        rec["download_status"] = rec.pop("status")
        open_[int(rec["_shard"])].keep(rec)
        yield from ready()
    for sh in open_.values():
        sh.closed = True
    yield from ready()


def _task_row(task: int, shard: int, doc: dict[str, Any] | None, skipped: bool) -> pa.RecordBatch:
    import json

    return pa.RecordBatch.from_pylist([{
        "task": task, "shard": shard, "count": doc["count"] if doc else 0,
        "successes": doc["successes"] if doc else 0, "skipped": skipped,
        "end_time": doc["ended_at"] if doc else None, "peak_rss_mb": round(peak_rss_mb(), 1),
        "stats": json.dumps(doc) if doc else None}], schema=TASK_SCHEMA)
