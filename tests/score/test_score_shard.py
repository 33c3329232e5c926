"""Scoring one shard without Spark: images, tar reading, embeddings, similarity, filters, bad input.

The CLIP model is `tiny-clip` (crawlpairs/models/tiny-clip.json) with random weights, seeded
so every process builds the same one: embeddings are meaningless but deterministic, which is
what alignment, similarity-equals-dot-product and threshold tests need. The one test that needs
real weights (matching caption beats a shuffled one) is skipped unless they are provided.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from crawlpairs.config import ScoreConfig
from crawlpairs.stats import Stats
from crawlpairs.udfs import wds
from crawlpairs.udfs.score import clip
from support.score import TINY, good_samples, jpeg, photos, similarity_band, write_shard


def cfg(**kw) -> ScoreConfig:
    base = {"model": TINY, "pretrained": None, "language_thresholds": {}, "default_threshold": -1.0,
            "batch_size": 16}
    base.update(kw)
    return ScoreConfig(**base)


def encoder():
    return clip.get_encoder(TINY, None, "cpu", "fp32")


def load_outputs(out: Path, sid: str):
    emb = out / "embeddings"
    img = np.load(emb / "img_emb" / f"img_emb_{sid}.npy")
    txt = np.load(emb / "text_emb" / f"text_emb_{sid}.npy")
    meta = pq.read_table(emb / "metadata" / f"metadata_{sid}.parquet").to_pandas()
    rows = pq.read_table(out / clip.ROWS_DIR / f"{sid}.parquet").to_pandas()
    return img, txt, meta, rows


# -- images ------------------------------------------------------------------------


def test_pixels_match_open_clips_own_preprocess(shared_data):
    import open_clip
    import torch
    from PIL import Image

    enc = encoder()
    _, _, preprocess = open_clip.create_model_and_transforms(TINY, pretrained=None)
    path = shared_data / "images" / "skimage" / "astronaut.png"  # PNG: no JPEG draft shortcut
    mine, orig = clip.load_image(path.read_bytes(), enc.spec)
    assert orig == (512, 512) and mine.shape == (64, 64, 3)
    with Image.open(path) as im:
        ref = preprocess(im.convert("RGB")).unsqueeze(0)
    np.testing.assert_allclose(enc.to_device(mine[None]).numpy(), ref.numpy(), atol=1e-5)
    # non-square: the centre crop is taken the same way
    wide = Image.new("RGB", (300, 120))
    wide.paste(Image.open(path).convert("RGB").resize((150, 120)), (75, 0))
    buf = io.BytesIO()
    wide.save(buf, "PNG")
    mine, _ = clip.load_image(buf.getvalue(), enc.spec)
    np.testing.assert_allclose(enc.to_device(mine[None]).numpy(), preprocess(wide).unsqueeze(0).numpy(), atol=1e-5)
    assert torch.is_tensor(ref)


def test_bad_images_raise_a_counted_kind():
    from PIL import Image

    spec = clip.ImageSpec(size=64)
    good = jpeg(Image.new("RGB", (80, 60), (10, 120, 200)))
    for data, kind in [(b"", "empty_image"), (None, "empty_image"), (b"\xff\xd8\xffnot a jpeg" * 5, "corrupt_image"),
                       (good[: len(good) // 2], "corrupt_image"), (b"GIF89a" + b"\0" * 20, "corrupt_image")]:
        with pytest.raises(clip.ImageError) as exc:
            clip.load_image(data, spec)
        assert exc.value.kind == kind
    one = io.BytesIO()
    Image.new("P", (1, 1)).save(one, "PNG")
    arr, orig = clip.load_image(one.getvalue(), spec)  # a 1-pixel image is usable (upscaled)
    assert arr.shape == (64, 64, 3) and orig == (1, 1)
    with pytest.raises(clip.ImageError) as exc:
        clip.load_image(one.getvalue(), spec, min_side=8)
    assert exc.value.kind == "image_too_small"


# -- tar reading -------------------------------------------------------------------


def test_tar_samples_group_by_key_and_a_cut_tar_is_counted(tmp_path, shared_data):
    samples = good_samples(shared_data, 3, "k")
    tar = write_shard(tmp_path, "00007", samples)
    stats = Stats()
    with open(tar, "rb") as fh:
        got = list(wds.iter_samples(fh, stats, source=str(tar)))
    assert [s.key for s in got] == [s["key"] for s in samples]
    assert set(got[0].files) == {"jpg", "txt", "json"} and got[0].text() == samples[0]["txt"]
    assert not stats.errors

    data = tar.read_bytes()
    stats = Stats()
    got = list(wds.iter_samples(io.BytesIO(data[: len(data) // 2]), stats, source="cut.tar"))
    assert 0 < len(got) < len(samples)
    assert stats.errors["tar_corrupt"] == 1 and stats.error_samples[0]["input"] == "cut.tar"
    assert wds.shard_id("s3://b/images/00012.tar") == "00012"
    assert wds.split_member("dir/abc.seg.jpg") == ("dir/abc", "seg.jpg")


# -- one shard end to end ------------------------------------------------------------


@pytest.fixture(scope="module")
def scored(images_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("scored")
    stats = clip.score_shard(str(images_dir / "00000.tar"), str(out), cfg())
    return out, stats


def test_embeddings_row_aligned_with_metadata(scored, images_dir):
    out, stats = scored
    img, txt, meta, rows = load_outputs(out, "00000")
    n = stats.counts["rows_out"]
    assert n == len(rows) > 30 and img.shape == (n, 64) and txt.shape == (n, 64) and len(meta) == n
    assert list(meta["emb_row"]) == list(range(n))
    np.testing.assert_allclose(np.linalg.norm(img, axis=1), 1.0, atol=1e-5)
    # re-embed some rows independently, by key and caption, and find them at the same row
    enc = encoder()
    with open(images_dir / "00000.tar", "rb") as fh:
        by_key = {s.key: s for s in wds.iter_samples(fh)}
    for i in (0, n // 2, n - 1):
        sample = by_key[meta["key"][i]]
        assert meta["caption"][i] == sample.text()
        pixels, _ = clip.load_image(sample.image()[1], enc.spec)
        np.testing.assert_allclose(enc.encode_images(pixels[None])[0], img[i], atol=1e-4)
        np.testing.assert_allclose(enc.encode_texts([sample.text()])[0], txt[i], atol=1e-4)


def test_similarity_is_the_dot_product_of_stored_embeddings(scored):
    out, _ = scored
    img, txt, meta, rows = load_outputs(out, "00000")
    dots = np.sum(img * txt, axis=1)
    np.testing.assert_allclose(meta["similarity"].to_numpy(), dots, atol=1e-5)
    by_key = rows.set_index("key")
    np.testing.assert_allclose(by_key.loc[meta["key"], "similarity"].to_numpy(), dots, atol=1e-5)


def test_thresholds_per_language_applied_as_configured(scored, images_dir, tmp_path):
    out, _ = scored
    rows = load_outputs(out, "00000")[3]
    en = rows[rows.language == "en"]
    cut = float(np.median(en.similarity))
    c = cfg(language_thresholds={"en": cut, "de": -1.0}, default_threshold=2.0)
    stats = clip.score_shard(str(images_dir / "00000.tar"), str(tmp_path), c)
    _, _, meta, rows2 = load_outputs(tmp_path, "00000")
    kept = rows2[rows2.drop_reason.isna()]
    expect = set(en[en.similarity >= cut].key) | set(rows[rows.language == "de"].key)
    assert set(kept.key) == expect == set(meta.key)
    dropped = rows2[rows2.drop_reason.notna()]
    assert set(dropped.drop_reason) == {"similarity_below_threshold"}
    assert stats.dropped["similarity_below_threshold"] == len(dropped) == len(rows) - len(expect)
    assert stats.counts["rows_in"] == stats.counts["rows_out"] + sum(stats.dropped.values())


def test_bad_input_is_counted_never_raised(images_dir, tmp_path):
    stats = clip.score_shard(str(images_dir / "00002.tar"), str(tmp_path), cfg())
    assert stats.counts["rows_in"] == 7
    assert stats.dropped == {"corrupt_image": 2, "empty_image": 1, "missing_text": 1}
    assert stats.counts["rows_out"] == 3
    assert stats.errors["missing_txt"] == 1 and stats.errors["corrupt_image"] == 2
    assert stats.errors["empty_image"] == 1
    inputs = {s["input"] for s in stats.error_samples}
    assert any(i.endswith("00002.tar#c00000") for i in inputs)
    _, _, meta, rows = load_outputs(tmp_path, "00002")
    long = rows.set_index("key").loc["c00003"]
    assert long.drop_reason is None or long.drop_reason != long.drop_reason  # kept
    assert bool(long.text_truncated) and len(long.text) == 10_005  # full text kept in the output
    assert stats.counts["texts_at_context_limit"] == 1 and stats.counts["images_upscaled"] >= 1
    assert set(meta.key) == {"c00002", "c00003", "c00006"}


def test_shard_without_txt_or_parquet(tmp_path, shared_data):
    """No .txt in the whole shard: texts come from the Parquet; no Parquet: from each .json."""
    samples = [{"key": s["key"], "jpg": s["jpg"], "caption": s["txt"]} for s in good_samples(shared_data, 2, "n")]
    write_shard(tmp_path / "in", "00003", samples)
    stats = clip.score_shard(str(tmp_path / "in" / "00003.tar"), str(tmp_path / "out"), cfg())
    assert stats.errors["missing_txt"] == len(samples) and stats.counts["rows_out"] == len(samples)
    write_shard(tmp_path / "in2", "00004", good_samples(shared_data, 2, "m"), with_parquet=False)
    stats = clip.score_shard(str(tmp_path / "in2" / "00004.tar"), str(tmp_path / "out"), cfg())
    assert stats.counts["shards_without_parquet"] == 1 and stats.counts["rows_out"] > 0
    rows = load_outputs(tmp_path / "out", "00004")[3]
    assert rows.url.notna().all() and rows.uid.notna().all()  # from the .json members


def test_rerun_skips_a_done_shard_and_force_rescores(images_dir, tmp_path):
    shard = str(images_dir / "00001.tar")
    first = clip.score_shard(shard, str(tmp_path), cfg())
    marker = tmp_path / clip.ROWS_DIR / "00001.parquet"
    mtime = marker.stat().st_mtime_ns
    again = clip.score_shard(shard, str(tmp_path), cfg())
    assert again.counts["shards_skipped_done"] == 1 and again.counts["rows_out"] == first.counts["rows_out"]
    assert marker.stat().st_mtime_ns == mtime
    clip.score_shard(shard, str(tmp_path), cfg(), force=True)
    assert marker.stat().st_mtime_ns != mtime


def test_a_shard_done_under_other_settings_is_scored_again(images_dir, tmp_path):
    shard = str(images_dir / "00001.tar")
    first = clip.score_shard(shard, str(tmp_path), cfg(default_threshold=2.0))  # drops every row
    assert first.counts.get("rows_out", 0) == 0
    again = clip.score_shard(shard, str(tmp_path), cfg())  # keeps every row: not the stale result
    assert "shards_skipped_done" not in again.counts and again.counts["rows_out"] > 0
    # a speed-only setting does not make the shard stale
    same = clip.score_shard(shard, str(tmp_path), cfg(batch_size=7))
    assert same.counts["shards_skipped_done"] == 1 and same.counts["rows_out"] == again.counts["rows_out"]


@pytest.fixture(scope="module")
def conf(tmp_path_factory) -> Path:
    """A 512-d variant of tiny-clip (another architecture: other random weights, B/32-wide)."""
    folder = tmp_path_factory.mktemp("configs")
    tiny = json.loads((Path(clip.tiny_config_dir()) / "tiny-clip.json").read_text())
    tiny["embed_dim"] = 512
    (folder / "tiny-clip-512.json").write_text(json.dumps(tiny))
    return folder


def test_multilingual_model_scores_rows_outside_main_languages(images_dir, tmp_path, conf):
    c = cfg(multilingual_model="tiny-clip-512", model_config_dir=str(conf), main_model_languages=["en", "de"])
    clip.score_shard(str(images_dir / "00000.tar"), str(tmp_path), c)
    img, txt, meta, rows = load_outputs(tmp_path, "00000")
    rows = rows.set_index("key").loc[meta.key]
    main = rows.language.isin(["en", "de"]).to_numpy()
    assert main.any() and (~main).any()
    assert (rows.similarity_model[main] == "main").all() and (rows.similarity_model[~main] == "multilingual").all()
    dots = np.sum(img * txt, axis=1)  # stored embeddings are the main model's for every row
    np.testing.assert_allclose(rows.similarity.to_numpy()[main], dots[main], atol=1e-5)
    ml = clip.get_encoder("tiny-clip-512", None, "cpu", "fp32", str(conf))
    with open(images_dir / "00000.tar", "rb") as fh:
        by_key = {s.key: s for s in wds.iter_samples(fh)}
    k = meta.key[~main].iloc[0]
    px, _ = clip.load_image(by_key[k].image()[1], ml.spec)
    expect = float(ml.encode_images(px[None])[0] @ ml.encode_texts([by_key[k].text()])[0])
    assert rows.similarity[k] == pytest.approx(expect, abs=1e-4)


def test_heads_run_on_the_stage_embeddings_when_widths_match(images_dir, tmp_path, shared_data, conf):
    """A 512-d tiny model makes LAION's B/32 NSFW and aesthetic heads applicable (random weights)."""
    nsfw = str(shared_data / "models" / "laion-nsfw" / "clip_autokeras_nsfw_b32_weights.npz")
    aest = str(shared_data / "models" / "laion-aesthetic" / "sa_0_4_vit_b_32_linear.pth")
    c = cfg(model="tiny-clip-512", model_config_dir=str(conf), nsfw_model=nsfw, aesthetic_model=aest,
            punsafe_max=1.01, watermark_model=nsfw)
    stats = clip.score_shard(str(images_dir / "00001.tar"), str(tmp_path / "out"), c)
    img, _, meta, rows = load_outputs(tmp_path / "out", "00001")
    from crawlpairs.udfs.score.heads import load_head

    ref_nsfw = load_head("nsfw", Path(nsfw).read_bytes())(img)
    ref_aest = load_head("aesthetic", Path(aest).read_bytes())(img)
    np.testing.assert_allclose(meta.punsafe.to_numpy(), ref_nsfw, atol=1e-5)
    np.testing.assert_allclose(meta.aesthetic.to_numpy(), ref_aest, atol=1e-4)
    assert set(rows.nsfw.dropna()) <= {"UNLIKELY", "UNSURE", "NSFW"} and rows.nsfw.notna().all()
    # a cut-off drops rows by reason
    cut = float(np.median(ref_nsfw))
    stats = clip.score_shard(str(images_dir / "00001.tar"), str(tmp_path / "out2"),
                             cfg(model="tiny-clip-512", model_config_dir=str(conf), nsfw_model=nsfw, punsafe_max=cut))
    assert stats.dropped["nsfw"] == int(np.sum(ref_nsfw >= cut))
    # the 64-d tiny model cannot feed them: skipped and counted, columns null
    stats = clip.score_shard(str(images_dir / "00001.tar"), str(tmp_path / "out3"), cfg(nsfw_model=nsfw))
    assert stats.errors["head_dim_mismatch"] == 1 and stats.counts["head_skipped_punsafe"] == 1
    assert load_outputs(tmp_path / "out3", "00001")[3].punsafe.isna().all()


