"""img2dataset-layout output: one webdataset tar + one Parquet + one stats JSON per shard.

  <root>/images/00042.tar          key.jpg, key.txt, key.json for every success row
  <root>/images/00042.parquet      every row of the shard (all input columns, status, error...)
  <root>/images/00042_stats.json   img2dataset's keys plus ours; written last = shard committed
  <root>/images_meta/plan.json     the plan (dl_plan) and the settings fingerprint
  <root>/images_meta/_stats.json   the stage's totals

The shard folder holds nothing else, so img2dataset's incremental resume, HF `datasets`
and DuckDB read it as they read img2dataset's own output. Each file is written whole
(temp file + rename, or one PUT), tar and Parquet first, the stats last: a shard whose
`_stats.json` exists is complete, anything else is redone by the next run.

While a shard fills, its image bytes wait in a `Spool` (an unlinked file on the worker's
local disk), and its tar is streamed from there into a file: a task's memory does not grow
with `--shard-size` or the image size.

A row's shard comes from the plan (dl_plan); its key is the shard name followed by the
row's rank by uid inside the shard, so keys do not change when a run is repeated or resumed.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import tarfile
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from crawlpairs import storage
from crawlpairs.config import StorageConfig
from crawlpairs.stats import Stats
from crawlpairs.udfs.download.fetch import SUCCESS, error_kind

PLAN = "plan.json"
BAD_URL = "bad_url"
# img2dataset's `status` values; ours (success / opt-out / blocked / error / bad_url) are in `download_status`.
I2D_SUCCESS, I2D_DOWNLOAD, I2D_RESIZE = "success", "failed_to_download", "failed_to_resize"
RESIZE_KINDS = frozenset({"bomb", "not_image", "too_small", "decode"})  # body came, the image step failed


def i2d_status(download_status: str | None, error_message: str | None) -> str:
    if download_status == SUCCESS:
        return I2D_SUCCESS
    return I2D_RESIZE if error_kind(error_message) in RESIZE_KINDS else I2D_DOWNLOAD


def shard_name(shard: int, layout: dict[str, Any]) -> str:
    return f"{shard:0{layout['shard_digits']}d}"


def is_shard_file(name: str) -> bool:
    """`00042.tar`, `00042.parquet`, `00042_stats.json`: the only names in the shard folder."""
    stem = name.split(".", 1)[0].removesuffix("_stats")
    return stem.isdigit() and name in (f"{stem}.tar", f"{stem}.parquet", f"{stem}_stats.json")


def committed(out: str, st: StorageConfig | None) -> set[int]:
    """Shards whose stats file exists (committed by an earlier run or task)."""
    done = set()
    for u in storage.glob(storage.join(out, "*_stats.json"), st):
        stem = storage.basename(u)[: -len("_stats.json")]
        if stem.isdigit():
            done.add(int(stem))
    return done


def iso(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).isoformat(timespec="milliseconds")


def json_value(v: Any) -> Any:
    if v is None or isinstance(v, (str, bool, int, float)):
        return None if isinstance(v, float) and v != v else v
    if isinstance(v, dt.datetime | dt.date):
        return v.isoformat()
    if hasattr(v, "item"):
        return json_value(v.item())
    if isinstance(v, bytes):
        return None
    if isinstance(v, (list, tuple)) or hasattr(v, "tolist"):
        return [json_value(x) for x in (v.tolist() if hasattr(v, "tolist") else v)]
    if isinstance(v, dict):
        return {str(k): json_value(x) for k, x in v.items()}
    return str(v)


def parquet_schema(input_schema: pa.Schema, result_schema: pa.Schema) -> pa.Schema:
    """Input columns (timestamps as ISO-8601 strings, as img2dataset's writer needs), key, results."""
    fields = []
    for f in input_schema:
        if f.name.startswith("_") or f.name in result_schema.names or f.name == "key":
            continue
        fields.append(pa.field(f.name, pa.string()) if pa.types.is_timestamp(f.type) or pa.types.is_date(f.type)
                      else f)
    fields.append(pa.field("key", pa.string()))
    fields += [f for f in result_schema if f.name != "image"]
    return pa.schema(fields)


def _cell(v: Any) -> Any:
    """Timestamps become ISO-8601 strings in the Parquet (see parquet_schema)."""
    return v.isoformat() if isinstance(v, dt.datetime | dt.date) else v


def _tar_add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0  # byte-identical shards on re-runs
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def read_tar_images(uri: str, st: StorageConfig | None, ext: str, spool: Spool) -> dict[str, tuple[int, int]]:
    """key -> spool reference of each image of an existing shard (--retry-failed rewrites it).

    The tar is read as a stream, one member in memory at a time.
    """
    if not storage.exists(uri, st):
        return {}
    out = {}
    with storage.open_uri(uri, "rb", st) as fh, tarfile.open(fileobj=fh, mode="r|") as tar:
        for m in tar:
            if m.isfile() and m.name.endswith("." + ext):
                f = tar.extractfile(m)
                if f is not None:
                    out[m.name[: -len(ext) - 1]] = spool.put(f.read())
    return out


def local_dir() -> str | None:
    """The worker's scratch disk: Spark's local dir when an executor runs us, else the system's temp."""
    dirs = os.environ.get("SPARK_LOCAL_DIRS") or os.environ.get("LOCAL_DIRS") or ""
    return dirs.split(",")[0] or None


class Spool:
    """Image bytes of a shard being filled, on local disk instead of in memory.

    An unlinked temp file: the kernel frees it when the task ends or is killed, so a crash
    leaves nothing behind. `put` returns a reference (offset, length) that `get` reads back.
    """

    def __init__(self, directory: str | None = None) -> None:
        self._f = tempfile.TemporaryFile(dir=directory or local_dir())  # noqa: SIM115 - lives as long as the shard
        self._end = 0

    def put(self, data: bytes) -> tuple[int, int]:
        self._f.seek(self._end)
        self._f.write(data)
        ref = (self._end, len(data))
        self._end += len(data)
        return ref

    def get(self, ref: tuple[int, int]) -> bytes:
        self._f.seek(ref[0])
        return self._f.read(ref[1])

    def close(self) -> None:
        self._f.close()


def write_shard(records: list[dict[str, Any]], shard: int, out: str, layout: dict[str, Any],
                st: StorageConfig | None, schema: pa.Schema | None = None, ext: str = "jpg",
                start_time: float | None = None,
                image_of: Callable[[dict[str, Any]], bytes] | None = None) -> dict[str, Any]:
    """Write one shard's tar, then Parquet, then stats (the commit); returns the stats dict.

    `records` hold the input columns, the result columns and `image`: the bytes of a success
    row, or whatever `image_of(record)` turns into them (a Spool reference). The tar is
    streamed into a file, one image in memory at a time.
    """
    image_of = image_of or (lambda r: bytes(r["image"]))
    name = shard_name(shard, layout)
    recs = sorted(records, key=lambda r: str(r.get("uid")))
    for i, r in enumerate(recs):
        r["key"] = f"{name}{i:0{layout['index_digits']}d}"
        r["status"] = i2d_status(r.get("download_status"), r.get("error_message"))
    cols = schema.names if schema is not None else [c for c in recs[0] if c != "image" and not c.startswith("_")]

    def fill(path: str) -> None:
        with tarfile.open(path, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for r in recs:
                if r["status"] != I2D_SUCCESS:
                    continue
                meta = {c: json_value(r.get(c)) for c in cols}
                meta["caption"] = meta.get("text")
                _tar_add(tar, f"{r['key']}.{ext}", image_of(r))
                _tar_add(tar, f"{r['key']}.txt", str(r.get("text") or "").encode("utf-8"))
                _tar_add(tar, f"{r['key']}.json", json.dumps(meta, ensure_ascii=False).encode("utf-8"))

    storage.write_file(storage.join(out, f"{name}.tar"), fill, st, tmp_dir=local_dir())
    rows = [{c: _cell(r.get(c)) for c in cols} for r in recs]
    table = pa.Table.from_pylist(rows, schema=schema)
    pbuf = io.BytesIO()
    pq.write_table(table, pbuf)
    storage.write_bytes(storage.join(out, f"{name}.parquet"), pbuf.getvalue(), st)
    doc = shard_stats(recs, name, start_time)
    storage.write_json(storage.join(out, f"{name}_stats.json"), doc, st)
    return doc


def shard_stats(recs: list[dict[str, Any]], name: str, start_time: float | None) -> dict[str, Any]:
    """img2dataset's stats keys (count, successes, failed_to_*, status_dict, times) plus ours."""
    end = time.time()
    start = end if start_time is None else start_time
    stats = Stats()
    stats.incr("rows_in", len(recs))
    status_dict: Counter[str] = Counter()
    ours: Counter[str] = Counter()
    for r in recs:
        ours[str(r.get("download_status"))] += 1
        stats.incr(f"status_{r.get('download_status')}")
        if r["status"] == I2D_SUCCESS:
            stats.incr("rows_out")
            status_dict[I2D_SUCCESS] += 1
            continue
        kind = error_kind(r.get("error_message")) or "unknown"
        status_dict[kind] += 1
        stats.drop(kind)
        if r.get("download_status") == "error":
            stats.error(kind, input=str(r.get("url")), message=r.get("error_message"))
    statuses = Counter(r["status"] for r in recs)
    return {
        "count": len(recs), "successes": statuses[I2D_SUCCESS],
        "failed_to_download": statuses[I2D_DOWNLOAD], "failed_to_resize": statuses[I2D_RESIZE],
        # start/end as img2dataset writes them (epoch seconds: its logger subtracts them), ISO beside
        "duration": round(end - start, 3), "start_time": start, "end_time": end,
        "started_at": iso(start), "ended_at": iso(end),
        "status_dict": dict(sorted(status_dict.items())), "shard": name,
        "download_status": dict(sorted(ours.items())), **stats.to_dict(),
    }
