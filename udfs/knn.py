"""kNN indices over clip-retrieval style embedding folders, and queries against them.

Input (what `score` writes): `<root>/img_emb/img_emb_0000.npy`, `<root>/text_emb/text_emb_0000.npy`
and `<root>/metadata/metadata_0000.parquet`, row-aligned, float32, L2-normalised.

Output (one folder, local or s3://):
    index_info.json              what query needs: shards, id offsets, metadata files, CLIP model
    <kind>/knn.index             one autofaiss index per kind (or knn.index0.. / knn_<part>.index when sharded)
    <kind>/knn.index.json        autofaiss's own infos (index key, params, recall it measured)
    metadata/part-00000.parquet  compact metadata in the indices' id order (id i = row i overall)

Everything here is Spark-free: the job hands Spark's parallelism in (autofaiss's pyspark mode
finds the active session itself; partition shards run as one task each through `build_part_shard`).
"""

from __future__ import annotations

import bisect
import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from crawlpairs import storage as st
from crawlpairs.config import IndexConfig, StorageConfig
from crawlpairs.stats import Stats

KINDS = ("img_emb", "text_emb")
INFO_NAME = "index_info.json"
FORMAT_VERSION = 1
META_ROW_GROUP = 16_384  # small row groups: a hit reads one group, not the whole part
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
            fs, path = st.filesystem(uri, storage)
            info = fs.info(path)
        except Exception:  # noqa: BLE001 - no stamp only means no skip
            out.append(f"{uri}:?")
            continue
        when = info.get("mtime") or info.get("LastModified") or info.get("ETag") or info.get("etag") or ""
        out.append(f"{uri}:{info.get('size')}:{when}")
    return hashlib.sha256("\n".join(out).encode()).hexdigest()[:16]


def read_npy_header(uri: str, storage: StorageConfig | None = None) -> tuple[int, int, str]:
    """(rows, dim, dtype) from a .npy header without reading the array (works on S3)."""
    with st.open_uri(uri, "rb", storage) as fh:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
    if len(shape) != 2 or fortran:
        raise ValueError(f"expected a C-ordered 2-d array, got shape {shape} fortran={fortran}")
    return int(shape[0]), int(shape[1]), dtype.str


def _part_key(uri: str, folder: str, prefix: str, suffix: str) -> str:
    rel = uri[len(folder.rstrip("/")) + 1 :] if uri.startswith(folder.rstrip("/") + "/") else st.basename(uri)
    head, _, name = rel.rpartition("/")
    name = name[: -len(suffix)]
    if name.startswith(prefix + "_"):
        name = name[len(prefix) + 1 :]
    return f"{head}/{name}" if head else name


def _listing(folder: str, prefix: str, suffix: str, storage: StorageConfig | None) -> dict[str, str]:
    files = [u for u in st.find(folder, storage) if u.endswith(suffix) and not st.basename(u).startswith((".", "_"))]
    return {_part_key(u, folder, prefix, suffix): u for u in files}


def discover_parts(
    root: str, kinds: Sequence[str], storage: StorageConfig | None = None, stats: Stats | None = None
) -> list[Part]:
    """Parts usable for every requested kind, in autofaiss's reading order (sorted by path).

    A part that is missing a file, unreadable, of another dtype/dimension, or whose row counts
    disagree is left out and counted as an error naming the file: a bad part never fails the build.
    """
    stats = stats if stats is not None else Stats()
    meta = _listing(st.join(root, "metadata"), "metadata", ".parquet", storage)
    emb = {k: _listing(st.join(root, k), k, ".npy", storage) for k in kinds}
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

    with st.open_uri(uri, "rb", storage) as fh:
        return int(pq.ParquetFile(fh).metadata.num_rows)


# --------------------------------------------------------------------------- metadata


