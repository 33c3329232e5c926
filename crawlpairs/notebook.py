"""What the inspection notebooks (`notebooks/*.ipynb`) call: a run's outputs read without Spark.

One `Outputs` per pipeline root (a local path or `s3://`), pyarrow/pandas only, so a notebook
on a laptop opens what a cluster wrote. A missing stage prints "stage X not run" and gives
None instead of failing: a notebook over a partial run still shows what is there. The cells
in `notebooks/build.py` only call these functions; the code lives here so ruff and the tests
see it.
"""

from __future__ import annotations

import json
import os
import posixpath
import tarfile
from pathlib import Path

import fsspec
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from crawlpairs.layout import meta_dir
from crawlpairs.udfs.index.files import npy_header

IMAGE_EXT = (".jpg", ".jpeg", ".png", ".webp")


class Outputs:
    """A pipeline output root: `CRAWLPAIRS_OUT`, else the `demo-out/` beside the notebooks' folder."""

    def __init__(self, out: str | None = None, max_files: int | None = None) -> None:
        self.out = out or os.environ.get("CRAWLPAIRS_OUT") or str((Path.cwd().parent / "demo-out").resolve())
        # Parquet files read per stage: a notebook looks at a sample, not a whole crawl
        self.max_files = max_files or int(os.environ.get("CRAWLPAIRS_NB_MAX_FILES", "200"))
        self.fs, self.root = fsspec.core.url_to_fs(self.out)
        print("output root:", self.out, "" if self.fs.exists(self.root) else "(does not exist)")

    def path(self, stage: str) -> str:
        return posixpath.join(self.root, stage)

    def exists(self, *parts: str) -> bool:
        return self.fs.exists(posixpath.join(self.root, *parts))

    def files(self, stage: str, suffix: str = ".parquet") -> list[str]:
        """Data files under OUT/<stage>, skipping _hidden and .hidden files and folders."""
        base = self.path(stage)
        try:
            found = self.fs.find(base) if self.fs.isdir(base) else []
        except FileNotFoundError:
            found = []
        keep = []
        for path in found:
            rel = posixpath.relpath(path, base)
            if path.endswith(suffix) and not any(p.startswith(("_", ".")) for p in rel.split("/")):
                keep.append(path)
        return sorted(keep)

    def read(self, stage: str, columns: list[str] | None = None) -> pd.DataFrame | None:
        """A stage's Parquet as one DataFrame (hive partitions become columns), or None if not run."""
        files = self.files(stage)
        if not files:
            print(f"stage {stage} not run (no Parquet under {posixpath.join(self.out, stage)})")
            return None
        if len(files) > self.max_files:
            print(f"{stage}: reading the first {self.max_files} of {len(files)} files (CRAWLPAIRS_NB_MAX_FILES)")
            files = files[: self.max_files]
        tables, bad = [], 0
        for path in files:
            try:
                table = pq.read_table(path, filesystem=self.fs)
            except Exception as exc:  # a broken file is reported, not fatal
                bad += 1
                print(f"  skipped unreadable {path}: {exc.__class__.__name__}")
                continue
            rel = posixpath.relpath(posixpath.dirname(path), self.path(stage))
            for part in [] if rel == "." else rel.split("/"):
                if "=" in part:
                    key, value = part.split("=", 1)
                    if key not in table.column_names:
                        table = table.append_column(key, pa.array([value] * table.num_rows, pa.string()))
            tables.append(table)
        if not tables:
            print(f"stage {stage}: no readable Parquet ({bad} broken files)")
            return None
        df = pa.concat_tables(tables, promote_options="permissive").to_pandas()
        if columns:
            df = df[[c for c in columns if c in df.columns]]
        print(f"{stage}: {len(df):,} rows from {len(tables)} files" + (f", {bad} unreadable" if bad else ""))
        return df

    def stats(self, stage: str) -> dict | None:
        """The folder's `_stats.json` (in `<folder>_meta/`, or inside the folder for older outputs), or None."""
        for path in (posixpath.join(meta_dir(self.path(stage)), "_stats.json"),
                     posixpath.join(self.path(stage), "_stats.json")):
            if self.fs.exists(path):
                with self.fs.open(path, "rb") as fh:
                    return json.load(fh)
        return None

    def show_stats(self, stage: str) -> dict | None:
        """Print a stage's _stats.json (time, counts, drops, errors); returns it (or None) for further use."""
        doc = self.stats(stage)
        if doc is None:
            print(f"stage {stage}: no _stats.json")
            return None
        print(f"{stage}: {doc.get('seconds', '?')} s, version {doc.get('version', '?')}")
        for key in ("counts", "dropped", "errors"):
            value = doc.get(key)
            if value:
                flat = {k: v for k, v in value.items() if not isinstance(v, (list, dict))} if isinstance(value, dict) else value
                print(f"  {key}:", json.dumps(flat, sort_keys=True)[:1500])
        return doc

    def samples(self, stage: str, limit: int) -> tuple[int, list[tuple[str, bytes, str]]]:
        """(shards, up to `limit` (key, image bytes, caption)) streamed from the first tar shards.

        Members are grouped by key (key.jpg + key.txt); a damaged shard keeps what was read.
        """
        tars = self.files(stage, suffix=".tar")
        out: list[tuple[str, bytes, str]] = []
        for tar_path in tars:
            try:
                with self.fs.open(tar_path, "rb") as fh, tarfile.open(fileobj=fh, mode="r|*") as tf:
                    pending: dict[str, dict[str, bytes]] = {}
                    for member in tf:
                        if not member.isfile():
                            continue
                        key, ext = posixpath.splitext(member.name)
                        entry = pending.setdefault(key, {})
                        entry[ext.lower()] = tf.extractfile(member).read()
                        if any(e in entry for e in IMAGE_EXT) and ".txt" in entry:
                            img = next(entry[e] for e in IMAGE_EXT if e in entry)
                            out.append((key, img, entry[".txt"].decode("utf-8", "replace")))
                            del pending[key]
                            if len(out) >= limit:
                                return len(tars), out
            except (tarfile.TarError, OSError, EOFError) as exc:
                print(f"  {tar_path}: {exc.__class__.__name__}, {len(out)} samples so far")
        return len(tars), out

    def npy_shapes(self, stage: str, limit: int = 50) -> pd.DataFrame | None:
        """Rows, dim and dtype of each `.npy` part, from its header (the arrays are not read)."""
        paths = self.files(stage, suffix=".npy")
        if not paths:
            return None
        rows = []
        for path in paths[:limit]:
            with self.fs.open(path, "rb") as fh:
                shape, dtype = npy_header(fh)
            rows.append({"file": posixpath.relpath(path, self.root), "rows": shape[0],
                         "dim": shape[1] if len(shape) > 1 else None, "dtype": str(dtype)})
        return pd.DataFrame(rows)

    def first_vector(self, stage: str) -> np.ndarray | None:
        """The first row of the first image-embedding part (else any part): a query that hits itself."""
        paths = self.files(stage, suffix=".npy")
        paths = [p for p in paths if "img_emb" in p] or paths
        if not paths:
            return None
        with self.fs.open(paths[0], "rb") as fh:  # only the first row, not the whole part
            shape, dtype = npy_header(fh)
            return np.frombuffer(fh.read(int(np.prod(shape[1:])) * dtype.itemsize), dtype=dtype)


