"""`crawlpairs query --index OUT/index --text "..." [-k 20]`: top-k url, text, similarity.

No Spark: one process loads the index (fetched once from s3:// into a local cache), the
CLIP model recorded at build time for --text / --image, and prints one JSON line per
hit (or a table with --table). Notebooks call `crawlpairs.udfs.index.knn.query` (knn_query) directly.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

import numpy as np

from crawlpairs import storage
from crawlpairs.stage import Context, Stage, UsageError, exit_process, main
from crawlpairs.udfs.index import query as knn_query
from crawlpairs.udfs.index.files import INFO_NAME
from crawlpairs.udfs.index.query import open_index, query, query_df  # noqa: F401 - entry points for callers


class QueryStage(Stage):
    name = "query"
    section = None
    uses_spark = False
    input_required = False
    write_stats = False
    help = "top-k search of an index by text, image or raw vector"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--index", required=True, metavar="URI", help="index folder (local or s3://)")
        parser.add_argument("--text", default=None, help="text query (CLIP text encoder)")
        parser.add_argument("--image", default=None, metavar="FILE", help="image query (path or URI)")
        parser.add_argument("--vector", default=None, metavar="V",
                            help="raw query vector: a .npy file (first row) or comma-separated floats")
        parser.add_argument("-k", type=int, default=20, help="number of hits (default 20)")
        parser.add_argument("--kind", default=None, help="which index: img_emb (default) or text_emb")
        parser.add_argument("--table", action="store_true", help="print a table instead of JSON lines")
        parser.add_argument("--mmap", action="store_true",
                            help="memory-map the index instead of loading it (indices built memory-mappable)")

    def run(self, ctx: Context) -> None:
        a = ctx.args
        given = [x for x in (a.text, a.image, a.vector) if x is not None]
        if len(given) != 1:
            raise UsageError("--text, --image, --vector: give exactly one")
        if a.k < 1:
            raise UsageError(f"-k {a.k}: must be at least 1")
        st = ctx.cfg.storage
        if not storage.exists(storage.join(a.index, INFO_NAME), st):
            raise UsageError(f"--index {a.index}: no {INFO_NAME} there (build it with `crawlpairs index`)")
        try:
            logging.getLogger("faiss.loader").setLevel(logging.WARNING)
            idx = knn_query.open_index(a.index, kind=a.kind, storage=st, mmap=a.mmap)
            vector = _parse_vector(a.vector) if a.vector is not None else None
            hits = knn_query.query(idx, text=a.text, image=a.image, vector=vector, k=a.k)
        except FileNotFoundError as exc:
            raise UsageError(f"--image {a.image}: {exc}") from None
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        ctx.stats.incr("hits", len(hits))
        if a.table:
            print(_table(hits))
        else:
            for hit in hits:
                print(json.dumps(hit, ensure_ascii=False, default=str))
        sys.stdout.flush()

    def summary(self, ctx: Context) -> str:
        return f"query: {ctx.stats.counts.get('hits', 0)} hits"


def _parse_vector(value: str) -> np.ndarray:
    if value.endswith(".npy"):
        try:
            arr = np.load(value)
        except (OSError, ValueError) as exc:
            raise UsageError(f"--vector {value}: {exc}") from None
        return arr[0] if arr.ndim == 2 else arr
    try:
        return np.array([float(x) for x in value.split(",") if x.strip()], dtype=np.float32)
    except ValueError:
        raise UsageError(f"--vector {value[:40]}: not a .npy file or comma-separated floats") from None


def _table(hits: list[dict]) -> str:
    lines = [f"{'rank':>4}  {'score':>7}  {'similarity':>10}  url | text"]
    for h in hits:
        sim = h.get("similarity")
        sim_s = f"{sim:10.3f}" if isinstance(sim, float) else f"{'':10}"
        text = str(h.get("text", "")).replace("\n", " ")[:80]
        lines.append(f"{h['rank']:>4}  {h['score']:7.4f}  {sim_s}  {h.get('url', '')} | {text}")
    return "\n".join(lines)


if __name__ == "__main__":
    exit_process(main(QueryStage))
