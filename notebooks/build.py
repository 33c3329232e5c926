"""Write the inspection notebooks (`python notebooks/build.py`); the .ipynb files are its output.

Each notebook reads one pipeline output root, `CRAWLPAIRS_OUT` (default: the
`demo-out/` that `make demo` writes), with pyarrow/pandas only (no Spark), and
prints "stage X not run" for a stage whose output is missing instead of failing.
The cells only call `crawlpairs/notebook.py` (the shared code: importable, linted,
tested); they are kept here so that diffs are readable and outputs are never committed
(CI executes them, see tests/notebooks/).
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

SETUP = r'''
%matplotlib inline
import os

import matplotlib.pyplot as plt
import pandas as pd

from crawlpairs.notebook import Outputs, bar, grid, hist, top  # the shared code (crawlpairs/notebook.py)

out = Outputs()  # CRAWLPAIRS_OUT (a local path or s3://), else ../demo-out
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
cand = out.read("candidates")
out.show_stats("candidates")
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
dedup = out.read("deduped", columns=["uid", "url", "crawl", "language"])
stats = out.show_stats("deduped")
if dedup is not None and cand is not None:
    print(f"kept {len(dedup):,} of {len(cand):,} candidates ({len(dedup) / max(1, len(cand)):.1%})")
    if "crawl" in dedup and "crawl" in cand:
        display(pd.DataFrame({"candidates": cand["crawl"].value_counts(),
                              "deduped": dedup["crawl"].value_counts()}).fillna(0).astype(int))
if stats and stats.get("dropped"):
    drops = pd.Series(stats["dropped"], dtype="int64").sort_values()
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
imgs = out.read("images")
out.show_stats("images")
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
GRID = int(os.environ.get("CRAWLPAIRS_NB_GRID", "16"))
shards, samples = out.samples("images", GRID)
if not shards:
    print("stage images not run (no .tar shards)")
else:
    print(f"{shards} shards, showing {len(samples)} samples")
    if samples:
        grid(samples)
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
scored = out.read("scored")
out.show_stats("scored")
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
shapes = out.npy_shapes("embeddings")  # sizes from the headers, not the arrays
if shapes is None:
    print("stage embeddings not run (no .npy under embeddings/)")
else:
    display(shapes)
"""),
    ]


def knn_notebook():
    return [
        md("""
# kNN query

Top-k neighbours from `OUT/index` through `crawlpairs.udfs.index.knn.query` (the function
`crawlpairs query` uses). With a CLIP model recorded in the index, a text query;
otherwise the first image embedding queries its own neighbours. Skipped when the index
(or faiss) is absent.
"""),
        code(SETUP),
        code("""
QUERY_TEXT = os.environ.get("CRAWLPAIRS_NB_QUERY", "a photo of a dog")
K = int(os.environ.get("CRAWLPAIRS_NB_K", "8"))
hits = None
if not out.exists("index", "index_info.json"):
    print(f"stage index not run (no {out.out}/index/index_info.json)")
else:
    try:
        from crawlpairs.udfs.index import knn
    except ImportError as exc:
        knn = None
        print(f"kNN query skipped: {exc} (install crawlpairs[index])")
    if knn is not None:
        try:
            index = knn.open_index(out.out + "/index")  # reads index_info.json (with the CLIP model it records)
            clip = index.info.get("clip") or {}
            if clip.get("model"):
                print(f"text query {QUERY_TEXT!r} with {clip['model']}")
                hits = knn.query(index, text=QUERY_TEXT, k=K)
            else:
                vector = out.first_vector("embeddings")
                if vector is None:
                    print("no CLIP model recorded and no embeddings to query with: skipped")
                else:
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
