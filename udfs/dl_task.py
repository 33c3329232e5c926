"""One download task: rows in, rows with status and image bytes out (pandas, no Spark).

`download_frames` is what the job hands to `mapInPandas`: it streams the task's
rows into a FetchPool (network in a background thread) and, in `decode_threads`
threads (Pillow releases the GIL), vets and transforms each body as it arrives:
image hash blocklist first (a listed image is dropped before it is decoded or
stored), then dl_images.process. Output rows come in order of completion, not of
input; the shard writer sorts by uid.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pandas as pd
import pyarrow as pa

from crawlpairs import storage
from crawlpairs.config import DownloadConfig, StorageConfig
from crawlpairs.udfs.dl_fetch import BLOCKED, ERROR, SUCCESS, Fetched, FetchPool
from crawlpairs.udfs.dl_images import ImageReject, process
from crawlpairs.udfs.dl_optout import DoNotTrain, HashList, list_entries

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
    """Fetch and process the `url` of every row; yield the rows with RESULT_COLUMNS added."""
    url_bl, dnt, img_bl = load_lists(cfg, st)
    rows: dict[int, dict[str, Any]] = {}
    counter = iter(range(1 << 62))

    def items() -> Iterator[tuple[int, str]]:
        for df in batches:
            for rec in df.to_dict("records"):
                i = next(counter)
                rows[i] = rec
                yield i, str(rec.get("url") or "")

    done: list[dict[str, Any]] = []
    threads = max(1, cfg.decode_threads)
    with FetchPool(cfg, url_bl, dnt, base_resolver) as pool, \
            ThreadPoolExecutor(threads, thread_name_prefix="crawlpairs-decode") as ex:
        queued: deque[Future[dict[str, Any]]] = deque()
        for i, f in pool.map(items(), max_pending=max(cfg.max_pending, cfg.in_flight_per_task * 2)):
            queued.append(ex.submit(_finish, rows.pop(i), f, img_bl, cfg))
            while queued and (queued[0].done() or len(queued) > 4 * threads):
                done.append(queued.popleft().result())
            if len(done) >= out_rows:
                yield _frame(done)
                done = []
        while queued:
            done.append(queued.popleft().result())
    if done:
        yield _frame(done)


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