def write_metadata(
    parts: Sequence[Part], columns: Sequence[str], out_dir: str, storage: StorageConfig | None = None,
    stats: Stats | None = None,
) -> dict[str, Any]:
    """Copy the wanted columns of each part, in id order, to `out_dir/part-NNNNN.parquet` (local dir)."""
    import pyarrow.parquet as pq

    os.makedirs(out_dir, exist_ok=True)
    files, rows, kept_cols = [], [], None
    for i, part in enumerate(parts):
        with st.open_uri(part.metadata, "rb", storage) as fh:
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
            import pyarrow as pa

            for c in kept_cols:
                if c not in cols:
                    table = table.append_column(c, pa.nulls(table.num_rows))
            table = table.select(kept_cols)
        name = f"part-{i:05d}.parquet"
        pq.write_table(table, os.path.join(out_dir, name), row_group_size=META_ROW_GROUP, compression="zstd")
        files.append(f"metadata/{name}")
        rows.append(table.num_rows)
    if stats is not None:
        stats.incr("metadata_rows", sum(rows))
    return {"files": files, "rows": rows, "columns": kept_cols or []}


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

    opts = st._fs_options("s3://x", storage)  # noqa: SLF001 - same options every other stage uses
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
        if st.is_remote(src):
            fs, path = st.filesystem(src, storage)
            fs.get(path, dst)
        else:
            os.symlink(os.path.abspath(src), dst)
    return folder


def _all_parts_of_folder(parts: Sequence[Part], kind: str, folder: str, storage: StorageConfig | None) -> bool:
    npys = [u for u in st.find(folder, storage) if u.endswith(".npy")]
    return sorted(npys) == [p.embeddings[kind] for p in parts]


def _infos_clean(infos: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(infos, default=lambda o: o.item() if hasattr(o, "item") else str(o)))


def build_single(
    parts: Sequence[Part], kind: str, root: str, cfg: IndexConfig, work: str, out_dir: str,
    storage: StorageConfig | None = None, distributed: bool = False, tmp_dir: str | None = None,
) -> list[dict[str, Any]]:
    """One autofaiss index over all parts (or `nb_indices_to_keep` ids-disjoint ones when distributed).

    Ids are global row numbers in `parts` order; the returned shards all have id_offset 0.
    """
    folder = st.join(root, kind)
    if _all_parts_of_folder(parts, kind, folder, storage):
        emb_input = folder  # the common case: read in place, local or S3
    else:
        emb_input = stage_embeddings(parts, kind, work, storage)
    if not st.is_remote(out_dir):
        os.makedirs(os.path.join(out_dir, kind), exist_ok=True)
    index_path = st.join(out_dir, kind, "knn.index")
    infos_path = st.join(out_dir, kind, "knn.index.json")
    extra: dict[str, Any] = {}
    if distributed:
        extra = {
            "distributed": "pyspark",
            "temporary_indices_folder": tmp_dir or os.path.join(work, "autofaiss-tmp"),
            "nb_indices_to_keep": cfg.nb_indices_to_keep,
        }
    elif cfg.nb_indices_to_keep > 1:
        raise IndexBuildError("--nb-indices-to-keep > 1 needs --distributed true (autofaiss's pyspark mode)")
    total = sum(p.rows for p in parts)
    t = time.perf_counter()
    with fsspec_s3_defaults(storage):
        _, infos = _run_autofaiss(emb_input, index_path, infos_path, cfg, **extra)
    inside = round(time.perf_counter() - t, 3)
    if distributed and cfg.nb_indices_to_keep > 1:
        # {"<dir>/knn.index0": infos, ...}: ids were added with add_with_ids, so they stay global
        shards = []
        for path, one in sorted(infos.items()):
            name = path.rstrip("/").rpartition("/")[2]
            shard = _shard(kind, name, 0, None, _infos_clean(one))
            shard["infos"] = f"{kind}/knn.index.json{name[len('knn.index'):]}"
            shard["autofaiss_seconds"] = inside  # the one call that built them all
            shards.append(shard)
        return shards
    shard = _shard(kind, "knn.index", 0, total, _infos_clean(infos))
    shard["autofaiss_seconds"] = inside
    return [shard]


