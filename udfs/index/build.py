"""Build kNN indices (autofaiss) over clip-retrieval style embedding folders.

Input (what `score` writes): `<root>/img_emb/img_emb_0000.npy`, `<root>/text_emb/text_emb_0000.npy`
and `<root>/metadata/metadata_0000.parquet`, row-aligned, float32, L2-normalised.
Output: the index folder described in `knn_files` (clip-retrieval's `clip_back` loads it as is).

Everything here is Spark-free: the job hands Spark's parallelism in (autofaiss's pyspark mode
finds the active session itself; partition shards run as one task each through `build_part_shard`).
Querying is `knn_query`; the notebook-facing names are re-exported by `knn`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from crawlpairs import storage as fsio  # the module; `storage` is the StorageConfig argument
from crawlpairs.config import ConfigError, IndexConfig, StorageConfig, validate_section
from crawlpairs.stats import Stats
from crawlpairs.udfs.index.files import (
    CLIP_BACK_CACHES,
    FORMAT_VERSION,
    INDEX_PREFIX,
    INFO_NAME,
    KINDS,
    META_ROW_GROUP,
    METADATA_RENAMES,
    index_file,
    infos_file,
    npy_header,
)

log = logging.getLogger("crawlpairs.knn")


class IndexBuildError(RuntimeError):
    """The build cannot go on (no usable part, autofaiss refused the memory budget...)."""


# --------------------------------------------------------------------------- input discovery


@dataclass
class Part:
    """One row-aligned partition: a metadata Parquet and one .npy per embedding kind."""

    key: str
    metadata: str
    embeddings: dict[str, str]
    rows: int = 0
    dim: int = 0
    stamp: str = ""  # sizes + modification times/ETags: a rewritten file changes the fingerprint


def _stamp(uris: Sequence[str], storage: StorageConfig | None) -> str:
    out = []
    for uri in uris:
        try:
            fs, path = fsio.filesystem(uri, storage)
            info = fs.info(path)
        except OSError:  # unreadable metadata: no stamp, so no skip (a bug still raises)
            out.append(f"{uri}:?")
            continue
        when = info.get("mtime") or info.get("LastModified") or info.get("ETag") or info.get("etag") or ""
        out.append(f"{uri}:{info.get('size')}:{when}")
    return hashlib.sha256("\n".join(out).encode()).hexdigest()[:16]


def read_npy_header(uri: str, storage: StorageConfig | None = None) -> tuple[int, int, str]:
    """(rows, dim, dtype) from a .npy header without reading the array (works on S3)."""
    with fsio.open_uri(uri, "rb", storage) as fh:
        shape, dtype = npy_header(fh)
    if len(shape) != 2:
        raise ValueError(f"expected a 2-d array, got shape {shape}")
    return shape[0], shape[1], dtype.str


def _part_key(uri: str, folder: str, prefix: str, suffix: str) -> str:
    rel = uri[len(folder.rstrip("/")) + 1 :] if uri.startswith(folder.rstrip("/") + "/") else fsio.basename(uri)
    head, _, name = rel.rpartition("/")
    name = name[: -len(suffix)]
    if name.startswith(prefix + "_"):
        name = name[len(prefix) + 1 :]
    return f"{head}/{name}" if head else name


def _listing(folder: str, prefix: str, suffix: str, storage: StorageConfig | None) -> dict[str, str]:
    files = [u for u in fsio.find(folder, storage) if u.endswith(suffix) and not fsio.basename(u).startswith((".", "_"))]
    return {_part_key(u, folder, prefix, suffix): u for u in files}


def discover_parts(
    root: str, kinds: Sequence[str], storage: StorageConfig | None = None, stats: Stats | None = None
) -> list[Part]:
    """Parts usable for every requested kind, in autofaiss's reading order (sorted by path).

    A part that is missing a file, unreadable, of another dtype/dimension, or whose row counts
    disagree is left out and counted as an error naming the file: a bad part never fails the build.
    """
    stats = stats if stats is not None else Stats()
    meta = _listing(fsio.join(root, "metadata"), "metadata", ".parquet", storage)
    emb = {k: _listing(fsio.join(root, k), k, ".npy", storage) for k in kinds}
    keys = sorted(set(meta).union(*[set(v) for v in emb.values()]))
    stats.incr("parts_found", len(keys))
    parts: list[Part] = []
    dims: dict[str, int] = {}
    for key in keys:
        if key not in meta:
            stats.error("missing_metadata", input=next(iter(e[key] for e in emb.values() if key in e)))
            continue
        missing = [k for k in kinds if key not in emb[k]]
        if missing:
            stats.error("missing_embeddings", input=meta[key], message=f"no {','.join(missing)} file for part {key}")
            with contextlib.suppress(Exception):
                rows = _parquet_rows(meta[key], storage)
                stats.incr("rows_in", rows)
                stats.drop("missing_embeddings", rows)
            continue
        try:
            meta_rows = _parquet_rows(meta[key], storage)
        except Exception as exc:  # noqa: BLE001 - any unreadable file is counted, not raised
            stats.error("unreadable_metadata", input=meta[key], message=repr(exc))
            continue
        stats.incr("rows_in", meta_rows)
        part = Part(key=key, metadata=meta[key], embeddings={k: emb[k][key] for k in kinds}, rows=meta_rows)
        reason = None
        for kind in kinds:
            uri = part.embeddings[kind]
            try:
                rows, dim, dtype = read_npy_header(uri, storage)
            except Exception as exc:  # noqa: BLE001
                reason, message = "unreadable_embeddings", repr(exc)
            else:
                if dtype != "<f4":
                    reason, message = "bad_dtype", f"dtype {dtype}, expected float32"
                elif rows != meta_rows:
                    reason, message = "misaligned_part", f"{rows} vectors vs {meta_rows} metadata rows"
                elif dims.setdefault(kind, dim) != dim:
                    reason, message = "dimension_mismatch", f"dim {dim}, others {dims[kind]}"
            if reason:
                stats.error(reason, input=uri, message=message)
                stats.drop(reason, meta_rows)
                break
            part.dim = dim
        if reason:
            continue
        if part.rows == 0:
            stats.incr("parts_empty")
            continue
        part.stamp = _stamp([part.metadata, *part.embeddings.values()], storage)
        parts.append(part)
    stats.incr("parts_used", len(parts))
    return parts


def _parquet_rows(uri: str, storage: StorageConfig | None) -> int:
    import pyarrow.parquet as pq

    with fsio.open_uri(uri, "rb", storage) as fh:
        return int(pq.ParquetFile(fh).metadata.num_rows)


# --------------------------------------------------------------------------- metadata


def write_metadata(
    parts: Sequence[Part], columns: Sequence[str], out_dir: str, storage: StorageConfig | None = None,
    stats: Stats | None = None,
) -> dict[str, Any]:
    """Copy the wanted columns of each part, in id order, to `out_dir/part-NNNNN.parquet` (local dir).

    Columns get clip-retrieval's names (`text` -> `caption`), so clip_back returns url and caption.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    os.makedirs(out_dir, exist_ok=True)
    files, rows, kept_cols = [], [], None
    for i, part in enumerate(parts):
        with fsio.open_uri(part.metadata, "rb", storage) as fh:
            pf = pq.ParquetFile(fh)
            available = set(pf.schema_arrow.names)
            cols = [c for c in columns if c in available]
            table = pf.read(columns=cols)
        if table.num_rows != part.rows:  # footer said otherwise: refuse to misalign ids
            raise IndexBuildError(f"{part.metadata}: {table.num_rows} rows read, footer said {part.rows}")
        if kept_cols is None:
            kept_cols = cols
        elif cols != kept_cols:
            # keep one schema across parts; missing columns become nulls so ids stay aligned
            for c in kept_cols:
                if c not in cols:
                    table = table.append_column(c, pa.nulls(table.num_rows))
            table = table.select(kept_cols)
        table = table.rename_columns(_clip_retrieval_names(table.column_names))
        name = f"part-{i:05d}.parquet"
        pq.write_table(table, os.path.join(out_dir, name), row_group_size=META_ROW_GROUP, compression="zstd")
        files.append(f"metadata/{name}")
        rows.append(table.num_rows)
    if stats is not None:
        stats.incr("metadata_rows", sum(rows))
    return {"files": files, "rows": rows, "columns": _clip_retrieval_names(kept_cols or [])}