def top(series: pd.Series, n: int = 20, name: str = "rows") -> pd.DataFrame:
    """The n most common values with their share of all rows (None shown as "(none)")."""
    counts = series.fillna("(none)").astype(str).value_counts()
    frame = counts.head(n).rename(name).to_frame()
    frame["share"] = (frame[name] / counts.sum()).round(3)
    return frame


def bar(series: pd.Series, title: str, n: int = 20) -> None:
    import matplotlib.pyplot as plt

    counts = series.fillna("(none)").astype(str).value_counts().head(n)
    if counts.empty:
        print(f"{title}: nothing to plot")
        return
    ax = counts[::-1].plot.barh(figsize=(7, 0.25 * len(counts) + 1), title=title)
    ax.set_xlabel("rows")
    plt.tight_layout()
    plt.show()


def hist(values, title: str, bins: int = 40, xlabel: str | None = None) -> None:
    import matplotlib.pyplot as plt

    values = pd.to_numeric(pd.Series(values), errors="coerce").dropna()
    if values.empty:
        print(f"{title}: no values")
        return
    fig, ax = plt.subplots(figsize=(7, 3))
    ax.hist(values, bins=bins)
    ax.set_title(f"{title} (n={len(values):,}, median={values.median():.3g})")
    ax.set_xlabel(xlabel or title)
    plt.tight_layout()
    plt.show()


def grid(samples: list[tuple[str, bytes, str]], cols: int = 4) -> None:
    """Thumbnails with their captions; an undecodable image is shown as such, not skipped."""
    import io

    import matplotlib.pyplot as plt
    from PIL import Image

    rows = (len(samples) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 3.2 * rows))
    for ax in np.ravel(axes):
        ax.axis("off")
    for ax, (_key, data, text) in zip(np.ravel(axes), samples, strict=False):  # axes >= samples
        try:
            im = Image.open(io.BytesIO(data))
            im.thumbnail((256, 256))
            ax.imshow(im)
        except Exception as exc:
            ax.text(0.5, 0.5, f"undecodable\n{exc.__class__.__name__}", ha="center")
        ax.set_title(text[:40], fontsize=8)
    plt.tight_layout()
    plt.show()
