"""Embedding folders in score's layout (clip-retrieval's), written by the tests themselves."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from support.photos import CAPTIONS, IMAGES, clip_folder


def unit(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    x = rng.normal(size=(n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def write_embeddings(root: Path, sizes: list[int], dim: int = 16, kinds=("img_emb", "text_emb"),
                     seed: int = 0) -> dict[str, np.ndarray]:
    """root/<kind>/<kind>_NNNN.npy + root/metadata/metadata_NNNN.parquet, row-aligned.

    Returns every kind's vectors concatenated in part order (row i == global id i).
    """
    rng = np.random.default_rng(seed)
    out: dict[str, list[np.ndarray]] = {k: [] for k in kinds}
    start = 0
    for i, n in enumerate(sizes):
        for kind in kinds:
            (root / kind).mkdir(parents=True, exist_ok=True)
            x = unit(rng, n, dim)
            np.save(root / kind / f"{kind}_{i:04d}.npy", x)
            out[kind].append(x)
        (root / "metadata").mkdir(parents=True, exist_ok=True)
        ids = range(start, start + n)
        pd.DataFrame({
            "uid": [f"uid{j}" for j in ids],
            "url": [f"https://img.example/{j}.jpg" for j in ids],
            "text": [f"caption {j}" for j in ids],
            "similarity": np.full(n, 0.3, dtype=np.float32),
            "sha256": ["x"] * n,  # not in metadata_columns: must not be copied
        }).to_parquet(root / "metadata" / f"metadata_{i:04d}.parquet", index=False)
        start += n
    return {k: np.concatenate(v) if v else np.zeros((0, dim), np.float32) for k, v in out.items()}


@pytest.fixture
def make_embeddings():
    return write_embeddings


@pytest.fixture
def photo_embeddings(tmp_path, shared_data):
    """OUT/embeddings for four real photos and their captions, embedded by score's own encoder
    (tiny-clip, seeded random weights). Returns (embeddings root, photo paths, urls)."""
    from crawlpairs.udfs.score import clip

    images = [shared_data / "images" / "skimage" / f for f in IMAGES]
    enc = clip.get_encoder("tiny-clip", None, "cpu", "fp32")
    pixels = np.stack([clip.load_image(p.read_bytes(), enc.spec)[0] for p in images])
    urls = [f"https://img.example/{p.name}" for p in images]
    root = tmp_path / "out" / "embeddings"
    clip_folder(root, enc.encode_images(pixels), enc.encode_texts(CAPTIONS), urls,
                {"model": "tiny-clip", "pretrained": None, "model_config_dir": None})
    return root, images, urls


# A tiny open_clip architecture (random weights, saved once so build and query load the same ones).
TINY = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory):
    """(model name, checkpoint path, config dir) of a 32-d open_clip model with random weights."""
    import open_clip
    import torch

    d = tmp_path_factory.mktemp("tiny-clip")
    (d / "crawlpairs-tiny-knn.json").write_text(json.dumps(TINY))
    open_clip.add_model_config(str(d))
    torch.manual_seed(0)
    model = open_clip.create_model("crawlpairs-tiny-knn", pretrained=None)
    ckpt = d / "tiny.pt"
    torch.save({"state_dict": model.state_dict()}, ckpt)
    return "crawlpairs-tiny-knn", str(ckpt), str(d)