def _clip_retrieval_names(columns: Sequence[str]) -> list[str]:
    """`text` -> `caption`, unless the part already has a `caption` column of its own."""
    return [METADATA_RENAMES.get(c, c) if METADATA_RENAMES.get(c) not in columns else c for c in columns]


# --------------------------------------------------------------------------- building


def autofaiss_options(cfg: IndexConfig) -> dict[str, Any]:
    """The build_index keyword arguments that come from the config (the bench reuses them)."""
    return {
        "max_index_memory_usage": cfg.max_index_memory_usage,
        "current_memory_available": cfg.current_memory_available,
        "max_index_query_time_ms": cfg.max_index_query_time_ms,
        "min_nearest_neighbors_to_retrieve": cfg.min_nearest_neighbors_to_retrieve,
        "metric_type": cfg.metric_type,
        "index_key": cfg.index_key,
        "index_param": cfg.index_param,
        "nb_cores": cfg.nb_cores,
        "should_be_memory_mappable": cfg.should_be_memory_mappable,
    }


@contextlib.contextmanager
def fsspec_s3_defaults(storage: StorageConfig | None) -> Iterator[None]:
    """autofaiss opens s3:// paths with bare fsspec: give it our endpoint while it runs."""
    import fsspec.config

    opts = fsio._fs_options("s3://x", storage)  # noqa: SLF001 - same options every other stage uses
    old = fsspec.config.conf.get("s3")
    fsspec.config.conf["s3"] = {**(old or {}), **opts}
    try:
        yield
    finally:
        if old is None:
            fsspec.config.conf.pop("s3", None)
        else:
            fsspec.config.conf["s3"] = old


