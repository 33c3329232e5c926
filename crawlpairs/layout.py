"""Where each stage's data and bookkeeping live under a run's root: one definition.

A stage's data folder holds data only (Parquet, tar), so every reader that globs it — DuckDB's
`read_parquet('scored/**')`, HF `datasets`, img2dataset, webdataset, a notebook — reads rows and
nothing else. Manifests, plans, per-shard work and `_stats.json` live in the sibling
`<folder>_meta/` (`candidates_meta/`, `deduped_meta/`, `images_meta/`, `scored_meta/`, ...).
"""

from __future__ import annotations

from crawlpairs import storage

META_SUFFIX = "_meta"
# stage -> its data folder under a run's root (the stages that write rows)
DATA_FOLDER = {"extract": "candidates", "dedup": "deduped", "download": "images", "score": "scored",
               "publish": "dataset"}


def meta_dir(data_dir: str) -> str:
    """`<root>/candidates` -> `<root>/candidates_meta` (a folder name or a full URI)."""
    return data_dir.rstrip("/") + META_SUFFIX


def stats_uri(root: str, stage: str) -> str:
    """A stage's `_stats.json` under a run's root."""
    return storage.join(root, meta_dir(DATA_FOLDER[stage]), "_stats.json")


def stage_stats(root: str, st) -> dict[str, dict]:
    """stage -> its `_stats.json` document, for the stages that ran under `root`.

    Falls back to `<folder>/_stats.json`, where outputs of older versions kept it.
    """
    found = {}
    for stage, folder in DATA_FOLDER.items():
        for where in (stats_uri(root, stage), storage.join(root, folder, "_stats.json")):
            if storage.exists(where, st):
                found[stage] = storage.read_json(where, st)
                break
    return found
