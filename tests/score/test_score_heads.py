"""Heads on the real LAION files vs reference forward passes written here independently.

The tiny test CLIP gives 64-d embeddings and the heads take 512/768: head tests feed random
L2-normalised embeddings of the head's own width; the stage's handling of a width mismatch
(skipped, counted) is tested in test_score_shard.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from crawlpairs.udfs.score.heads import load_head, nsfw_tag


def unit(n: int, d: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def models(shared_data: Path) -> Path:
    return shared_data / "models"


@pytest.mark.parametrize("name,dim", [("sa_0_4_vit_b_32_linear.pth", 512), ("sa_0_4_vit_b_16_linear.pth", 512),
                                      ("sa_0_4_vit_l_14_linear.pth", 768)])
def test_laion_linear_aesthetic_matches_torch_linear(shared_data, name, dim):
    path = models(shared_data) / "laion-aesthetic" / name
    head = load_head("aesthetic", path.read_bytes(), source=str(path))
    assert head.kind == "linear" and head.in_dim == dim

    ref = torch.nn.Linear(dim, 1)  # LAION's own usage: nn.Linear(d, 1) + load_state_dict
    ref.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    x = unit(64, dim)
    with torch.no_grad():
        expected = ref(torch.from_numpy(x)).numpy()[:, 0]
    np.testing.assert_allclose(head(x), expected, rtol=1e-5, atol=1e-5)
    assert np.all((expected > 0) & (expected < 12))  # aesthetic scores live around 1..10


@pytest.mark.parametrize("name", ["sac+logos+ava1-l14-linearMSE.pth", "ava+logos-l14-linearMSE.pth"])
def test_improved_aesthetic_mlp_matches_reference_module(shared_data, name):
    path = models(shared_data) / "improved-aesthetic" / name
    head = load_head("aesthetic", path.read_bytes(), source=str(path))
    assert head.kind == "mlp" and head.in_dim == 768

    class MLP(torch.nn.Module):  # the predictor's module as published (dropout, no activations)
        def __init__(self) -> None:
            super().__init__()
            self.layers = torch.nn.Sequential(
                torch.nn.Linear(768, 1024), torch.nn.Dropout(0.2), torch.nn.Linear(1024, 128),
                torch.nn.Dropout(0.2), torch.nn.Linear(128, 64), torch.nn.Dropout(0.1),
                torch.nn.Linear(64, 16), torch.nn.Linear(16, 1))

        def forward(self, x):
            return self.layers(x)

    ref = MLP()
    ref.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    ref.eval()
    x = unit(32, 768, seed=1)
    with torch.no_grad():
        expected = ref(torch.from_numpy(x)).numpy()[:, 0]
    np.testing.assert_allclose(head(x), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name,dims", [("clip_autokeras_nsfw_b32_weights.npz", [512, 32, 32, 1]),
                                       ("clip_autokeras_binary_nsfw_l14_weights.npz", [768, 64, 512, 256, 1])])
def test_nsfw_detector_matches_torch_reference(shared_data, name, dims):
    path = models(shared_data) / "laion-nsfw" / name
    head = load_head("nsfw", path.read_bytes(), source=str(path))
    assert head.kind == "keras_mlp" and head.in_dim == dims[0]
    assert [w.shape[1] for w, _ in head.layers] == dims[1:]

    z = np.load(path)
    x = torch.from_numpy(unit(50, dims[0], seed=2)).double()  # reference in float64 torch
    h = (x - torch.from_numpy(z["l1_mean"]).double()) / torch.sqrt(torch.from_numpy(z["l1_variance"]).double())
    n_dense = len(dims) - 1
    for i in range(2, 2 + n_dense):
        h = h @ torch.from_numpy(z[f"l{i}_kernel"]).double() + torch.from_numpy(z[f"l{i}_bias"]).double()
        h = torch.relu(h) if i < 1 + n_dense else torch.sigmoid(h)
    expected = h[:, 0].numpy()
    got = head(x.float().numpy())
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    assert np.all((got >= 0) & (got <= 1))


def test_head_refuses_a_wrong_width(shared_data):
    path = models(shared_data) / "laion-nsfw" / "clip_autokeras_nsfw_b32_weights.npz"
    head = load_head("nsfw", path.read_bytes(), source=str(path))
    assert head.check_dim(512) is None
    why = head.check_dim(64)
    assert "512" in why and "64" in why
    with pytest.raises(ValueError):
        head(unit(3, 64))


def test_not_a_head_is_a_clear_error(tmp_path):
    p = tmp_path / "x.pth"
    torch.save({"foo": torch.zeros(3)}, p)
    with pytest.raises(ValueError, match="not a linear head"):
        load_head("aesthetic", p.read_bytes(), source=str(p))


def test_nsfw_tags_like_laion():
    assert nsfw_tag(0.1, 0.3, 0.5) == "UNLIKELY"
    assert nsfw_tag(0.3, 0.3, 0.5) == "UNSURE"
    assert nsfw_tag(0.9, 0.3, 0.5) == "NSFW"
    assert nsfw_tag(None, 0.3, 0.5) is None
    assert nsfw_tag(float("nan"), 0.3, 0.5) is None
