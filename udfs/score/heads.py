"""Small heads on L2-normalised CLIP image embeddings: aesthetic, NSFW, watermark.

Formats understood (detected from the file, not from its name):

* LAION aesthetic linear head (``sa_0_4_vit_*_linear.pth``): ``weight [1, d]``, ``bias [1]``;
  output is the score itself (about 1..10).
* improved-aesthetic MLP (``*-l14-linearMSE.pth``): ``layers.{0,2,4,6,7}.{weight,bias}``,
  768->1024->128->64->16->1. The original module has Dropout between the first four
  Linear layers and *no* activations, so at inference it is five affine maps in a row.
* LAION CLIP-based NSFW detector exported to numpy (``*_weights.npz``): ``l1_mean``,
  ``l1_variance`` (a Keras Normalization layer), then ``lN_kernel [in, out]`` / ``lN_bias``
  dense layers with ReLU between them and a sigmoid after the last.

Every head is evaluated in numpy float32 (heads are tiny: a batch of 256 x 768 through the
NSFW MLP is well under a millisecond), so they need neither torch nor TensorFlow and run
the same on CPU-only and GPU executors. A head whose input width differs from the CLIP
model's embedding width is not applied: `Head.check_dim` says so and the caller counts it.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass

import numpy as np

KERAS_EPSILON = 1e-7  # Keras Normalization divides by max(sqrt(var), epsilon)


@dataclass
class Head:
    """An affine stack over embeddings: x -> norm -> (W x + b, act)* -> output activation."""

    name: str
    kind: str  # "linear" | "mlp" | "keras_mlp"
    layers: list[tuple[np.ndarray, np.ndarray]]  # (W [in, out], b [out])
    hidden_activation: str = "none"  # "relu" | "none"
    output_activation: str = "none"  # "sigmoid" | "none"
    mean: np.ndarray | None = None
    scale: np.ndarray | None = None  # divide by this after subtracting mean
    source: str = ""

    @property
    def in_dim(self) -> int:
        return int(self.layers[0][0].shape[0])

    def check_dim(self, dim: int) -> str | None:
        """None when the head can take `dim`-wide embeddings, else a one-line reason."""
        if dim == self.in_dim:
            return None
        return f"{self.name} head {self.source or self.kind} takes {self.in_dim}-d embeddings, the CLIP model gives {dim}-d"

    def __call__(self, emb: np.ndarray) -> np.ndarray:
        """[n, d] float embeddings (already L2-normalised) -> [n] float32 outputs."""
        x = np.asarray(emb, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.in_dim:
            raise ValueError(self.check_dim(x.shape[-1]) or f"bad embedding shape {x.shape}")
        if self.mean is not None:
            x = (x - self.mean) / self.scale
        last = len(self.layers) - 1
        for i, (w, b) in enumerate(self.layers):
            x = x @ w + b
            if i < last and self.hidden_activation == "relu":
                np.maximum(x, 0.0, out=x)
        out = x[:, 0]
        if self.output_activation == "sigmoid":
            out = 1.0 / (1.0 + np.exp(-out))
        return out.astype(np.float32)


def _from_state_dict(name: str, sd: dict[str, np.ndarray], source: str, output_activation: str) -> Head:
    if set(sd) >= {"weight", "bias"} and len(sd) == 2:
        w, b = sd["weight"], sd["bias"]
        return Head(name, "linear", [(w.T.copy(), b.reshape(-1))], output_activation=output_activation, source=source)
    pattern = re.compile(r"^(?:.*\.)?layers\.(\d+)\.weight$")
    idx = sorted(int(m.group(1)) for k in sd if (m := pattern.match(k)))
    if not idx:
        raise ValueError(f"{source}: not a linear head or a layers.N MLP (keys: {sorted(sd)[:6]})")
    prefix = next(k for k in sd if pattern.match(k)).rsplit("layers.", 1)[0]
    layers = [(sd[f"{prefix}layers.{i}.weight"].T.copy(), sd[f"{prefix}layers.{i}.bias"].reshape(-1)) for i in idx]
    for (w1, _), (w2, _) in zip(layers, layers[1:], strict=False):
        if w1.shape[1] != w2.shape[0]:
            raise ValueError(f"{source}: layer widths do not chain ({w1.shape} then {w2.shape})")
    # improved-aesthetic: Linear/Dropout only, no activations between layers.
    return Head(name, "mlp", layers, output_activation=output_activation, source=source)


def _from_npz(name: str, z: dict[str, np.ndarray], source: str) -> Head:
    dense = sorted(int(m.group(1)) for k in z if (m := re.match(r"^l(\d+)_kernel$", k)))
    if not dense:
        raise ValueError(f"{source}: no lN_kernel arrays")
    layers = [(z[f"l{i}_kernel"].astype(np.float32), z[f"l{i}_bias"].astype(np.float32).reshape(-1)) for i in dense]
    mean = scale = None
    if "l1_mean" in z and "l1_variance" in z:
        mean = z["l1_mean"].astype(np.float32).reshape(-1)
        scale = np.maximum(np.sqrt(z["l1_variance"].astype(np.float32).reshape(-1)), KERAS_EPSILON)
    return Head(name, "keras_mlp", layers, hidden_activation="relu", output_activation="sigmoid",
                mean=mean, scale=scale, source=source)


def load_head(name: str, data: bytes, source: str = "", output_activation: str | None = None) -> Head:
    """Build a head from file bytes (.pth state dict or .npz arrays).

    `output_activation`: None picks the format's own ("sigmoid" for .npz, none for .pth);
    a watermark head given as a .pth logit model wants "sigmoid".
    """
    if data[:2] == b"PK" and _is_npz(data):
        head = _from_npz(name, dict(np.load(io.BytesIO(data))), source)
        if output_activation:
            head.output_activation = output_activation
        return head
    import torch  # .pth files are torch pickles; weights_only keeps them data-only

    sd = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    if not isinstance(sd, dict):
        raise ValueError(f"{source}: expected a state dict, got {type(sd).__name__}")
    arrays = {k: v.detach().float().numpy() for k, v in sd.items() if hasattr(v, "detach")}
    return _from_state_dict(name, arrays, source, output_activation or "none")


def _is_npz(data: bytes) -> bool:
    """torch .pth files are zip archives too; an npz holds only .npy members."""
    import zipfile

    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            names = zf.namelist()
    except zipfile.BadZipFile:
        return False
    return bool(names) and all(n.endswith(".npy") for n in names)


def nsfw_tag(punsafe: float | None, unsure: float, nsfw: float) -> str | None:
    """LAION's three-way tag from the NSFW probability: UNLIKELY < unsure <= UNSURE < nsfw <= NSFW."""
    if punsafe is None or punsafe != punsafe:  # None or NaN: no detector ran
        return None
    if punsafe >= nsfw:
        return "NSFW"
    if punsafe >= unsure:
        return "UNSURE"
    return "UNLIKELY"
