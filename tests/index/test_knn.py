"""udfs/index/build.py and knn_query.py without Spark: real autofaiss builds on small generated embedding folders."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest

from crawlpairs.config import IndexConfig
from crawlpairs.stats import Stats
from crawlpairs.udfs.index import build as knn_build
from crawlpairs.udfs.index import knn
from crawlpairs.udfs.index import query as knn_query
from support.photos import CAPTIONS, IMAGES, clip_folder

# HNSW with a fixed efSearch: autofaiss's own parameter search costs seconds per index.
FAST = {"index_key": "HNSW16", "index_param": "efSearch=128"}


def _cfg(**kw) -> IndexConfig:
    return IndexConfig(**{**FAST, "kinds": ["img_emb"], **kw})


def test_every_row_is_its_own_nearest_neighbour(tmp_path, make_embeddings):
    vecs = make_embeddings(tmp_path / "emb", [300, 0, 250], dim=16)
    stats = Stats()
    info = knn.build(str(tmp_path / "emb"), str(tmp_path / "index"), _cfg(kinds=["img_emb", "text_emb"]),
                     stats=stats)
    assert info["count"] == 550 and info["dim"] == 16
    assert stats.counts["parts_used"] == 2 and stats.counts["parts_empty"] == 1
    for kind in ("img_emb", "text_emb"):
        idx = knn.KnnIndex(str(tmp_path / "index"), kind=kind)
        scores, ids = idx.search(vecs[kind], k=5)
        assert (ids[:, 0] == np.arange(550)).all()
        assert np.allclose(scores[:, 0], 1.0, atol=1e-4)
    # hits map back to the row's own metadata, and only the configured columns were copied
    hits = knn.query(str(tmp_path / "index"), vector=vecs["img_emb"][400], k=3)
    assert hits[0]["id"] == 400 and hits[0]["text"] == "caption 400"
    assert hits[0]["url"] == "https://img.example/400.jpg" and hits[0]["uid"] == "uid400"
    assert "sha256" not in hits[0] and [h["rank"] for h in hits] == [1, 2, 3]
    assert hits[0]["score"] >= hits[1]["score"] >= hits[2]["score"]
    on_disk = json.loads((tmp_path / "index" / knn.INFO_NAME).read_text())
    assert on_disk["kinds"]["img_emb"]["shards"][0]["index_key"] == "HNSW16"
    assert on_disk["metadata"]["rows"] == [300, 250] and on_disk["clip_back_loadable"]
    # clip_back's layout: image.index / text.index at the root, metadata with `caption`, in id order
    names = sorted(p.name for p in (tmp_path / "index").iterdir())
    assert names == ["image.index", "image.json", "index_info.json", "metadata", "text.index", "text.json"]
    meta = pd.concat(pd.read_parquet(p) for p in sorted((tmp_path / "index" / "metadata").glob("*.parquet")))
    assert list(meta.columns) == ["uid", "url", "caption", "similarity"] and len(meta) == 550
    assert meta["caption"].iloc[400] == "caption 400"
    # autofaiss's infos name the published index, not the temp folder it was built in
    for name in ("image.json", "text.json"):
        infos = json.loads((tmp_path / "index" / name).read_text())
        assert infos["index_path"] == name.replace(".json", ".index") and infos["nb vectors"] == 550
    assert "crawlpairs-index-" not in (tmp_path / "index" / knn.INFO_NAME).read_text()


def test_metadata_takes_clip_retrievals_caption_name_unless_taken():
    assert knn_build._clip_retrieval_names(["uid", "url", "text"]) == ["uid", "url", "caption"]
    assert knn_build._clip_retrieval_names(["url", "text", "caption"]) == ["url", "text", "caption"]


def test_autofaiss_chooses_the_index_within_the_budget(tmp_path, make_embeddings):
    vecs = make_embeddings(tmp_path / "emb", [400], dim=8, kinds=("img_emb",))
    info = knn.build(str(tmp_path / "emb"), str(tmp_path / "index"),
                     IndexConfig(kinds=["img_emb"], max_index_memory_usage="100M", max_index_query_time_ms=5))
    shard = info["kinds"]["img_emb"]["shards"][0]
    assert shard["index_key"] and shard["autofaiss"]["nb vectors"] == 400
    _, ids = knn.KnnIndex(str(tmp_path / "index")).search(vecs["img_emb"], 1)
    assert (ids[:, 0] == np.arange(400)).all()


def test_bad_parts_are_skipped_counted_and_ids_stay_aligned(tmp_path, make_embeddings):
    root = tmp_path / "emb"
    vecs = make_embeddings(root, [100, 120, 80, 60], dim=16, kinds=("img_emb",))
    x = vecs["img_emb"]
    # part 1: one metadata row missing -> misaligned; part 2: float64 vectors; part 3: no metadata
    pd.read_parquet(root / "metadata" / "metadata_0001.parquet").iloc[:-1].to_parquet(
        root / "metadata" / "metadata_0001.parquet", index=False)
    np.save(root / "img_emb" / "img_emb_0002.npy", x[220:300].astype(np.float64))
    (root / "metadata" / "metadata_0003.parquet").unlink()
    # part 4: metadata without embeddings; part 5: a truncated .npy
    pd.DataFrame({"uid": ["a"], "url": ["u"], "text": ["t"]}).to_parquet(root / "metadata" / "metadata_0004.parquet")
    (root / "img_emb" / "img_emb_0005.npy").write_bytes(b"\x93NUMPY")
    pd.DataFrame({"uid": ["b"], "url": ["u"], "text": ["t"]}).to_parquet(root / "metadata" / "metadata_0005.parquet")
    stats = Stats()
    info = knn.build(str(root), str(tmp_path / "index"), _cfg(), stats=stats)
    assert info["count"] == 100
    assert stats.errors == {"misaligned_part": 1, "bad_dtype": 1, "missing_metadata": 1,
                            "missing_embeddings": 1, "unreadable_embeddings": 1}
    # every row of the metadata found is indexed or dropped with its part's reason
    assert stats.counts["rows_in"] == 100 + 119 + 80 + 1 + 1
    assert stats.dropped == {"misaligned_part": 119, "bad_dtype": 80, "missing_embeddings": 1,
                             "unreadable_embeddings": 1}
    inputs = {s["kind"]: s["input"] for s in stats.error_samples}
    assert inputs["misaligned_part"].endswith("img_emb_0001.npy")
    assert inputs["missing_metadata"].endswith("img_emb_0003.npy")
    hits = knn.query(str(tmp_path / "index"), vector=x[42], k=1)
    assert hits[0]["id"] == 42 and hits[0]["text"] == "caption 42"


def test_no_usable_part_and_too_small_budget_are_one_line_errors(tmp_path, make_embeddings):
    (tmp_path / "empty").mkdir()
    with pytest.raises(knn.IndexBuildError, match="no usable embedding part"):
        knn.build(str(tmp_path / "empty"), str(tmp_path / "i1"), _cfg())
    make_embeddings(tmp_path / "emb", [50], dim=16, kinds=("img_emb",))
    with pytest.raises(knn.IndexBuildError, match="--max-index-memory-usage"):
        knn.build(str(tmp_path / "emb"), str(tmp_path / "i2"),
                  IndexConfig(kinds=["img_emb"], max_index_memory_usage="1K", current_memory_available="2K"))
    with pytest.raises(knn.IndexBuildError, match="--nb-indices-to-keep"):
        knn.build(str(tmp_path / "emb"), str(tmp_path / "i3"), _cfg(nb_indices_to_keep=2))


def test_rerun_is_skipped_when_unchanged_and_replaces_when_changed(tmp_path, make_embeddings):
    root = tmp_path / "emb"
    make_embeddings(root, [60, 40], dim=16, kinds=("img_emb",))
    out = tmp_path / "index"
    first = knn.build(str(root), str(out), _cfg(shard_by="partition"))
    assert sorted(p.name for p in (out / "image").iterdir()) == [
        "knn_00000.index", "knn_00000.json", "knn_00001.index", "knn_00001.json"]
    assert json.loads((out / "image" / "knn_00001.json").read_text())["index_path"] == "image/knn_00001.index"
    assert not first["clip_back_loadable"]
    stats = Stats()
    again = knn.build(str(root), str(out), _cfg(shard_by="partition"), stats=stats)
    assert stats.counts["skipped_up_to_date"] == 1 and again["created"] == first["created"]
    # new settings: the old shard files are gone, not mixed with the new single index
    (out / "metadata.hdf5").write_bytes(b"clip_back's cache of the old metadata")
    knn.build(str(root), str(out), _cfg())
    assert sorted(p.name for p in out.iterdir()) == ["image.index", "image.json", "index_info.json", "metadata"]
    # same counts but rewritten vectors (score ran again): rebuilt, not skipped
    x = np.load(root / "img_emb" / "img_emb_0001.npy")[::-1].copy()
    np.save(root / "img_emb" / "img_emb_0001.npy", x)
    os.utime(root / "img_emb" / "img_emb_0001.npy", (1, 1))
    stats = Stats()
    knn.build(str(root), str(out), _cfg(), stats=stats)
    assert "skipped_up_to_date" not in stats.counts
    assert knn.query(str(out), vector=x[0], k=1)[0]["id"] == 60


def test_partition_shards_merge_to_global_ids(tmp_path, make_embeddings):
    vecs = make_embeddings(tmp_path / "emb", [70, 90, 40], dim=16, kinds=("img_emb",))
    info = knn.build(str(tmp_path / "emb"), str(tmp_path / "index"), _cfg(shard_by="partition"))
    shards = info["kinds"]["img_emb"]["shards"]
    assert [s["id_offset"] for s in shards] == [0, 70, 160] and [s["count"] for s in shards] == [70, 90, 40]
    idx = knn.KnnIndex(str(tmp_path / "index"))
    scores, ids = idx.search(vecs["img_emb"], k=10)
    assert (ids[:, 0] == np.arange(200)).all()
    assert (np.diff(scores, axis=1) <= 1e-6).all()  # merged over shards, best first
    # the merged top-10 equals exact search over all rows (HNSW on tiny shards is exact here)
    exact = np.argsort(-vecs["img_emb"] @ vecs["img_emb"][5])[:10]
    assert set(ids[5]) == set(exact)


def test_query_needs_exactly_one_input_and_the_right_dimension(tmp_path, make_embeddings):
    make_embeddings(tmp_path / "emb", [30], dim=16, kinds=("img_emb",))
    knn.build(str(tmp_path / "emb"), str(tmp_path / "index"), _cfg())
    with pytest.raises(ValueError, match="exactly one"):
        knn.query(str(tmp_path / "index"), k=3)
    with pytest.raises(ValueError, match="dimension 8"):
        knn.query(str(tmp_path / "index"), vector=np.ones(8), k=3)
    with pytest.raises(ValueError, match="no CLIP model"):
        knn.query(str(tmp_path / "index"), text="a cat", k=3)
    with pytest.raises(ValueError, match="no 'text_emb' index"):
        knn.KnnIndex(str(tmp_path / "index"), kind="text_emb")
    assert len(knn.query(str(tmp_path / "index"), vector=np.ones(16), k=50)) == 30  # k > rows


def test_opening_an_index_reads_its_info_once(tmp_path, make_embeddings, monkeypatch):
    vecs = make_embeddings(tmp_path / "emb", [30], dim=16, kinds=("img_emb",))["img_emb"]
    knn.build(str(tmp_path / "emb"), str(tmp_path / "index"), IndexConfig(kinds=["img_emb"], index_key="Flat"))
    reads = []
    real = knn_query.fsio.read_json
    monkeypatch.setattr(knn_query.fsio, "read_json", lambda uri, *a, **k: reads.append(uri) or real(uri, *a, **k))
    assert knn.query(str(tmp_path / "index"), vector=vecs[3], k=1)[0]["id"] == 3
    assert reads == [str(tmp_path / "index" / knn.INFO_NAME)]


def test_queries_reproduce_score_embeddings(tmp_path, photo_embeddings):
    """Embeddings made by score's own encoder (tiny-clip, seeded random weights); query re-encodes
    text and images from what index recorded, and finds the same rows."""
    from crawlpairs.udfs.score import clip

    root, images, _ = photo_embeddings
    out = str(tmp_path / "out" / "index")
    info = knn.build(str(root), out, IndexConfig(index_key="Flat"))  # both kinds by default
    assert info["clip"]["model"] == "tiny-clip" and info["clip"]["source"].endswith("scored/_stats.json")
    for i, caption in enumerate(CAPTIONS):
        hit = knn.query(out, text=caption, kind="text_emb", k=1)[0]
        assert hit["uid"] == "abcd"[i] and hit["score"] == pytest.approx(1.0, abs=1e-4)
    for i, img in enumerate(images):
        hit = knn.query(out, image=str(img), k=1)[0]
        assert hit["text"] == CAPTIONS[i] and hit["score"] == pytest.approx(1.0, abs=1e-4)
    text_to_image = knn.query_df(out, text="a cat", k=4)
    with pytest.raises(ValueError, match="corrupt_image"):
        knn.query(out, image=b"not an image", k=1)
    # query's encoder is score's cached one (udfs/score/clip.py), not a second copy of the model
    assert knn.open_index(out).encoder() is clip.get_encoder("tiny-clip", None, clip.pick_device("auto"), "fp32")
    assert list(text_to_image["rank"]) == [1, 2, 3, 4] and set(text_to_image["uid"]) == set("abcd")


def test_clip_model_from_index_flags_with_a_checkpoint_file(tmp_path, tiny_clip, shared_data):
    """--clip-model/--clip-pretrained (a weights file) win over what score recorded."""
    from crawlpairs.udfs.score import clip

    model, ckpt, config_dir = tiny_clip
    enc = clip.get_encoder(model, ckpt, "cpu", "fp32", config_dir)
    images = [shared_data / "images" / "skimage" / f for f in IMAGES]
    root = tmp_path / "out" / "embeddings"
    clip_folder(root, knn_query.encode_images(enc, [str(p) for p in images]), enc.encode_texts(CAPTIONS),
                [p.name for p in images], {"model": "ViT-B-32", "pretrained": "openai"})
    out = str(tmp_path / "out" / "index")
    cfg = IndexConfig(kinds=["img_emb", "text_emb"], index_key="Flat", clip_model=model, clip_pretrained=ckpt,
                      clip_model_config_dir=config_dir)
    info = knn.build(str(root), out, cfg)
    assert info["clip"] == {"model": model, "pretrained": ckpt, "model_config_dir": config_dir,
                            "source": "index config"}
    assert knn.query(out, text=CAPTIONS[1], kind="text_emb", k=1)[0]["uid"] == "b"
    assert knn.query(out, image=str(images[3]), k=1)[0]["uid"] == "d"


def test_memory_mapped_query_and_l2_metric(tmp_path, make_embeddings):
    vecs = make_embeddings(tmp_path / "emb", [120], dim=16, kinds=("img_emb",))["img_emb"]
    knn.build(str(tmp_path / "emb"), str(tmp_path / "ip"),
              IndexConfig(kinds=["img_emb"], index_key="IVF4,Flat", index_param="nprobe=4",
                          should_be_memory_mappable=True))
    _, ids = knn.KnnIndex(str(tmp_path / "ip"), mmap=True).search(vecs, k=2)
    assert (ids[:, 0] == np.arange(120)).all()
    knn.build(str(tmp_path / "emb"), str(tmp_path / "l2"), IndexConfig(kinds=["img_emb"], index_key="Flat",
                                                                      metric_type="l2"))
    hits = knn.query(str(tmp_path / "l2"), vector=vecs[7], k=3)
    assert hits[0]["id"] == 7 and hits[0]["score"] == pytest.approx(0.0, abs=1e-5)
    assert hits[0]["score"] <= hits[1]["score"] <= hits[2]["score"]  # distances: smallest first