def _run_autofaiss(embeddings: str, index_path: str, infos_path: str, cfg: IndexConfig, **extra: Any) -> Any:
    from autofaiss import build_index

    # autofaiss calls logging.config.dictConfig, which drops the handlers the CLI set up: put them back
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        index, infos = build_index(
            embeddings=embeddings,
            index_path=index_path,
            index_infos_path=infos_path,
            file_format="npy",
            verbose=logging.WARNING,
            **autofaiss_options(cfg),
            **extra,
        )
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    if infos is None:
        raise IndexBuildError(
            "autofaiss built no index: the memory budget is too small for these vectors "
            f"(--max-index-memory-usage {cfg.max_index_memory_usage}, "
            f"--current-memory-available {cfg.current_memory_available})"
        )
    return index, infos


def stage_embeddings(parts: Sequence[Part], kind: str, work: str, storage: StorageConfig | None) -> str:
    """A folder autofaiss can read holding exactly these parts, in this order.

    Local parts are symlinked (no copy); remote ones are downloaded (the non-distributed build
    needs them on this machine anyway).
    """
    folder = os.path.join(work, f"emb-{kind}")
    os.makedirs(folder, exist_ok=True)
    for i, part in enumerate(parts):
        src = part.embeddings[kind]
        dst = os.path.join(folder, f"{i:06d}.npy")
        if fsio.is_remote(src):
            fs, path = fsio.filesystem(src, storage)
            fs.get(path, dst)
        else:
            os.symlink(os.path.abspath(src), dst)
    return folder


def _all_parts_of_folder(parts: Sequence[Part], kind: str, folder: str, storage: StorageConfig | None) -> bool:
    npys = [u for u in fsio.find(folder, storage) if u.endswith(".npy")]
    return sorted(npys) == [p.embeddings[kind] for p in parts]


def _infos_clean(infos: dict[str, Any], index_rel: str) -> dict[str, Any]:
    """autofaiss's infos as plain JSON, with the index's path inside the folder instead of the
    temporary one it was built at (that folder is gone once the build is published)."""
    clean = json.loads(json.dumps(infos, default=lambda o: o.item() if hasattr(o, "item") else str(o)))
    if "index_path" in clean:
        clean["index_path"] = index_rel
    return clean


