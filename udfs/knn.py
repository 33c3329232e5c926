"""The kNN API notebooks and scripts import (`from crawlpairs.udfs import knn`).

Only names: building is `knn_build`, querying `knn_query`, the index folder's file names
`knn_files`. Kept so that `knn.query(...)`, `knn.build(...)` read the same everywhere.
"""

from __future__ import annotations

from crawlpairs.udfs.knn_build import IndexBuildError, build
from crawlpairs.udfs.knn_files import INFO_NAME, KINDS
from crawlpairs.udfs.knn_query import KnnIndex, open_index, query, query_df

__all__ = ["INFO_NAME", "KINDS", "IndexBuildError", "KnnIndex", "build", "open_index", "query", "query_df"]