def _shard(kind: str, name: str, offset: int, count: int | None, infos: dict[str, Any]) -> dict[str, Any]:
    return {
        "file": f"{kind}/{name}",
        "infos": f"{kind}/{name}.json",
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
    cfg = task.cfg
    name = f"knn_{task.ordinal:05d}.index"
    with tempfile.TemporaryDirectory(prefix="crawlpairs-knn-") as work:
        folder = stage_embeddings([task.part], task.kind, work, task.storage)
        local_index = os.path.join(work, name)
        local_infos = local_index + ".json"
        t = time.perf_counter()
        _, infos = _run_autofaiss(folder, local_index, local_infos, cfg)
        inside = round(time.perf_counter() - t, 3)
        for src in (local_index, local_infos):
            dst = st.join(task.out, task.kind, os.path.basename(src))
            _put_file(src, dst, task.storage)
    shard = _shard(task.kind, name, task.id_offset, task.part.rows, _infos_clean(infos))
    shard["part"] = task.part.key
    shard["autofaiss_seconds"] = inside
    return shard


def _put_file(src: str, dst: str, storage: StorageConfig | None) -> None:
    if st.is_remote(dst):
        fs, path = st.filesystem(dst, storage)
        fs.put_file(src, path)
    else:
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        tmp = dst + ".tmp"
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)


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
    for uri in (st.join(root, "_stats.json"), st.join(parent, "scored", "_stats.json")):
        try:
            if not st.exists(uri, storage):
                continue
            score = (st.read_json(uri, storage).get("config") or {}).get("score") or {}
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
    """Remove an older build (info first, so a half-cleared folder never looks complete)."""
    st.rm(st.join(out, INFO_NAME), storage, recursive=False)
    for sub in (*KINDS, "metadata"):
        for f in st.find(st.join(out, sub), storage):
            st.rm(f, storage, recursive=False)
        if not st.is_remote(out):
            shutil.rmtree(st.join(out, sub), ignore_errors=True)


def publish(work_out: str, out: str, storage: StorageConfig | None = None) -> None:
    """Move a finished local build into `out`; index_info.json goes last (it marks completion)."""
    files = sorted(str(p.relative_to(work_out)) for p in Path(work_out).rglob("*") if p.is_file())
    for rel in [f for f in files if f != INFO_NAME] + [INFO_NAME]:
        src = os.path.join(work_out, rel)
        if os.path.exists(src):
            _put_or_move(src, st.join(out, rel), storage)


def _put_or_move(src: str, dst: str, storage: StorageConfig | None) -> None:
    if st.is_remote(dst):
        _put_file(src, dst, storage)
    else:
        os.makedirs(os.path.dirname(dst) or ".", exist_ok=True)
        shutil.move(src, dst)


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
    bad_kinds = [k for k in cfg.kinds if k not in KINDS]
    if bad_kinds or not cfg.kinds:
        raise IndexBuildError(f"--kinds {','.join(cfg.kinds)}: choose from {', '.join(KINDS)}")
    if cfg.shard_by not in ("none", "partition"):
        raise IndexBuildError(f"--shard-by {cfg.shard_by}: choose none or partition")
    parts = discover_parts(root, cfg.kinds, storage, stats)
    if not parts:
        raise IndexBuildError(f"--input {root}: no usable embedding part (see errors in _stats.json)")
    fp = fingerprint(parts, cfg)
    info_uri = st.join(out, INFO_NAME)
    if not force and st.exists(info_uri, storage):
        with contextlib.suppress(Exception):
            old = st.read_json(info_uri, storage)
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
                direct = cfg.distributed and cfg.nb_indices_to_keep > 1 and st.is_remote(out)
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
        }
        st.write_json(os.path.join(work_out, INFO_NAME), info)
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


# --------------------------------------------------------------------------- querying


def _local_index_dir(uri: str, storage: StorageConfig | None, kind: str, cache_dir: str | None,
                     info: dict[str, Any]) -> str:
    """A local folder with the files a query needs; remote indices are fetched once per version."""
    if not st.is_remote(uri):
        return uri[len("file://") :] if uri.startswith("file://") else uri
    root = Path(cache_dir or os.environ.get("CRAWLPAIRS_CACHE", Path.home() / ".cache" / "crawlpairs"))
    target = root / "index" / hashlib.sha256(uri.encode()).hexdigest()[:16] / str(info.get("fingerprint", "x"))
    wanted = [s["file"] for s in info["kinds"][kind]["shards"]] + list(info["metadata"]["files"])
    for rel in wanted:
        dst = target / rel
        if not dst.exists():
            dst.parent.mkdir(parents=True, exist_ok=True)
            fs, path = st.filesystem(st.join(uri, rel), storage)
            fs.get_file(path, str(dst) + ".part")
            os.replace(str(dst) + ".part", dst)
    st.write_json(str(target / INFO_NAME), info)
    return str(target)


