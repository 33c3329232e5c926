"""Writing pipeline output roots for the notebook tests, and running a notebook on one."""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from crawlpairs.udfs.extract.candidates import make_uid

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
CRAWLS = ("CC-MAIN-2024-33", "CC-MAIN-2024-38")
LANGS = ("en", "de", "fr", "es", None)
LICENSES = (None, None, None, "by", "by-sa", "cc0")


def execute(name: str, out: str | Path, tmp_path: Path) -> list[dict]:
    """Run a notebook against `out` with nbclient (a real kernel); returns every cell output."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    saved = os.environ.get("CRAWLPAIRS_OUT")
    os.environ["CRAWLPAIRS_OUT"] = str(out)
    try:
        NotebookClient(nb, timeout=180, kernel_name="python3",
                       resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    finally:
        if saved is None:
            os.environ.pop("CRAWLPAIRS_OUT", None)
        else:
            os.environ["CRAWLPAIRS_OUT"] = saved
    (tmp_path / name).write_text(nbformat.writes(nb))  # kept for a look when a test fails
    return [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]


def text_of(outputs: list[dict]) -> str:
    parts = []
    for o in outputs:
        if o.get("output_type") == "stream":
            parts.append(o["text"])
        elif "data" in o:
            parts.append(o["data"].get("text/plain", ""))
            parts.append(o["data"].get("text/html", ""))
    return "\n".join(parts)


def images_in(outputs: list[dict]) -> int:
    return sum(1 for o in outputs if "image/png" in o.get("data", {}))


def write_candidates(out: Path, shared_data: Path, n: int = 300) -> pa.Table:
    """candidates/ in the documented schema, real captions, partitioned by crawl like extract writes it."""
    caps = pq.read_table(shared_data / "captions" / "test_10000.parquet").slice(0, n).to_pylist()
    rows = []
    for i, c in enumerate(caps):
        url, text = c["URL"], c["TEXT"] or ""
        page = f"https://site{i % 17}.example.org/page/{i // 3}"
        rows.append({
            "uid": make_uid(url, text),
            "url": url, "text": text, "text_source": "alt" if i % 5 else "title",
            "page_url": page, "page_domain": urlsplit(page).hostname,
            "image_domain": urlsplit(url).hostname, "language": LANGS[i % len(LANGS)],
            "language_score": round(0.5 + (i % 50) / 100, 2), "license": LICENSES[i % len(LICENSES)],
            "license_url": "https://creativecommons.org/licenses/by/4.0/" if LICENSES[i % len(LICENSES)] else None,
            "crawl": CRAWLS[i % 2], "source_file": f"crawl-data/{CRAWLS[i % 2]}/wat/{i % 3}.warc.wat.gz",
            "source_offset": i * 1000, "fetch_time": "2024-08-10T12:00:00Z",
        })
    table = pa.Table.from_pylist(rows)
    pq.write_to_dataset(table, out / "candidates", partition_cols=["crawl"])
    (out / "candidates_meta").mkdir(exist_ok=True)
    (out / "candidates_meta" / "_stats.json").write_text(json.dumps(
        {"stage": "extract", "version": "0.1.0", "seconds": 1.0, "counts": {"rows_out": n},
         "dropped": {"text_too_short": 12}, "errors": {}}))
    return table


def write_later_stages(out: Path, shared_data: Path, cand: pa.Table) -> None:
    """deduped/, images/ (tar + Parquet shard), scored/, embeddings/ in the layouts the stages write."""
    from PIL import Image

    kept = cand.slice(0, 200)
    pq.write_to_dataset(kept, out / "deduped", partition_cols=["crawl"])
    (out / "deduped_meta").mkdir(exist_ok=True)
    (out / "deduped_meta" / "_stats.json").write_text(json.dumps(
        {"stage": "dedup", "counts": {"rows_in": cand.num_rows, "rows_out": 200},
         "dropped": {"duplicate_url": 60, "near_duplicate": 40}, "errors": {}}))
    photos = sorted((shared_data / "images" / "skimage").glob("*.png"))[:6] + \
        sorted((shared_data / "images" / "sklearn").glob("*.jpg"))
    (out / "images").mkdir()
    rows, buf = [], io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for i, r in enumerate(kept.slice(0, 40).to_pylist()):
            key = f"00000{i:04d}"
            ok = i < len(photos)
            rows.append({"key": key, "url": r["url"], "text": r["text"], "uid": r["uid"],
                         "status": "success" if ok else "failed_to_download",
                         "error_message": None if ok else ("http_404: not found" if i % 2 else "robots: disallowed"),
                         "width": 256 if ok else None, "height": 256 if ok else None})
            if not ok:
                continue
            im = Image.open(photos[i]).convert("RGB")
            im.thumbnail((256, 256))
            jpg = io.BytesIO()
            im.save(jpg, "JPEG", quality=85)
            for ext, data in (("jpg", jpg.getvalue()), ("txt", r["text"].encode()),
                              ("json", json.dumps(rows[-1]).encode())):
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    (out / "images" / "00000.tar").write_bytes(buf.getvalue())
    pq.write_table(pa.Table.from_pylist(rows), out / "images" / "00000.parquet")
    (out / "images" / "00000_stats.json").write_text("{}")
    rng = np.random.default_rng(0)
    good = [r for r in rows if r["status"] == "success"]
    n = len(good)
    scored = pa.table({
        "uid": [r["uid"] for r in good], "url": [r["url"] for r in good], "text": [r["text"] for r in good],
        "language": [LANGS[i % 4] for i in range(n)],
        "similarity": rng.uniform(0.2, 0.4, n), "punsafe": rng.uniform(0, 1, n),
        "pwatermark": rng.uniform(0, 1, n), "aesthetic": rng.uniform(3, 7, n),
    })
    (out / "scored").mkdir()
    pq.write_table(scored, out / "scored" / "part-00000.parquet")  # flat, language inside (jobs/score.py)
    emb = rng.normal(size=(n, 16)).astype("float32")
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    for kind, arr in (("img_emb", emb), ("text_emb", emb[::-1].copy())):
        (out / "embeddings" / kind).mkdir(parents=True)
        np.save(out / "embeddings" / kind / f"{kind}_0000.npy", arr)
    (out / "embeddings" / "metadata").mkdir()
    pq.write_table(scored.drop(["punsafe", "pwatermark", "aesthetic"]),
                   out / "embeddings" / "metadata" / "metadata_0000.parquet")