def _fix_infos_file(uri: str, index_rel: str, storage: StorageConfig | None = None) -> None:
    """Rewrite autofaiss's infos file (`image.json`) so it names `index_rel`, not a temp path."""
    with contextlib.suppress(FileNotFoundError):
        fsio.write_json(uri, _infos_clean(fsio.read_json(uri, storage), index_rel), storage)


def build_single(
    parts: Sequence[Part], kind: str, root: str, cfg: IndexConfig, work: str, out_dir: str,
    storage: StorageConfig | None = None, distributed: bool = False, tmp_dir: str | None = None,
) -> list[dict[str, Any]]:
    """One autofaiss index over all parts (or `nb_indices_to_keep` ids-disjoint ones when distributed).

    Ids are global row numbers in `parts` order; the returned shards all have id_offset 0.
    """
    folder = fsio.join(root, kind)
    if _all_parts_of_folder(parts, kind, folder, storage):
        emb_input = folder  # the common case: read in place, local or S3
    else:
        emb_input = stage_embeddings(parts, kind, work, storage)
    if not fsio.is_remote(out_dir):
        os.makedirs(out_dir, exist_ok=True)
    rel = index_file(kind)
    index_path = fsio.join(out_dir, rel)
    infos_path = fsio.join(out_dir, infos_file(rel))
    extra: dict[str, Any] = {}
    if distributed:
        extra = {
            "distributed": "pyspark",
            "temporary_indices_folder": tmp_dir or os.path.join(work, "autofaiss-tmp"),
            "nb_indices_to_keep": cfg.nb_indices_to_keep,
        }
    total = sum(p.rows for p in parts)
    t = time.perf_counter()
    with fsspec_s3_defaults(storage):
        _, infos = _run_autofaiss(emb_input, index_path, infos_path, cfg, **extra)
    inside = round(time.perf_counter() - t, 3)
    if distributed and cfg.nb_indices_to_keep > 1:
        # {"<dir>/image.index0": infos, ...}: ids were added with add_with_ids, so they stay global
        shards = []
        for path, one in sorted(infos.items()):
            name = path.rstrip("/").rpartition("/")[2]
            _fix_infos_file(fsio.join(out_dir, infos_file(name)), name, storage)
            shard = _shard(name, 0, None, _infos_clean(one, name))
            shard["autofaiss_seconds"] = inside  # the one call that built them all
            shards.append(shard)
        return shards
    _fix_infos_file(infos_path, rel, storage)
    shard = _shard(rel, 0, total, _infos_clean(infos, rel))
    shard["autofaiss_seconds"] = inside
    return [shard]


def _shard(rel: str, offset: int, count: int | None, infos: dict[str, Any]) -> dict[str, Any]:
    return {
        "file": rel,
        "infos": infos_file(rel),
        "id_offset": offset,
        "count": count,
        "index_key": infos.get("index_key"),
        "index_param": infos.get("index_param"),
        "autofaiss": infos,
    }


@dataclass
class PartTask:
    """What one partition-shard build needs; plain data so Spark can ship it to an executor."""

    part: Part
    kind: str
    ordinal: int
    id_offset: int
    out: str  # the index folder (local or remote): the shard is written straight there
    cfg: IndexConfig = field(default_factory=IndexConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)


def build_part_shard(task: PartTask) -> dict[str, Any]:
    """Build one partition's index on this machine and put it in the output folder.

    Runs on the driver or as one Spark task; local ids 0..rows-1 map to global ids by id_offset.
    """
    rel = index_file(task.kind, task.ordinal)
    with tempfile.TemporaryDirectory(prefix="crawlpairs-knn-") as work:
        folder = stage_embeddings([task.part], task.kind, work, task.storage)
        local_index = os.path.join(work, "knn.index")
        local_infos = os.path.join(work, "knn.json")
        t = time.perf_counter()
        _, infos = _run_autofaiss(folder, local_index, local_infos, task.cfg)
        inside = round(time.perf_counter() - t, 3)
        _fix_infos_file(local_infos, rel)
        fsio.put_file(local_index, fsio.join(task.out, rel), task.storage)
        fsio.put_file(local_infos, fsio.join(task.out, infos_file(rel)), task.storage)
    shard = _shard(rel, task.id_offset, task.part.rows, _infos_clean(infos, rel))
    shard["part"] = task.part.key
    shard["autofaiss_seconds"] = inside
    return shard


