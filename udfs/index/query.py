"""Query kNN indices built by `knn_build`: by text, image or raw vector, top-k with metadata.

Text and images are embedded by score's own encoder (`udfs/score/clip.py` get_encoder: same config
registration, same seeded random weights when `pretrained` is None, same pixel pipeline, loaded
once per process), with the CLIP model the index recorded at build time.
Remote indices are fetched once into a local cache keyed by their fingerprint.
"""

from __future__ import annotations

import bisect
import contextlib
import hashlib
import json
import os
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from crawlpairs import storage as fsio  # the module; `storage` is the StorageConfig argument
from crawlpairs.config import StorageConfig
from crawlpairs.udfs.index.files import INFO_NAME, META_ROW_GROUP, METADATA_RENAMES

# the index's metadata uses clip-retrieval's names; hits keep ours (`text`)
_OUR_NAMES = {v: k for k, v in METADATA_RENAMES.items()}


def _local_index_dir(uri: str, storage: StorageConfig | None, kind: str, cache_dir: str | None,
                     info: dict[str, Any]) -> str:
    """A local folder with the files a query needs; remote indices are fetched once per version."""
    if not fsio.is_remote(uri):
        return uri[len("file://") :] if uri.startswith("file://") else uri
    root = Path(cache_dir or os.environ.get("CRAWLPAIRS_CACHE", Path.home() / ".cache" / "crawlpairs"))
    target = root / "index" / hashlib.sha256(uri.encode()).hexdigest()[:16] / str(info.get("fingerprint", "x"))
    wanted = [s["file"] for s in info["kinds"][kind]["shards"]] + list(info["metadata"]["files"])
    for rel in wanted:
        dst = target / rel
        if not dst.exists():
            dst.parent.mkdir(parents=True, exist_ok=True)
            fs, path = fsio.filesystem(fsio.join(uri, rel), storage)
            fs.get_file(path, str(dst) + ".part")
            os.replace(str(dst) + ".part", dst)
    fsio.write_json(str(target / INFO_NAME), info)
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
        self.info = info if info is not None else fsio.read_json(fsio.join(uri, INFO_NAME), storage)
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
        self.columns = [_OUR_NAMES.get(c, c) for c in meta.get("columns") or []]
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
            out.append({_OUR_NAMES.get(c, c): group[c][r] for c in group})
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

    # the encoder ---------------------------------------------------------------------------

    _encoder: Any = None

    def encoder(self) -> Any:
        """score's encoder (`udfs/score/clip.py` ClipEncoder) for the CLIP model the index records."""
        if self._encoder is None:
            clip = self.info.get("clip") or {}
            if not clip.get("model"):
                raise ValueError(
                    "this index records no CLIP model (build it with --clip-model or after score); "
                    "query it with a vector instead"
                )
            from crawlpairs.udfs.score import clip as clip_mod

            try:
                self._encoder = clip_mod.get_encoder(clip["model"], clip.get("pretrained"),
                                                     clip_mod.pick_device("auto"), "fp32",
                                                     clip.get("model_config_dir"), self.storage)
            except Exception as exc:  # noqa: BLE001 - offline tag, missing file...: one line for the user
                raise ValueError(
                    f"cannot load the CLIP model {clip['model']} (pretrained {clip.get('pretrained')}) recorded "
                    f"in the index: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
                ) from exc
        return self._encoder


def encode_images(enc: Any, images: Sequence[Any], storage: StorageConfig | None = None) -> np.ndarray:
    """Images (paths/URIs or bytes) -> normalised embeddings, through score's pixel pipeline."""
    from crawlpairs.udfs.score import clip

    blobs = [bytes(i) if isinstance(i, (bytes, bytearray)) else fsio.read_bytes(str(i), storage) for i in images]
    try:
        pixels = np.stack([clip.load_image(b, enc.spec)[0] for b in blobs])
    except clip.ImageError as exc:  # query's CLI turns ValueError into a one-line error
        raise ValueError(f"query image: {exc.kind} ({exc})") from None
    return enc.encode_images(pixels)


def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(n, 1e-12)


_OPEN: dict[tuple, KnnIndex] = {}


def open_index(uri: str, kind: str | None = None, storage: StorageConfig | None = None, **kw: Any) -> KnnIndex:
    """Open (and cache per process) an index folder: notebooks call query() repeatedly."""
    info = fsio.read_json(fsio.join(uri, INFO_NAME), storage)  # small; a rebuilt index has a new fingerprint
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
        q = idx.encoder().encode_texts([text])
    else:
        q = encode_images(idx.encoder(), [image], idx.storage)
    return idx.query_vectors(q, k)[0]


def query_df(index: str | KnnIndex, **kw: Any):
    """query() as a pandas DataFrame, for notebooks."""
    import pandas as pd

    return pd.DataFrame(query(index, **kw))