class KnnIndex:
    """An index folder opened for search: shards, their id offsets, and lazily read metadata."""

    def __init__(self, uri: str, kind: str | None = None, storage: StorageConfig | None = None,
                 mmap: bool = False, cache_dir: str | None = None, nprobe_param: str | None = None,
                 info: dict[str, Any] | None = None):
        """`info`: the index_info.json already read by the caller (open_index), else read here once."""
        import faiss

        self.uri = uri
        self.storage = storage
        self.info = info if info is not None else st.read_json(st.join(uri, INFO_NAME), storage)
        kinds = list(self.info["kinds"])
        self.kind = kind or ("img_emb" if "img_emb" in kinds else kinds[0])
        if self.kind not in self.info["kinds"]:
            raise ValueError(f"index {uri} has no {self.kind!r} index (it has {', '.join(kinds)})")
        self.local = _local_index_dir(uri, storage, self.kind, cache_dir, self.info)
        self.metric = self.info.get("metric_type", "ip")
        self.dim = int(self.info["dim"])
        self.shards = []
        flags = faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY if mmap else 0
        for shard in self.info["kinds"][self.kind]["shards"]:
            index = faiss.read_index(os.path.join(self.local, shard["file"]), flags)
            param = nprobe_param or shard.get("index_param")
            if param:
                with contextlib.suppress(RuntimeError):
                    faiss.ParameterSpace().set_index_parameters(index, param)
            self.shards.append((index, int(shard.get("id_offset") or 0)))
        meta = self.info["metadata"]
        self._meta_files = [os.path.join(self.local, f) for f in meta["files"]]
        self._meta_starts = np.concatenate([[0], np.cumsum(meta["rows"])]).astype(np.int64).tolist()
        self.columns = list(meta.get("columns") or [])
        self._groups: OrderedDict[tuple[int, int], Any] = OrderedDict()
        self._pfs: dict[int, Any] = {}

    @property
    def ntotal(self) -> int:
        return int(self._meta_starts[-1])

    def search(self, vectors: np.ndarray, k: int = 20) -> tuple[np.ndarray, np.ndarray]:
        """(scores, global ids), best first, merged over shards; missing hits have id -1."""
        q = np.ascontiguousarray(np.atleast_2d(vectors), dtype=np.float32)
        if q.shape[1] != self.dim:
            raise ValueError(f"query has dimension {q.shape[1]}, the index {self.dim}")
        all_d, all_i = [], []
        for index, offset in self.shards:
            d, i = index.search(q, k)
            all_d.append(d)
            all_i.append(np.where(i >= 0, i + offset, -1))
        d = np.concatenate(all_d, axis=1)
        i = np.concatenate(all_i, axis=1)
        bad = np.inf if self.metric == "l2" else -np.inf
        d = np.where(i >= 0, d, bad)
        order = np.argsort(d if self.metric == "l2" else -d, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(d, order, 1), np.take_along_axis(i, order, 1)

    def _row_group(self, file_no: int, group: int) -> dict[str, list]:
        import pyarrow.parquet as pq

        key = (file_no, group)
        if key in self._groups:
            self._groups.move_to_end(key)
            return self._groups[key]
        if file_no not in self._pfs:
            self._pfs[file_no] = pq.ParquetFile(self._meta_files[file_no])
        data = self._pfs[file_no].read_row_group(group).to_pydict()
        self._groups[key] = data
        if len(self._groups) > 64:
            self._groups.popitem(last=False)
        return data

    def lookup(self, ids: Sequence[int]) -> list[dict[str, Any]]:
        """Metadata rows for global ids (row i of the metadata written at build time)."""
        out = []
        for gid in ids:
            gid = int(gid)
            if gid < 0 or gid >= self.ntotal:
                out.append({})
                continue
            file_no = bisect.bisect_right(self._meta_starts, gid) - 1
            local = gid - self._meta_starts[file_no]
            group = self._row_group(file_no, local // META_ROW_GROUP)
            r = local % META_ROW_GROUP
            out.append({c: group[c][r] for c in group})
        return out

    def query_vectors(self, vectors: np.ndarray, k: int = 20) -> list[list[dict[str, Any]]]:
        """Top-k hits per query vector: rank, id, score + the metadata columns."""
        scores, ids = self.search(vectors, k)
        results = []
        for d_row, i_row in zip(scores, ids, strict=True):
            hits = []
            rows = self.lookup([i for i in i_row if i >= 0])
            for rank, (score, gid, row) in enumerate(zip(d_row, [i for i in i_row if i >= 0], rows, strict=False)):
                hits.append({"rank": rank + 1, "id": int(gid), "score": float(score), **row})
            results.append(hits)
        return results

    # encoders ---------------------------------------------------------------------------

    _encoder: Any = None

    def encoder(self) -> ClipEncoder:
        if self._encoder is None:
            clip = self.info.get("clip") or {}
            if not clip.get("model"):
                raise ValueError(
                    "this index records no CLIP model (build it with --clip-model or after score); "
                    "query it with a vector instead"
                )
            try:
                self._encoder = ClipEncoder(clip["model"], clip.get("pretrained"), clip.get("model_config_dir"),
                                            storage=self.storage)
            except Exception as exc:  # noqa: BLE001 - offline tag, missing file...: one line for the user
                raise ValueError(
                    f"cannot load the CLIP model {clip['model']} (pretrained {clip.get('pretrained')}) recorded "
                    f"in the index: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
                ) from exc
        return self._encoder


class ClipEncoder:
    """Text and image embeddings made exactly as the score stage made them, L2-normalised.

    A thin adapter over score's cached encoder (`udfs/clip.py` get_encoder: same config
    registration, same seeded random weights when `pretrained` is None, same pixel pipeline,
    loaded once per process).
    """

    def __init__(self, model: str, pretrained: str | None = None, model_config_dir: str | None = None,
                 storage: StorageConfig | None = None, device: str = "auto"):
        from crawlpairs.udfs import clip

        self.storage = storage
        self._clip = clip
        self._enc = clip.get_encoder(model, pretrained, clip.pick_device(device), "fp32", model_config_dir, storage)

    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        return self._enc.encode_texts(list(texts))

    def encode_images(self, images: Sequence[Any]) -> np.ndarray:
        """Images as paths/URIs or bytes."""
        blobs = [bytes(i) if isinstance(i, (bytes, bytearray)) else st.read_bytes(str(i), self.storage)
                 for i in images]
        try:
            pixels = np.stack([self._clip.load_image(b, self._enc.spec)[0] for b in blobs])
        except self._clip.ImageError as exc:  # query's CLI turns ValueError into a one-line error
            raise ValueError(f"query image: {exc.kind} ({exc})") from None
        return self._enc.encode_images(pixels)


def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(n, 1e-12)


_OPEN: dict[tuple, KnnIndex] = {}


def open_index(uri: str, kind: str | None = None, storage: StorageConfig | None = None, **kw: Any) -> KnnIndex:
    """Open (and cache per process) an index folder: notebooks call query() repeatedly."""
    info = st.read_json(st.join(uri, INFO_NAME), storage)  # small; a rebuilt index has a new fingerprint
    key = (uri, kind, info.get("fingerprint"), info.get("created"),
           json.dumps(asdict(storage), sort_keys=True) if storage else None, json.dumps(kw, sort_keys=True, default=str))
    if key not in _OPEN:
        _OPEN[key] = KnnIndex(uri, kind=kind, storage=storage, info=info, **kw)
    return _OPEN[key]


def query(
    index: str | KnnIndex, text: str | None = None, image: Any = None, vector: Any = None, k: int = 20,
    kind: str | None = None, storage: StorageConfig | None = None,
) -> list[dict[str, Any]]:
    """Top-k rows (rank, id, score, url, text, similarity, ...) for a text, an image or a raw vector.

    Exactly one of text / image / vector. A text is embedded with the CLIP text tower and, against
    the image index, finds images described by it (clip-retrieval's text->image search).
    """
    given = [x is not None for x in (text, image, vector)]
    if sum(given) != 1:
        raise ValueError("give exactly one of text, image, vector")
    idx = index if isinstance(index, KnnIndex) else open_index(index, kind=kind, storage=storage)
    if vector is not None:
        q = _normalise(np.atleast_2d(np.asarray(vector, dtype=np.float32))) if idx.metric == "ip" else \
            np.atleast_2d(np.asarray(vector, dtype=np.float32))
    elif text is not None:
        q = idx.encoder().encode_text([text])
    else:
        q = idx.encoder().encode_images([image])
    return idx.query_vectors(q, k)[0]


def query_df(index: str | KnnIndex, **kw: Any):
    """query() as a pandas DataFrame, for notebooks."""
    import pandas as pd

    return pd.DataFrame(query(index, **kw))


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
