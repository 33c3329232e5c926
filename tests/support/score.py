"""Shards in img2dataset's layout (tar + Parquet) built from real photos and generated images.

The download stage writes the same layout; until its output is available these fixtures
write it directly: `key.jpg` / `key.txt` / `key.json` in a tar, and a Parquet beside it
with one row per sample (key, uid, url, text, language, status, width, height, sha256).
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import numpy as np

TINY = "tiny-clip"  # crawlpairs/models/tiny-clip.json: embed 64, 64 px, 2+2 layers, random weights

LANGS = ["en", "de", "fr", "en", "es", "en"]


def jpeg(img, size: int | None = 256, quality: int = 90) -> bytes:
    from PIL import Image

    img = img.convert("RGB")
    if size:
        img = img.resize((size, size), Image.BICUBIC)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def photos(shared_data: Path) -> list[tuple[str, bytes]]:
    """The real photographs (name, jpeg bytes) from ../shared/data/images."""
    from PIL import Image

    out = []
    for p in sorted((shared_data / "images").glob("*/*")):
        if p.suffix.lower() in (".png", ".jpg"):
            with Image.open(p) as im:
                out.append((p.stem, jpeg(im)))
    return out


def generated(n: int, seed: int = 0) -> list[tuple[str, bytes]]:
    """Synthetic images: gradients and noise of varying sizes/aspect ratios."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        w, h = int(rng.integers(40, 300)), int(rng.integers(40, 300))
        base = rng.integers(0, 255, size=(1, 1, 3))
        grad = np.linspace(0, 1, w)[None, :, None] * rng.integers(0, 255, size=(1, 1, 3))
        noise = rng.integers(0, 40, size=(h, w, 3))
        arr = np.clip(base + grad + noise, 0, 255).astype(np.uint8)
        out.append((f"gen{i}", jpeg(Image.fromarray(arr), size=None)))
    return out


def write_shard(folder: Path, name: str, samples: list[dict], with_parquet: bool = True) -> Path:
    """samples: dicts with key and optional jpg (bytes), txt (str), json (dict), plus meta columns.

    A sample without "txt" gets no .txt member (the bad-input case); "jpg": b"" writes a
    zero-byte image.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    tar_path = folder / f"{name}.tar"
    rows = []
    with tarfile.open(tar_path, "w") as tar:
        for s in samples:
            key = s["key"]
            meta = {"key": key, "uid": hashlib.sha1(key.encode()).hexdigest(), "url": f"http://img.test/{key}.jpg",
                    "text": s.get("txt", s.get("caption")), "language": s.get("language", "en"), "status": "success",
                    "width": s.get("width", 256), "height": s.get("height", 256),
                    "sha256": hashlib.sha256(s.get("jpg") or b"").hexdigest() if "jpg" in s else None}
            members = {}
            if "jpg" in s:
                members["jpg"] = s["jpg"]
            if "txt" in s:
                members["txt"] = s["txt"].encode("utf-8")
            members["json"] = json.dumps(meta).encode()
            for ext, data in members.items():
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            rows.append(meta)
    if with_parquet:
        pq.write_table(pa.Table.from_pylist(rows), folder / f"{name}.parquet")
    return tar_path


def good_samples(shared_data: Path, n_generated: int = 20, prefix: str = "a") -> list[dict]:
    items = photos(shared_data) + generated(n_generated, seed=len(prefix))
    out = []
    for i, (name, data) in enumerate(items):
        out.append({"key": f"{prefix}{i:05d}", "jpg": data, "txt": f"a photo of {name}",
                    "language": LANGS[i % len(LANGS)]})
    return out


def similarity_band(sim: float | None, width: float) -> float | None:
    """The reference for jobs/score.py's Spark expression: 0.317 -> 0.3 with width 0.05, the
    band's lower edge (the tests compare the job's column with it row by row)."""
    if sim is None or sim != sim:
        return None
    return round(float(np.floor(round(sim / width, 6)) * width), 6)
