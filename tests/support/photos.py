"""Four real photos (shared data, skimage) with captions, as an embeddings folder score would write."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

CAPTIONS = ["a red rocket on the launch pad", "an astronaut portrait", "a cup of coffee", "a cat"]
IMAGES = ("rocket.jpg", "astronaut.png", "coffee.png", "chelsea.png")


def clip_folder(root: Path, img: np.ndarray, txt: np.ndarray, urls: list[str], score_cfg: dict) -> None:
    """An embeddings folder as score writes it for the four photos, plus score's `_stats.json`
    (OUT/scored/_stats.json with its config: index records the CLIP model from it)."""
    for kind, x in (("img_emb", img), ("text_emb", txt)):
        (root / kind).mkdir(parents=True)
        np.save(root / kind / f"{kind}_00000.npy", x)
    (root / "metadata").mkdir()
    pd.DataFrame({"uid": list("abcd"), "url": urls, "text": CAPTIONS}).to_parquet(
        root / "metadata" / "metadata_00000.parquet")
    (root.parent / "scored").mkdir()
    (root.parent / "scored" / "_stats.json").write_text(json.dumps({"config": {"score": score_cfg}}))
