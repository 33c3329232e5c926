"""The files on both sides of the index stage: embedding folders in, index folders out.

One place for the names, so the builder, the query side, the notebooks and clip-retrieval's
back end (`clip_back`) agree on them. Imports numpy only: the notebooks use `npy_header`.

Index folder (local or s3://), loadable unchanged by clip-retrieval's `clip_back`:
    image.index, image.json      the image index (autofaiss) and autofaiss's infos about it
    text.index, text.json        the same for the captions' embeddings
    metadata/part-00000.parquet  one row per id, in id order (row i overall = faiss id i), with
                                 clip-retrieval's column names (`caption` for our `text`)
    index_info.json              crawlpairs' own record (shards, id offsets, CLIP model), written last
Sharded builds write `image.index0`.. (`--nb-indices-to-keep`) or `image/knn_00000.index`..
(`--shard-by partition`) instead: `crawlpairs query` merges them; clip_back wants one `image.index`.
"""

from __future__ import annotations

import typing
from typing import IO

import numpy as np

from crawlpairs.config import EmbeddingKind

KINDS = typing.get_args(EmbeddingKind)  # the config's choices, one definition
INFO_NAME = "index_info.json"
FORMAT_VERSION = 2  # 2: clip_back's layout (image.index at the root, `caption`); 1: <kind>/knn.index
META_ROW_GROUP = 16_384  # small row groups: a hit reads one group, not the whole part

# embedding kind -> the prefix clip-retrieval gives its index files (clip_index / clip_back)
INDEX_PREFIX = {"img_emb": "image", "text_emb": "text"}
# our column name -> clip-retrieval's, in the index's metadata only (clip_back returns `caption`)
METADATA_RENAMES = {"text": "caption"}
# what clip_back derives from metadata/ and caches beside it: stale once the index is rebuilt
CLIP_BACK_CACHES = ("metadata.hdf5", "metadata_reordered.hdf5", "ivf_old_to_new_mapping.npy")


def index_file(kind: str, ordinal: int | None = None) -> str:
    """Path of a kind's index inside the index folder: `image.index`, or `image/knn_00003.index` for part 3."""
    prefix = INDEX_PREFIX[kind]
    return f"{prefix}.index" if ordinal is None else f"{prefix}/knn_{ordinal:05d}.index"


def infos_file(index_rel: str) -> str:
    """autofaiss's infos beside an index: image.index -> image.json, image.index1 -> image.json1."""
    head, dot, tail = index_rel.rpartition(".index")
    return f"{head}.json{tail}" if dot else index_rel + ".json"


def npy_header(fh: IO[bytes]) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) of an open .npy file, leaving fh at the first row: sizes without reading the array."""
    version = np.lib.format.read_magic(fh)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, fortran, dtype = read(fh)
    if fortran and len(shape) > 1:
        raise ValueError(f"Fortran-ordered array of shape {shape}: rows are not contiguous")
    return tuple(int(n) for n in shape), dtype
