"""img2dataset-layout output: one webdataset tar + one Parquet + one stats JSON per shard.

  <out>/00042.tar           key.jpg, key.txt, key.json for every success row
  <out>/00042.parquet       every row of the shard (all input columns, status, error...)
  <out>/00042_stats.json    counts by status and error kind; written last = shard done

A row's shard is a hash of its uid modulo the shard count fixed at the first run
(`_plan.json`), and its key is the shard number followed by the row's rank by uid
within the shard, so keys do not change when a run is repeated or resumed.
"""

from __future__ import annotations

import io
import json
import tarfile
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from crawlpairs import storage
from crawlpairs.config import StorageConfig
from crawlpairs.stats import Stats
from crawlpairs.udfs.dl_fetch import ERROR, SUCCESS, error_kind

PLAN = "_plan.json"


def plan(rows: int, shard_size: int) -> dict[str, int]:
    n = max(1, -(-rows // max(1, shard_size)))
    return {"rows": rows, "shards": n, "shard_digits": max(5, len(str(n - 1))),
            "index_digits": max(4, len(str(2 * shard_size)))}


def shard_name(shard: int, p: dict[str, int]) -> str:
    return f"{shard:0{p['shard_digits']}d}"


def _json_value(v: Any) -> Any:
    if v is None or isinstance(v, (str, bool, int, float)):
        return None if isinstance(v, float) and v != v else v
    if hasattr(v, "item"):
        return _json_value(v.item())
    if isinstance(v, bytes):
        return None
    if isinstance(v, (list, tuple)) or hasattr(v, "tolist"):
        return [_json_value(x) for x in (v.tolist() if hasattr(v, "tolist") else v)]
    if isinstance(v, dict):
        return {str(k): _json_value(x) for k, x in v.items()}
    return str(v)


def _tar_add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0  # byte-identical shards on re-runs
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def read_tar_images(uri: str, st: StorageConfig | None, ext: str) -> dict[str, bytes]:
    """key -> image bytes of an existing shard (used when --retry-failed rewrites it)."""
    if not storage.exists(uri, st):
        return {}
    out = {}
    with tarfile.open(fileobj=io.BytesIO(storage.read_bytes(uri, st))) as tar:
        for m in tar.getmembers():
            if m.isfile() and m.name.endswith("." + ext):
                f = tar.extractfile(m)
                if f is not None:
                    out[m.name[: -len(ext) - 1]] = f.read()
    return out


def write_shard(df: pd.DataFrame, shard: int, out: str, p: dict[str, int], st: StorageConfig | None,
                ext: str = "jpg", drop_columns: tuple[str, ...] = ("_shard", "_host")) -> dict[str, Any]:
    """Write one shard's tar, Parquet and stats; returns the stats dict.

    Rows whose status is success but whose `image` is missing (kept from an earlier run
    during --retry-failed) take their bytes from the shard's existing tar.
    """
    name = shard_name(shard, p)
    df = df.drop(columns=[c for c in drop_columns if c in df.columns])
    df = df.sort_values("uid", kind="stable").reset_index(drop=True)
    df["key"] = [f"{name}{i:0{p['index_digits']}d}" for i in range(len(df))]
    need_old = ((df.status == SUCCESS) & df.image.isna()).any()
    old = read_tar_images(storage.join(out, f"{name}.tar"), st, ext) if need_old else {}
    if need_old:  # success kept from an earlier run: its bytes come from the old tar
        lost = (df.status == SUCCESS) & df.image.isna() & ~df.key.isin(old)
        df.loc[lost, "status"] = ERROR
        df.loc[lost, "error_message"] = "internal: image of an earlier run not found in its shard"
        fill = (df.status == SUCCESS) & df.image.isna()
        df.loc[fill, "image"] = df.loc[fill, "key"].map(old)
    meta_cols = [c for c in df.columns if c != "image"]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for rec in df.to_dict("records"):
            if rec["status"] != SUCCESS:
                continue
            key = rec["key"]
            meta = {c: _json_value(rec[c]) for c in meta_cols}
            meta["caption"] = meta.get("text")
            _tar_add(tar, f"{key}.{ext}", bytes(rec["image"]))
            _tar_add(tar, f"{key}.txt", str(rec.get("text") or "").encode("utf-8"))
            _tar_add(tar, f"{key}.json", json.dumps(meta, ensure_ascii=False).encode("utf-8"))
    storage.write_bytes(storage.join(out, f"{name}.tar"), buf.getvalue(), st)
    table = pa.Table.from_pandas(df[meta_cols], preserve_index=False)
    pbuf = io.BytesIO()
    pq.write_table(table, pbuf)
    storage.write_bytes(storage.join(out, f"{name}.parquet"), pbuf.getvalue(), st)
    stats = Stats()
    stats.incr("rows_in", len(df))
    for status, msg, url in zip(df.status, df.error_message, df.url, strict=True):
        stats.incr(f"status_{status}")
        if status == SUCCESS:
            stats.incr("rows_out")
            continue
        kind = error_kind(msg) or "unknown"
        stats.drop(kind)
        if status == ERROR:
            stats.error(kind, input=str(url), message=msg)
    doc = {"shard": name, "count": len(df), "successes": int((df.status == SUCCESS).sum()), **stats.to_dict()}
    storage.write_json(storage.join(out, f"{name}_stats.json"), doc, st)
    return doc
