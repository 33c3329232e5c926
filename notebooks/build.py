"""Write the inspection notebooks (`python notebooks/build.py`); the .ipynb files are its output.

Each notebook reads one pipeline output root, `CRAWLPAIRS_OUT` (default: the
`demo-out/` that `make demo` writes), with pyarrow/pandas only (no Spark), and
prints "stage X not run" for a stage whose output is missing instead of failing.
They are kept as code here so that the shared helper cell is written once, diffs
are readable, and outputs are never committed (CI executes them, see
tests/notebooks/).
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

SETUP = r'''
%matplotlib inline
import io, json, os, posixpath, tarfile
from pathlib import Path

import fsspec
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import matplotlib.pyplot as plt

# The output root of a pipeline run: a local path or s3:// (S3 endpoint from AWS_ENDPOINT_URL).
OUT = os.environ.get("CRAWLPAIRS_OUT") or str((Path.cwd().parent / "demo-out").resolve())
MAX_FILES = int(os.environ.get("CRAWLPAIRS_NB_MAX_FILES", "200"))  # Parquet files read per stage
fs, ROOT = fsspec.core.url_to_fs(OUT)
pd.set_option("display.max_colwidth", 80)
print("output root:", OUT, "" if fs.exists(ROOT) else "(does not exist)")


def stage_path(stage):
    return posixpath.join(ROOT, stage)


def stage_files(stage, suffix=".parquet"):
    """Data files under OUT/<stage>, skipping _hidden and .hidden files and folders."""
    base = stage_path(stage)
    try:
        found = fs.find(base) if fs.isdir(base) else []
    except FileNotFoundError:
        found = []
    keep = []
    for path in found:
        rel = posixpath.relpath(path, base)
        if path.endswith(suffix) and not any(p.startswith(("_", ".")) for p in rel.split("/")):
            keep.append(path)
    return sorted(keep)


def read_stage(stage, columns=None):
    """A stage's Parquet as one DataFrame (hive partitions become columns), or None if not run."""
    files = stage_files(stage)
    if not files:
        print(f"stage {stage} not run (no Parquet under {posixpath.join(OUT, stage)})")
        return None
    if len(files) > MAX_FILES:
        print(f"{stage}: reading the first {MAX_FILES} of {len(files)} files (CRAWLPAIRS_NB_MAX_FILES)")
        files = files[:MAX_FILES]
    tables, bad = [], 0
    for path in files:
        try:
            table = pq.read_table(path, filesystem=fs)
        except Exception as exc:  # a broken file is reported, not fatal
            bad += 1
            print(f"  skipped unreadable {path}: {exc.__class__.__name__}")
            continue
        rel = posixpath.relpath(posixpath.dirname(path), stage_path(stage))
        for part in ([] if rel == "." else rel.split("/")):
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


def stage_stats(stage):
    """OUT/<stage>/_stats.json (or OUT/<stage>_meta/_stats.json, beside a data-only folder) as a dict, or None."""
    path = posixpath.join(stage_path(stage), "_stats.json")
    if not fs.exists(path):
        path = posixpath.join(stage_path(stage) + "_meta", "_stats.json")
    if not fs.exists(path):
        return None
    with fs.open(path, "rb") as fh:
        return json.load(fh)


def show_stats(stage):
    """Print a stage's _stats.json (time, counts, drops, errors); returns it (or None) for further use."""
    st = stage_stats(stage)
    if st is None:
        print(f"stage {stage}: no _stats.json")
        return None
    print(f"{stage}: {st.get('seconds', '?')} s, version {st.get('version', '?')}")
    for key in ("counts", "dropped", "errors"):
        value = st.get(key)
        if value:
            print(f"  {key}:", json.dumps({k: v for k, v in value.items() if not isinstance(v, (list, dict))}
                                          if isinstance(value, dict) else value, sort_keys=True)[:1500])
    return st


def top(series, n=20, name="rows"):
    counts = series.fillna("(none)").astype(str).value_counts()
    frame = counts.head(n).rename(name).to_frame()
    frame["share"] = (frame[name] / counts.sum()).round(3)
    return frame


