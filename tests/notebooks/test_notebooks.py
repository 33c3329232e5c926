"""Every notebook executes (nbclient, a real kernel) against real pipeline output roots.

Roots: candidates written with pyarrow in the documented schema (plus one broken file);
every stage's layout with real photos in a webdataset tar and a real kNN index built by
the index stage's own code; a missing root; and the real `crawlpairs extract` CLI run
on the shared WAT and WARC files. Assertions read the values the cells print (counts,
shares, shapes, the self-hit), not only that the cells ran.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from support.notebooks import NOTEBOOKS, execute, images_in, text_of

REPO = Path(__file__).resolve().parents[2]
ALL = ["01_candidates.ipynb", "02_images.ipynb", "03_scores.ipynb", "04_knn.ipynb"]


def test_committed_notebooks_are_what_build_py_writes(tmp_path):
    sys.path.insert(0, str(NOTEBOOKS))
    try:
        import build
    finally:
        sys.path.remove(str(NOTEBOOKS))
    for path in build.build(tmp_path):
        assert path.read_text() == (NOTEBOOKS / path.name).read_text(), f"run python notebooks/build.py ({path.name})"
        assert '"outputs": []' in path.read_text() and '"execution_count": null' in path.read_text()


def test_candidates_only_root_every_later_stage_reported_not_run(candidates_only, tmp_path):
    out = execute("01_candidates.ipynb", candidates_only, tmp_path)
    text = text_of(out)
    assert "candidates: 300 rows from 2 files, 1 unreadable" in text
    assert "skipped unreadable" in text and "broken.parquet" in text
    assert "CC-MAIN-2024-33" in text and "CC-MAIN-2024-38" in text  # counts by crawl from partitions
    for crawl in ("CC-MAIN-2024-33", "CC-MAIN-2024-38"):  # rows, distinct urls, pages per crawl
        assert re.search(crawl + r"\s+150\s+150\s+150\n", text), crawl
    assert "stage deduped not run" in text
    assert images_in(out) >= 3  # languages bar, language_score and caption-length histograms
    for name, stage in (("02_images.ipynb", "images"), ("03_scores.ipynb", "scored"), ("04_knn.ipynb", "index")):
        assert f"stage {stage} not run" in text_of(execute(name, candidates_only, tmp_path))


def test_missing_root_does_not_fail(tmp_path):
    text = text_of(execute("01_candidates.ipynb", tmp_path / "nowhere", tmp_path))
    assert "(does not exist)" in text and "stage candidates not run" in text


def test_every_stage_present(every_stage, tmp_path):
    pytest.importorskip("faiss")
    from crawlpairs.config import IndexConfig
    from crawlpairs.udfs.index import knn

    cfg = IndexConfig(kinds=["img_emb"], metadata_columns=["uid", "url", "text", "similarity", "language"],
                      current_memory_available="1G", max_index_memory_usage="100M", nb_cores=1)
    knn.build(str(every_stage / "embeddings"), str(every_stage / "index"), cfg)

    text = text_of(execute("01_candidates.ipynb", every_stage, tmp_path))
    assert "kept 200 of 300 candidates (66.7%)" in text and "not run" not in text
    for crawl in ("CC-MAIN-2024-33", "CC-MAIN-2024-38"):  # candidates vs deduped per crawl
        assert re.search(crawl + r"\s+150\s+100\n", text), crawl
    assert 'dropped: {"duplicate_url": 60, "near_duplicate": 40}' in text  # dedup's _stats.json

    out = execute("02_images.ipynb", every_stage, tmp_path)
    text = text_of(out)
    assert "success" in text and "failed_to_download" in text and "http_404" in text
    assert "1 shards, showing 8 samples" in text
    assert re.search(r"failed_to_download\s+32\s+0\.8\n", text) and re.search(r"success\s+8\s+0\.2\n", text)
    assert re.search(r"http_404\s+16\s+0\.5\n", text) and re.search(r"robots\s+16\s+0\.5\n", text)
    assert images_in(out) >= 2  # status bar + the thumbnail grid

    out = execute("03_scores.ipynb", every_stage, tmp_path)
    text = text_of(out)
    assert "not scored" not in text and "img_emb/img_emb_0000.npy" in text
    for kind in ("img_emb", "text_emb"):  # rows, dim, dtype from the .npy headers
        assert re.search(rf"embeddings/{kind}/{kind}_0000.npy\s+8\s+16\s+float32\n", text), kind
    assert re.search(r"similarity\s+8\.0\s", text)  # 8 scored rows described
    assert images_in(out) == 4  # similarity, punsafe, pwatermark, aesthetic

    text = text_of(execute("04_knn.ipynb", every_stage, tmp_path))
    assert "querying with the first image embedding" in text
    assert "kNN query failed" not in text
    first_url = __import__("pyarrow.parquet").parquet.read_table(
        every_stage / "embeddings" / "metadata" / "metadata_0000.parquet").column("url")[0].as_py()
    assert first_url[:40] in text  # the self-hit comes back with its metadata
    assert re.search(r"\n0\s+1\s+(1\.000000|0\.99999\d)\s", text)  # rank 1, cosine 1: the query's own row


def test_knn_text_query_with_the_clip_model_the_index_records(tmp_path, monkeypatch):
    """The notebook's text branch: the index records tiny-clip (seeded random weights), the kernel
    encodes the query text with it; image vectors here are the captions' own text embeddings, so the
    caption asked for is the top hit at cosine 1."""
    pytest.importorskip("faiss")
    pytest.importorskip("open_clip")
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from crawlpairs.config import IndexConfig
    from crawlpairs.udfs.index import knn
    from crawlpairs.udfs.score import clip

    captions = ["a red rocket on the launch pad", "an astronaut portrait", "a cup of coffee", "a cat"]
    urls = [f"https://img.example/{c.replace(' ', '-')}.jpg" for c in captions]
    root = tmp_path / "out" / "embeddings"
    (root / "img_emb").mkdir(parents=True)
    (root / "metadata").mkdir()
    emb = clip.get_encoder("tiny-clip", None, "cpu", "fp32").encode_texts(captions)
    np.save(root / "img_emb" / "img_emb_0000.npy", np.asarray(emb, dtype=np.float32))
    pq.write_table(pa.table({"uid": list("abcd"), "url": urls, "text": captions}),
                   root / "metadata" / "metadata_0000.parquet")
    knn.build(str(root), str(tmp_path / "out" / "index"),
              IndexConfig(kinds=["img_emb"], index_key="Flat", clip_model="tiny-clip", nb_cores=1,
                          metadata_columns=["uid", "url", "text"]))
    monkeypatch.setenv("CRAWLPAIRS_NB_QUERY", "a cup of coffee")
    monkeypatch.setenv("CRAWLPAIRS_NB_K", "3")
    text = text_of(execute("04_knn.ipynb", tmp_path / "out", tmp_path))
    assert "text query 'a cup of coffee' with tiny-clip" in text and "kNN query failed" not in text
    assert re.search(r"\n0\s+1\s+(1\.000000|0\.99999\d)\s", text)  # rank 1 at cosine 1
    assert re.search(r"\n0\s+[^\n]*https://img\.example/a-cup-of-coffee\.jpg", text)  # ... is the coffee row
    assert re.search(r"\n2\s+3\s", text) and not re.search(r"\n3\s+4\s", text)  # K=3 hits


@pytest.mark.integration
@pytest.mark.slow
def test_real_extract_via_cli(tmp_path, shared_data):
    """The real `crawlpairs extract` on shared WAT + WARC files (one truncated), then the notebook."""
    out = tmp_path / "out"
    cli = str(Path(sys.executable).parent / "crawlpairs")
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1"}
    wat, warc = shared_data / "wat", shared_data / "warc"
    inputs = [wat / "CC-MAIN-20140820021334-00006-ip-10-180-136-8.ec2.internal.warc.wat.gz",
              wat / "truncated-CC-MAIN-2023-14.warc.wat.gz", warc / "resiliparse-CC-MAIN-2020-34.warc.gz"]
    proc = subprocess.run([cli, "extract", "--input", *map(str, inputs), "--output", str(out),
                           "--lid-model", str(shared_data / "models" / "lid.176.ftz"), "--master", "local[2]",
                           "--shuffle-partitions", "2", "--conf", "spark.ui.enabled=false"],
                          env=env, capture_output=True, text=True, timeout=500)
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = text_of(execute("01_candidates.ipynb", out, tmp_path))
    assert "CC-MAIN-2020-34" in text  # the crawl id of the real WARC, from the partition path
    assert "stage candidates not run" not in text and "skipped unreadable" not in text
    assert "files_read" in text  # extract's own _stats.json is shown
    assert "stage deduped not run" in text
