"""The kNN API notebooks and scripts import (`from crawlpairs.udfs.index import knn`).

Only names: building is `index/build.py`, querying `index/query.py`, the index folder's file
names `index/files.py`. Kept so that `knn.query(...)`, `knn.build(...)` read the same everywhere.
"""

from __future__ import annotations

from crawlpairs.udfs.index.build import IndexBuildError, build
from crawlpairs.udfs.index.files import INFO_NAME, KINDS
from crawlpairs.udfs.index.query import KnnIndex, open_index, query, query_df

__all__ = ["INFO_NAME", "KINDS", "IndexBuildError", "KnnIndex", "build", "open_index", "query", "query_df"]