def bar(series, title, n=20):
    counts = series.fillna("(none)").astype(str).value_counts().head(n)
    if counts.empty:
        print(f"{title}: nothing to plot")
        return
    ax = counts[::-1].plot.barh(figsize=(7, 0.25 * len(counts) + 1), title=title)
    ax.set_xlabel("rows")
    plt.tight_layout()
    plt.show()


def hist(values, title, bins=40, xlabel=None):
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
'''.strip()


def md(text: str):
    return new_markdown_cell(text.strip())


def code(text: str):
    return new_code_cell(text.strip())


def candidates_notebook():
    return [
        md("""
# Candidates and dedup

What `extract` found (`OUT/candidates`) and what `dedup` kept (`OUT/deduped`): counts by
crawl, languages, domains, caption lengths, licenses, and the drop reasons from each
stage's `_stats.json`. Set `CRAWLPAIRS_OUT` to inspect another run (local path or `s3://`).
"""),
        code(SETUP),
        md("## Extract: candidates"),
        code("""
cand = read_stage("candidates")
show_stats("candidates")
if cand is not None:
    display(cand.head(5))
"""),
        code("""
if cand is not None:
    by_crawl = cand.groupby(cand["crawl"].fillna("(none)") if "crawl" in cand else pd.Series("(none)", cand.index))
    summary = by_crawl.agg(rows=("uid", "size") if "uid" in cand else ("url", "size"))
    if "url" in cand:
        summary["distinct_urls"] = by_crawl["url"].nunique()
    if "page_url" in cand:
        summary["pages"] = by_crawl["page_url"].nunique()
    display(summary)
"""),
        md("### Languages"),
        code("""
if cand is not None and "language" in cand:
    display(top(cand["language"], 20))
    bar(cand["language"], "languages (top 20)")
    if "language_score" in cand:
        hist(cand["language_score"], "language_score")
else:
    print("no language column")
"""),
        md("### Domains"),
        code("""
if cand is not None:
    for col in ("page_domain", "image_domain"):
        if col in cand:
            print(f"{col}: {cand[col].nunique():,} distinct")
            display(top(cand[col], 15))
"""),
        md("### Caption length"),
        code("""
if cand is not None and "text" in cand:
    lengths = cand["text"].fillna("").str.len()
    display(lengths.describe().to_frame("characters").T)
    hist(lengths.clip(upper=300), "caption length (chars, clipped at 300)", bins=60)
    if "text_source" in cand:
        display(top(cand["text_source"], 10))
"""),
        md("### Licenses"),
        code("""
if cand is not None and "license" in cand:
    display(top(cand["license"], 15))
    if "license_url" in cand:
        licensed = cand[cand["license"].notna()]
        display(licensed[["page_url", "license", "license_url"]].drop_duplicates().head(10))
"""),
        md("## Dedup: deduped"),
        code("""
dedup = read_stage("deduped", columns=["uid", "url", "crawl", "language"])
st = show_stats("deduped")
if dedup is not None and cand is not None:
    print(f"kept {len(dedup):,} of {len(cand):,} candidates ({len(dedup) / max(1, len(cand)):.1%})")
    if "crawl" in dedup and "crawl" in cand:
        display(pd.DataFrame({"candidates": cand["crawl"].value_counts(),
                              "deduped": dedup["crawl"].value_counts()}).fillna(0).astype(int))
if st and st.get("dropped"):
    drops = pd.Series(st["dropped"], dtype="int64").sort_values()
    drops.plot.barh(title="dedup drops by reason", figsize=(7, 0.3 * len(drops) + 1))
    plt.tight_layout()
    plt.show()
"""),
    ]


def images_notebook():
    return [
        md("""
# Downloads

`OUT/images`: the per-shard Parquet (one row per URL with `status` and `error_message`),
the download stage's stats, and a grid of thumbnails read straight from the tar shards.
"""),
        code(SETUP),
        code("""
imgs = read_stage("images")
show_stats("images")
if imgs is not None and "status" in imgs:
    display(top(imgs["status"], 10))
    bar(imgs["status"], "download status")
"""),
        md("### Errors"),
        code("""
if imgs is not None and "error_message" in imgs:
    errors = imgs["error_message"].dropna()
    if errors.empty:
        print("no errors")
    else:
        kinds = errors.astype(str).str.split(":").str[0].str.slice(0, 60)
        display(top(kinds, 15, "errors"))
"""),
        md("### Sizes"),
        code("""
if imgs is not None:
    for col in ("width", "height", "original_width", "original_height"):
        if col in imgs:
            hist(imgs[col], col, bins=30)
"""),
        md("### Image grid (first shards)"),
        code("""
from PIL import Image

IMAGE_EXT = (".jpg", ".jpeg", ".png", ".webp")
GRID = int(os.environ.get("CRAWLPAIRS_NB_GRID", "16"))


def samples_from_tars(tars, limit):
    # tar members are grouped by key: key.jpg + key.txt (+ key.json)
    out = []
    for tar_path in tars:
        try:
            with fs.open(tar_path, "rb") as fh, tarfile.open(fileobj=fh, mode="r|*") as tf:
                pending = {}
                for member in tf:
                    if not member.isfile():
                        continue
                    key, ext = posixpath.splitext(member.name)
                    data = tf.extractfile(member).read()
                    pending.setdefault(key, {})[ext.lower()] = data
                    entry = pending[key]
                    if any(e in entry for e in IMAGE_EXT) and ".txt" in entry:
                        img = next(entry[e] for e in IMAGE_EXT if e in entry)
                        out.append((key, img, entry[".txt"].decode("utf-8", "replace")))
                        del pending[key]
                        if len(out) >= limit:
                            return out
        except (tarfile.TarError, OSError, EOFError) as exc:  # a damaged shard: keep what was read
            print(f"  {tar_path}: {exc.__class__.__name__}, {len(out)} samples so far")
    return out


tars = stage_files("images", suffix=".tar")
if not tars:
    print("stage images not run (no .tar shards)")
else:
    samples = samples_from_tars(tars, GRID)
    print(f"{len(tars)} shards, showing {len(samples)} samples")
    if samples:
        cols = 4
        rows = (len(samples) + cols - 1) // cols
        fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 3.2 * rows))
        for ax in np.ravel(axes):
            ax.axis("off")
        for ax, (key, data, text) in zip(np.ravel(axes), samples):
            try:
                im = Image.open(io.BytesIO(data))
                im.thumbnail((256, 256))
                ax.imshow(im)
            except Exception as exc:
                ax.text(0.5, 0.5, f"undecodable\\n{exc.__class__.__name__}", ha="center")
            ax.set_title(text[:40], fontsize=8)
        plt.tight_layout()
        plt.show()
"""),
    ]


def scores_notebook():
    return [
        md("""
# Scores

`OUT/scored`: CLIP image-text similarity, NSFW (`punsafe`), watermark (`pwatermark`) and
aesthetic scores, and `OUT/embeddings` (clip-retrieval layout: `img_emb/`, `text_emb/`,
`metadata/`).
"""),
        code(SETUP),
        code("""
scored = read_stage("scored")
show_stats("scored")
SCORE_COLUMNS = ("similarity", "punsafe", "pwatermark", "aesthetic")
if scored is not None:
    present = [c for c in SCORE_COLUMNS if c in scored]
    missing = [c for c in SCORE_COLUMNS if c not in scored]
    if missing:
        print("not scored in this run:", ", ".join(missing))
    if present:
        display(scored[present].describe().T)
"""),
        code("""
if scored is not None:
    for col in SCORE_COLUMNS:
        if col in scored and scored[col].notna().any():
            hist(scored[col], col)
"""),
        md("### Similarity by language"),
        code("""
if scored is not None and {"similarity", "language"} <= set(scored.columns):
    by_lang = scored.groupby(scored["language"].fillna("(none)"))["similarity"]
    display(by_lang.describe()[["count", "mean", "50%"]].sort_values("count", ascending=False).head(15))
"""),
        md("### Embeddings"),
        code("""
emb_files = stage_files("embeddings", suffix=".npy")
if not emb_files:
    print("stage embeddings not run (no .npy under embeddings/)")
else:
    from crawlpairs.udfs.knn_files import npy_header  # sizes from the header, not the array

    rows = []
    for path in emb_files[:50]:
        with fs.open(path, "rb") as fh:
            shape, dtype = npy_header(fh)
        rows.append({"file": posixpath.relpath(path, ROOT), "rows": shape[0],
                     "dim": shape[1] if len(shape) > 1 else None, "dtype": str(dtype)})
    display(pd.DataFrame(rows))
"""),
    ]


def knn_notebook():
    return [
        md("""
# kNN query

Top-k neighbours from `OUT/index` through `crawlpairs.udfs.knn.query` (the function
`crawlpairs query` uses). With a CLIP model recorded in the index, a text query;
otherwise the first image embedding queries its own neighbours. Skipped when the index
(or faiss) is absent.
"""),
        code(SETUP),
        code("""
QUERY_TEXT = os.environ.get("CRAWLPAIRS_NB_QUERY", "a photo of a dog")
K = int(os.environ.get("CRAWLPAIRS_NB_K", "8"))
index_uri = posixpath.join(OUT, "index")
info_path = posixpath.join(ROOT, "index", "index_info.json")
hits = None
if not fs.exists(info_path):
    print(f"stage index not run (no {posixpath.join(OUT, 'index', 'index_info.json')})")
else:
    try:
        from crawlpairs.udfs import knn
    except ImportError as exc:
        knn = None
        print(f"kNN query skipped: {exc} (install crawlpairs[index])")
    if knn is not None:
        try:
            index = knn.open_index(index_uri)  # reads index_info.json (with the CLIP model it records)
            clip = index.info.get("clip") or {}
            if clip.get("model"):
                print(f"text query {QUERY_TEXT!r} with {clip['model']}")
                hits = knn.query(index, text=QUERY_TEXT, k=K)
            else:
                emb = stage_files("embeddings", suffix=".npy")
                emb = [p for p in emb if "img_emb" in p] or emb
                if not emb:
                    print("no CLIP model recorded and no embeddings to query with: skipped")
                else:
                    from crawlpairs.udfs.knn_files import npy_header

                    with fs.open(emb[0], "rb") as fh:  # only the first row, not the whole part
                        shape, dtype = npy_header(fh)
                        vector = np.frombuffer(fh.read(int(np.prod(shape[1:])) * dtype.itemsize), dtype=dtype)
                    print("no CLIP model recorded: querying with the first image embedding")
                    hits = knn.query(index, vector=vector, k=K)
        except Exception as exc:  # a missing model or faiss build: the notebook goes on
            print(f"kNN query failed: {exc.__class__.__name__}: {exc}")
"""),
        code("""
if hits:
    frame = pd.DataFrame(hits)
    display(frame[[c for c in ("rank", "score", "url", "text", "similarity") if c in frame]])
"""),
    ]


NOTEBOOKS = {
    "01_candidates.ipynb": candidates_notebook,
    "02_images.ipynb": images_notebook,
    "03_scores.ipynb": scores_notebook,
    "04_knn.ipynb": knn_notebook,
}


def build(out: Path = HERE) -> list[Path]:
    written = []
    for name, cells in NOTEBOOKS.items():
        nb = new_notebook(cells=cells(), metadata={
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
            "language_info": {"name": "python"},
        })
        for i, cell in enumerate(nb.cells):  # stable ids: regenerating gives identical files
            cell["id"] = f"{Path(name).stem}-{i:02d}"
        nbformat.validate(nb)
        path = out / name
        path.write_text(nbformat.writes(nb) + "\n", encoding="utf-8")
        written.append(path)
    return written


if __name__ == "__main__":
    for p in build(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE):
        print(p)