def part_tasks(parts: Sequence[Part], kind: str, out: str, cfg: IndexConfig, storage: StorageConfig) -> list[PartTask]:
    offsets = np.concatenate([[0], np.cumsum([p.rows for p in parts])[:-1]]).astype(int).tolist()
    return [PartTask(p, kind, i, int(offsets[i]), out, cfg, storage) for i, p in enumerate(parts)]


def fingerprint(parts: Sequence[Part], cfg: IndexConfig) -> str:
    """Changes when the inputs or the index settings do: an unchanged rerun is skipped."""
    h = hashlib.sha256()
    h.update(json.dumps(asdict(cfg), sort_keys=True, default=str).encode())
    for p in parts:
        h.update(json.dumps([p.key, p.metadata, p.embeddings, p.rows, p.dim, p.stamp], sort_keys=True).encode())
    return h.hexdigest()[:32]


def clip_from_sources(
    cfg: IndexConfig, root: str, score_cfg: Any | None, storage: StorageConfig | None = None
) -> dict[str, Any]:
    """Which open_clip model made the embeddings, so query encodes text/images the same way.

    Order: explicit index flags, the `_stats.json` score wrote beside the embeddings, the run's
    own score section.
    """
    if cfg.clip_model:
        return {"model": cfg.clip_model, "pretrained": cfg.clip_pretrained,
                "model_config_dir": cfg.clip_model_config_dir, "source": "index config"}
    parent = root.rstrip("/").rpartition("/")[0] or "."
    for uri in (fsio.join(root, "_stats.json"), fsio.join(parent, "scored", "_stats.json")):
        try:
            if not fsio.exists(uri, storage):
                continue
            score = (fsio.read_json(uri, storage).get("config") or {}).get("score") or {}
        except Exception:  # noqa: BLE001 - an unreadable stats file just is not a source
            continue
        if score.get("model"):
            return {"model": score["model"], "pretrained": score.get("pretrained"),
                    "model_config_dir": score.get("model_config_dir"), "source": uri}
    if score_cfg is not None and getattr(score_cfg, "model", None):
        return {"model": score_cfg.model, "pretrained": score_cfg.pretrained,
                "model_config_dir": score_cfg.model_config_dir, "source": "score config"}
    return {"model": None, "pretrained": None, "model_config_dir": None, "source": None}


def clear_output(out: str, storage: StorageConfig | None = None) -> None:
    """Remove an older build (info first, so a half-cleared folder never looks complete).

    Also the folders of format 1 (`img_emb/`, `text_emb/`) and what clip_back caches from the
    metadata (its hdf5 copy would otherwise keep serving the old rows).
    """
    fsio.rm(fsio.join(out, INFO_NAME), storage, recursive=False)
    stale = [fsio.join(out, name) for name in CLIP_BACK_CACHES]
    for prefix in INDEX_PREFIX.values():
        stale += fsio.glob(fsio.join(out, f"{prefix}.index*"), storage) + fsio.glob(fsio.join(out, f"{prefix}.json*"), storage)
    for uri in stale:
        fsio.rm(uri, storage, recursive=False)
    for sub in (*INDEX_PREFIX.values(), *KINDS, "metadata"):
        for f in fsio.find(fsio.join(out, sub), storage):
            fsio.rm(f, storage, recursive=False)
        if not fsio.is_remote(out):
            shutil.rmtree(fsio.join(out, sub), ignore_errors=True)


def publish(work_out: str, out: str, storage: StorageConfig | None = None) -> None:
    """Move a finished local build into `out`; index_info.json goes last (it marks completion)."""
    files = sorted(str(p.relative_to(work_out)) for p in Path(work_out).rglob("*") if p.is_file())
    for rel in [f for f in files if f != INFO_NAME] + [INFO_NAME]:
        src = os.path.join(work_out, rel)
        if os.path.exists(src):
            fsio.put_file(src, fsio.join(out, rel), storage)