def test_model_and_heads_load_once_per_process(images_dir, tmp_path, shared_data, conf, monkeypatch):
    """Later shards in the same Python worker reuse the cached encoder and heads: nothing is rebuilt."""
    from crawlpairs.udfs.score import heads

    nsfw = str(shared_data / "models" / "laion-nsfw" / "clip_autokeras_nsfw_b32_weights.npz")
    c = cfg(model="tiny-clip-512", model_config_dir=str(conf), nsfw_model=nsfw, punsafe_max=1.01)
    clip.score_shard(str(images_dir / "00002.tar"), str(tmp_path / "first"), c)  # loads (or finds) them
    enc = clip.get_encoder("tiny-clip-512", None, "cpu", "fp32", str(conf))
    builds = []
    monkeypatch.setattr(clip, "ClipEncoder", lambda *a, **k: builds.append(a))
    monkeypatch.setattr(heads, "load_head", lambda *a, **k: builds.append(a))
    for i, shard in enumerate(("00001.tar", "00002.tar")):
        stats = clip.score_shard(str(images_dir / shard), str(tmp_path / f"again{i}"), c)
        assert stats.counts["rows_out"] > 0 and "head_skipped_punsafe" not in stats.counts
    assert builds == [] and clip.get_encoder("tiny-clip-512", None, "cpu", "fp32", str(conf)) is enc


