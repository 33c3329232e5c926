"""Language ID with fastText lid.176, loaded once per executor process.

The model (a local path or any URI `crawlpairs.storage.local_copy` can fetch) is
cached at module level keyed by its URI, so every task an executor's Python worker
runs reuses it. Prediction is batched: one `predict` call per Arrow batch.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

_MODELS: dict[str, Any] = {}
_LOCK = threading.Lock()


def load_model(uri: str) -> Any:
    """The fastText model for `uri`, loaded on first use in this process."""
    model = _MODELS.get(uri)
    if model is not None:
        return model
    with _LOCK:
        model = _MODELS.get(uri)
        if model is None:
            import fasttext

            try:
                from crawlpairs.storage import local_copy

                path = local_copy(uri)
            except ImportError:  # pragma: no cover - storage is part of the package
                path = uri
            # fasttext prints a deprecation warning on load; it is harmless.
            model = fasttext.load_model(path)
            _MODELS[uri] = model
    return model


def predict(texts: list[str], uri: str) -> tuple[list[str | None], np.ndarray]:
    """(language codes, float32 scores) for cleaned one-line texts; empty text -> (None, 0)."""
    if not texts:
        return [], np.zeros(0, dtype=np.float32)
    model = load_model(uri)
    # fastText treats "\n" as end of input; cleaned text has none, but be safe.
    safe = [t if "\n" not in t else t.replace("\n", " ") for t in texts]
    labels, probs = model.predict(safe, k=1)
    langs: list[str | None] = []
    scores = np.zeros(len(texts), dtype=np.float32)
    for i, (lab, pr) in enumerate(zip(labels, probs, strict=True)):
        if lab and texts[i]:
            langs.append(lab[0][9:])  # strip "__label__"
            scores[i] = min(float(pr[0]), 1.0)
        else:
            langs.append(None)
    return langs, scores