def build(
    root: str, out: str, cfg: IndexConfig, storage: StorageConfig | None = None, stats: Stats | None = None,
    score_cfg: Any | None = None, map_fn: Any | None = None, force: bool = False,
) -> dict[str, Any]:
    """Build every requested kind's index + metadata from `root` into `out`; returns index_info.

    `map_fn(fn, items) -> list` runs partition shards in parallel (the job passes Spark's);
    when `cfg.distributed` is set for a single index, autofaiss finds the active SparkSession itself.
    An unchanged rerun (same parts, same settings) is skipped.
    """
    stats = stats if stats is not None else Stats()
    storage = storage or StorageConfig()
    try:
        validate_section(cfg)  # the stage did this on the driver; the notebook API comes here directly
    except ConfigError as exc:
        raise IndexBuildError(str(exc)) from None
    parts = discover_parts(root, cfg.kinds, storage, stats)
    if not parts:
        raise IndexBuildError(f"--input {root}: no usable embedding part (see errors in _stats.json)")
    fp = fingerprint(parts, cfg)
    info_uri = fsio.join(out, INFO_NAME)
    if not force and fsio.exists(info_uri, storage):
        with contextlib.suppress(Exception):
            old = fsio.read_json(info_uri, storage)
            if old.get("fingerprint") == fp:
                stats.incr("skipped_up_to_date")
                return old
    total = sum(p.rows for p in parts)
    stats.incr("vectors_in", total)
    t0 = time.perf_counter()
    clear_output(out, storage)
    with tempfile.TemporaryDirectory(prefix="crawlpairs-index-") as work:
        work_out = os.path.join(work, "out")
        meta = write_metadata(parts, cfg.metadata_columns, os.path.join(work_out, "metadata"), storage, stats)
        kinds: dict[str, Any] = {}
        for kind in cfg.kinds:
            t = time.perf_counter()
            if cfg.shard_by == "partition":
                tasks = part_tasks(parts, kind, out, cfg, storage)
                shards = (map_fn or _local_map)(build_part_shard, tasks)
            else:
                # distributed + several indices on a cluster: executors write, so write to `out` itself
                direct = cfg.distributed and cfg.nb_indices_to_keep > 1 and fsio.is_remote(out)
                shards = build_single(parts, kind, root, cfg, work, out if direct else work_out, storage,
                                      distributed=cfg.distributed, tmp_dir=cfg.tmp_dir)
            kinds[kind] = {"shards": shards, "seconds": round(time.perf_counter() - t, 3)}
            stats.incr(f"shards_{kind}", len(shards))
        info = {
            "format": FORMAT_VERSION,
            "created": now_iso(),
            "input": root,
            "count": total,
            "dim": parts[0].dim,
            "metric_type": cfg.metric_type,
            "fingerprint": fp,
            "kinds": kinds,
            "metadata": meta,
            "parts": [{"key": p.key, "metadata": p.metadata, "embeddings": p.embeddings, "rows": p.rows}
                      for p in parts],
            "clip": clip_from_sources(cfg, root, score_cfg, storage),
            "config": asdict(cfg),
            "autofaiss_version": _autofaiss_version(),
            # clip_back loads one image.index / text.index at the root: not sharded builds
            "clip_back_loadable": all([s["file"] for s in v["shards"]] == [index_file(k)] for k, v in kinds.items()),
        }
        fsio.write_json(os.path.join(work_out, INFO_NAME), info)
        publish(work_out, out, storage)
    stats.incr("vectors_indexed", total * len(cfg.kinds))
    stats.extra["index_seconds"] = round(time.perf_counter() - t0, 3)
    # time spent inside autofaiss.build_index (max over a kind's shards: they may run in parallel)
    stats.extra["autofaiss_seconds"] = round(sum(max(s.get("autofaiss_seconds", 0) for s in v["shards"])
                                                 for v in kinds.values()), 3)
    stats.extra["index_keys"] = {k: sorted({s["index_key"] for s in v["shards"]}) for k, v in kinds.items()}
    return info


def _local_map(fn: Any, items: Sequence[Any]) -> list[Any]:
    return [fn(x) for x in items]


def _autofaiss_version() -> str | None:
    try:
        from importlib.metadata import version

        return version("autofaiss")
    except Exception:  # noqa: BLE001
        return None


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