def test_semantic_duplicates_found_within_lsh_neighbourhoods():
    rng = np.random.default_rng(3)
    base = rng.standard_normal((50, 64)).astype(np.float32)
    emb = np.concatenate([base, base[:5] + 0.001 * rng.standard_normal((5, 64)).astype(np.float32)])
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    keys = [f"k{i:03d}" for i in range(len(emb))]
    buckets = clip.lsh_buckets(emb, bits=8, tables=2)
    for i in range(5):
        assert set(buckets[i]) & set(buckets[50 + i])  # twins share a neighbourhood
    dup = clip.flag_semantic_dups(keys, emb, 0.95)
    assert dup[:50] == [None] * 50 and dup[50:] == keys[:5]


def test_device_is_cpu_without_a_gpu():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this check is for CPU-only machines")
    assert clip.pick_device("auto", ["0"]) == "cpu" and clip.pick_device("cpu") == "cpu"
    with pytest.raises(RuntimeError, match="CUDA"):
        clip.pick_device("cuda")


def test_similarity_band():
    assert similarity_band(0.317, 0.05) == 0.3
    assert similarity_band(0.30, 0.05) == 0.3
    assert similarity_band(None, 0.05) is None


def test_udfs_import_no_torch():
    code = ("import sys, crawlpairs.udfs.score.clip, crawlpairs.udfs.score.heads, crawlpairs.udfs.wds; "
            "print('torch' in sys.modules, 'open_clip' in sys.modules)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.split() == ["False", "False"]


REAL_MODEL = os.environ.get("CRAWLPAIRS_CLIP_MODEL", "ViT-B-32")
REAL_WEIGHTS = os.environ.get("CRAWLPAIRS_CLIP_PRETRAINED")  # a tag (with a warm cache) or a weights file


@pytest.mark.skipif(not REAL_WEIGHTS, reason="no CLIP weights offline: set CRAWLPAIRS_CLIP_PRETRAINED "
                    "(tag or .pt path) and CRAWLPAIRS_CLIP_MODEL to run; random weights cannot rank captions")
def test_matching_caption_beats_shuffled_with_real_weights(shared_data, tmp_path):
    names = {"astronaut": "an astronaut in a space suit", "coffee": "a cup of coffee",
             "chelsea": "a cat", "rocket": "a rocket launching", "camera": "a man with a camera",
             "china": "a chinese temple", "flower": "a flower", "brick": "a brick wall", "coins": "coins"}
    items = [(n, d) for n, d in photos(shared_data) if n in names]
    samples = [{"key": f"r{i:03d}", "jpg": d, "txt": names[n]} for i, (n, d) in enumerate(items)]
    write_shard(tmp_path / "in", "00000", samples)
    c = ScoreConfig(model=REAL_MODEL, pretrained=REAL_WEIGHTS, language_thresholds={}, default_threshold=-1.0)
    clip.score_shard(str(tmp_path / "in" / "00000.tar"), str(tmp_path / "out"), c)
    img, txt, _, _ = load_outputs(tmp_path / "out", "00000")
    matched = np.sum(img * txt, axis=1)
    shuffled = np.sum(img * np.roll(txt, 1, axis=0), axis=1)
    assert matched.mean() > shuffled.mean() + 0.03
    assert np.mean(matched > shuffled) >= 0.8


def test_tar_with_directories_and_hidden_members(tmp_path):
    path = tmp_path / "x.tar"
    with tarfile.open(path, "w") as tar:
        for name, data in [("sub/._a.jpg", b"junk"), ("sub/a.jpg", b"1"), ("sub/a.txt", b"t")]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        d = tarfile.TarInfo("sub")
        d.type = tarfile.DIRTYPE
        tar.addfile(d)
    with open(path, "rb") as fh:
        got = list(wds.iter_samples(fh))
    assert [(s.key, sorted(s.files)) for s in got] == [("sub/a", ["jpg", "txt"])]


@pytest.mark.integration
def test_shard_scored_from_and_to_s3(s3_server, images_dir, shared_data):
    """Shards, heads and outputs on a real S3 server (SeaweedFS on loopback)."""
    from crawlpairs import storage

    st = s3_server.storage
    for name in ("00002.tar", "00002.parquet"):
        storage.write_bytes(s3_server.uri("images", name), (images_dir / name).read_bytes(), st)
    nsfw = shared_data / "models" / "laion-nsfw" / "clip_autokeras_nsfw_b32_weights.npz"
    storage.write_bytes(s3_server.uri("models", nsfw.name), nsfw.read_bytes(), st)
    out = s3_server.uri("out")
    stats = clip.score_shard(s3_server.uri("images", "00002.tar"), out, cfg(nsfw_model=s3_server.uri("models", nsfw.name)), st)
    assert stats.counts["rows_in"] == 7 and stats.counts["rows_out"] == 3
    assert stats.errors["head_dim_mismatch"] == 1  # loaded from S3, then skipped for its width
    uris = clip.emb_uris(out, "00002")
    img = np.load(io.BytesIO(storage.read_bytes(uris["img_emb"], st)))
    meta = pq.read_table(io.BytesIO(storage.read_bytes(uris["metadata"], st))).to_pandas()
    assert img.shape == (3, 64) and list(meta.key) == ["c00002", "c00003", "c00006"]
    assert storage.exists(clip.rows_uri(out, "00002"), st)
    same = cfg(nsfw_model=s3_server.uri("models", nsfw.name))
    again = clip.score_shard(s3_server.uri("images", "00002.tar"), out, same, st)
    assert again.counts["shards_skipped_done"] == 1


def test_score_batch_is_a_pure_step_over_pixels_and_captions(shared_data):
    """read -> score_batch -> write: the middle step needs no file, shard or Spark; its similarity is the
    dot product of the embeddings it returns, and the multilingual model only changes other languages' rows."""
    cfg = ScoreConfig(model=TINY, pretrained=None, multilingual_model=TINY, main_model_languages=["en"])
    stats = Stats()
    models = clip.load_models(cfg, "cpu", None, stats)
    imgs = [clip.load_image(data, models.main.spec)[0] for _, data in photos(shared_data)[:3]]
    timing = dict.fromkeys(("model_image", "model_text", "multilingual", "heads"), 0.0)
    b = clip.score_batch(np.stack(imgs), ["a rocket", "ein Astronaut", "a cat"], ["en", "de", "en"],
                         models, cfg, timing)
    assert b.img.shape == b.txt.shape == (3, models.main.dim) and not b.heads and not b.truncated.any()
    assert b.similarity_model == ["main", "multilingual", "main"]
    main_sim = np.sum(b.img * b.txt, axis=1)
    np.testing.assert_allclose(b.similarity[[0, 2]], main_sim[[0, 2]], atol=1e-6)
    assert timing["model_image"] > 0 and timing["multilingual"] > 0
