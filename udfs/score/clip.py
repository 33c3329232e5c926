"""CLIP scoring of one webdataset shard: decode, embed, score, filter, write. No Spark here.

What runs on an executor for each shard (`score_shard`):

1. stream the tar (`udfs.wds`), join each sample with its row of the shard's Parquet;
2. decode + resize + centre-crop images in a thread pool (Pillow releases the GIL) while
   the model works on the previous batch; images travel to the device as uint8 and are
   normalised there (4x less host->device traffic than float32);
3. image and text embeddings from the open_clip model, loaded once per executor process
   (module-level cache; Spark reuses Python workers), autocast fp16 on GPU;
4. cosine similarity, heads (NSFW, aesthetic, watermark) on the image embedding,
   per-language thresholds and cut-offs -> one `drop_reason` per dropped row;
5. write `embeddings/{img_emb,text_emb,metadata}/…_<shard>.{npy,parquet}` for kept rows
   (clip-retrieval's layout, same row order), the per-shard rows of all samples with their
   scores and drop reason, and the shard's stats. The rows file is written last: its
   existence marks the shard done, so a re-run skips it (resumable, idempotent).

torch and open_clip are imported lazily so that importing this module costs nothing on
an extract node.
"""

from __future__ import annotations

import io
import os
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import numpy as np

from crawlpairs import fingerprint, storage
from crawlpairs.config import ScoreConfig, StorageConfig
from crawlpairs.layout import meta_dir
from crawlpairs.stats import Stats
from crawlpairs.udfs import wds
from crawlpairs.udfs.score import heads as heads_mod

ROWS_DIR = meta_dir("scored") + "/shards"  # per-shard rows (kept + dropped), the commit marker; beside scored/
EMB_DIR = "embeddings"

# Columns taken from img2dataset's Parquet / .json when present (else null), with their types.
PASSTHROUGH: dict[str, str] = {
    "uid": "string",
    "url": "string",
    "page_url": "string",
    "language": "string",
    "language_score": "float64",
    "license": "string",
    "sha256": "string",
    "phash": "string",
    "width": "int64",
    "height": "int64",
    "original_width": "int64",
    "original_height": "int64",
}


class ImageError(Exception):
    """An image that cannot be used; `kind` is the counted reason."""

    def __init__(self, kind: str, message: str = "") -> None:
        super().__init__(message or kind)
        self.kind = kind


# -- images ------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageSpec:
    """How the model wants its pixels (from open_clip's preprocess config)."""

    size: int = 224
    resize_mode: str = "shortest"  # shortest (resize + centre crop) | squash | longest
    mean: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
    std: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)
    fill: int = 0


def load_image(data: bytes | None, spec: ImageSpec, min_side: int = 1,
               timing: dict[str, float] | None = None) -> tuple[np.ndarray, tuple[int, int]]:
    """Image bytes -> (uint8 [size, size, 3] array, original (width, height)).

    Resize like torchvision's Resize(size) + CenterCrop(size) on a PIL image (bicubic,
    shorter side to `size`), so results match open_clip's own preprocess. For JPEGs,
    Pillow's draft mode first decodes at the smallest 1/2^k scale still >= size, which
    is most of the decode cost saved on large photos. Raises ImageError.
    """
    from PIL import Image

    if timing is not None:
        timing["_t"] = time.perf_counter()
    if not data:
        raise ImageError("empty_image")
    try:
        im = Image.open(io.BytesIO(data))
        orig = im.size
        if im.format == "JPEG" and spec.resize_mode == "shortest":
            im.draft("RGB", (spec.size, spec.size))
        if im.mode != "RGB":
            im = im.convert("RGBA").convert("RGB") if im.mode in ("P", "LA", "PA") else im.convert("RGB")
        im.load()
    except Image.DecompressionBombError as exc:
        raise ImageError("image_too_large", str(exc)[:200]) from None
    except Exception as exc:  # noqa: BLE001 - truncated/unknown data, or a decoder bug: never fail the task
        raise ImageError("corrupt_image", f"{exc.__class__.__name__}: {exc}"[:200]) from None
    if min(orig) < min_side:
        raise ImageError("image_too_small", f"{orig[0]}x{orig[1]}")
    if timing is not None:
        t1 = time.perf_counter()
        timing["decode"] += t1 - timing["_t"]
    size = spec.size
    w, h = im.size
    try:
        if spec.resize_mode == "squash":
            im = im.resize((size, size), Image.BICUBIC)
        elif spec.resize_mode == "longest":
            scale = size / max(w, h)
            nw, nh = max(1, int(w * scale)), max(1, int(h * scale))
            canvas = Image.new("RGB", (size, size), (spec.fill,) * 3)
            canvas.paste(im.resize((nw, nh), Image.BICUBIC), ((size - nw) // 2, (size - nh) // 2))
            im = canvas
        else:
            if w <= h:
                nw, nh = size, max(1, int(size * h / w))
            else:
                nw, nh = max(1, int(size * w / h)), size
            if (nw, nh) != (w, h):
                im = im.resize((nw, nh), Image.BICUBIC)
            left = int(round((nw - size) / 2.0))
            top = int(round((nh - size) / 2.0))
            im = im.crop((left, top, left + size, top + size))
        arr = np.asarray(im, dtype=np.uint8)
    except Exception as exc:  # noqa: BLE001
        raise ImageError("corrupt_image", f"{exc.__class__.__name__}: {exc}"[:200]) from None
    if arr.shape != (size, size, 3):
        raise ImageError("corrupt_image", f"unexpected array shape {arr.shape}")
    if timing is not None:
        timing["resize"] += time.perf_counter() - t1
    return arr, orig


# -- models ------------------------------------------------------------------------

_MODELS: dict[tuple, ClipEncoder] = {}
_MODELS_LOCK = threading.Lock()


def tiny_config_dir() -> str:
    """Folder of the open_clip configs shipped with crawlpairs (`tiny-clip`: tests and demo)."""
    return str(resources.files("crawlpairs") / "models")


def register_model_configs(extra_dir: str | None = None) -> None:
    """Make crawlpairs' own configs (and a user's folder) known to open_clip by name."""
    import open_clip

    for d in (tiny_config_dir(), extra_dir):
        if d and os.path.isdir(d) or d and d.endswith(".json") and os.path.isfile(d):
            open_clip.add_model_config(d)


def resolve_pretrained(pretrained: str | None, st: StorageConfig | None = None) -> str | None:
    """A tag stays a tag (open_clip fetches it); a path or URI becomes a local file."""
    if not pretrained or pretrained.lower() in ("none", "random"):
        return None
    if "://" in pretrained and not pretrained.startswith("hf-hub:"):
        return storage.local_copy(pretrained, st)
    return pretrained


def pick_device(setting: str, gpu_addresses: Sequence[str] | None = None) -> str:
    """"cpu", "cuda:N": the GPU Spark assigned this task when there is one.

    `gpu_addresses` are TaskContext.resources()["gpu"].addresses. When the cluster
    manager already narrowed CUDA_VISIBLE_DEVICES to the assigned GPU, its address can
    be out of range for this process: then the one visible device is used.
    """
    if setting == "cpu":
        return "cpu"
    import torch

    if not torch.cuda.is_available():
        if setting.startswith("cuda"):
            raise RuntimeError(f"device {setting!r} requested but CUDA is not available")
        return "cpu"
    if setting.startswith("cuda:"):
        return setting
    count = torch.cuda.device_count()
    if gpu_addresses:
        try:
            idx = int(gpu_addresses[0])
        except ValueError:
            idx = 0
        return f"cuda:{idx if idx < count else 0}"
    return "cuda:0"


class ClipEncoder:
    """An open_clip model, its tokenizer and pixel spec on one device."""

    def __init__(self, name: str, pretrained: str | None, device: str, precision: str,
                 config_dir: str | None = None, st: StorageConfig | None = None) -> None:
        import open_clip
        import torch

        register_model_configs(config_dir)
        weights = resolve_pretrained(pretrained, st)
        if weights is None:
            # Random weights must be the same in every executor process, or embeddings of
            # two shards would live in different spaces: seed without touching global RNG.
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                model = open_clip.create_model(name, pretrained=None, device="cpu")
        else:
            model = open_clip.create_model(name, pretrained=weights, device="cpu")
        self.device = device
        self.model = model.to(device).eval()
        self.tokenizer = open_clip.get_tokenizer(name)
        self.context_length = int(getattr(self.tokenizer, "context_length", 77) or 77)
        if precision == "auto":
            precision = "fp16" if device.startswith("cuda") else "fp32"
        self.autocast_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision)
        self.precision = precision
        pp = open_clip.get_model_preprocess_cfg(model)
        size = pp.get("size", 224)
        size = int(size[0] if isinstance(size, (tuple, list)) else size)
        self.spec = ImageSpec(size=size, resize_mode=pp.get("resize_mode", "shortest"),
                              mean=tuple(pp.get("mean", ImageSpec.mean)), std=tuple(pp.get("std", ImageSpec.std)),
                              fill=int(pp.get("fill_color", 0) or 0))
        dev = torch.device(device)
        self._mean = torch.tensor(self.spec.mean, device=dev).view(1, 3, 1, 1) * 255.0
        self._std = torch.tensor(self.spec.std, device=dev).view(1, 3, 1, 1) * 255.0
        self.profile = False  # synchronise CUDA around phases so their timings are real
        self.timing = {"transfer": 0.0}
        self.trim_ok = False  # set once the trimmed text path is verified exact for this model
        with torch.inference_mode():
            self.dim = int(self.encode_texts(["a"]).shape[1])
            self.trim_ok = self._trim_is_exact()

    def _trim_is_exact(self) -> bool:
        """Trimming padding is exact for causal text towers pooled at the EOT token; check it once.

        Captions are ~10-20 tokens of a 77-token context: cutting the batch to its longest
        caption saves most of the text tower's work. Any doubt (another tower type, a mismatch
        on a probe batch) keeps the full-length path.
        """
        import torch

        m = self.model
        if not (hasattr(m, "attn_mask") and m.attn_mask is not None and hasattr(m, "positional_embedding")
                and getattr(m, "text_pool_type", None) in ("argmax", "eos") and hasattr(m, "token_embedding")):
            return False
        probe = self.tokenize(["a", "a photo of a dog on a beach", "word " * 200])
        try:
            full = m.encode_text(probe.to(self.device)).float()
            short = self._encode_text_trimmed(probe[:1, :8].to(self.device)).float()
            short2 = self._encode_text_trimmed(probe[:2, :16].to(self.device)).float()
        except Exception:  # noqa: BLE001 - an architecture this code does not know
            return False
        return bool(torch.allclose(full[:1], short, atol=1e-4) and torch.allclose(full[:2], short2, atol=1e-4))

    def _encode_text_trimmed(self, text):
        """open_clip's CLIP.encode_text on the first L positions (positional embedding and causal mask cut)."""
        from open_clip.model import text_global_pool

        m = self.model
        n = text.shape[1]
        cast = m.transformer.get_cast_dtype()
        x = m.token_embedding(text).to(cast) + m.positional_embedding[:n].to(cast)
        x = m.transformer(x, attn_mask=m.attn_mask[:n, :n])
        x = m.ln_final(x)
        x = text_global_pool(x, text, m.text_pool_type, eos_token_id=getattr(m, "text_eos_id", None))
        if m.text_projection is not None:
            x = m.text_projection(x) if hasattr(m.text_projection, "weight") else x @ m.text_projection
        return x

    def _autocast(self):
        import contextlib

        import torch

        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.split(":")[0], dtype=self.autocast_dtype)

    def to_device(self, pixels: np.ndarray):
        """uint8 [n, h, w, 3] -> normalised float [n, 3, h, w] on the device."""
        import torch

        t = torch.from_numpy(pixels if pixels.flags.writeable else pixels.copy())
        if self.device.startswith("cuda"):
            t = t.pin_memory().to(self.device, non_blocking=True)
        t = t.permute(0, 3, 1, 2).float()
        return (t - self._mean) / self._std

    def _sync(self) -> None:
        if self.profile and self.device.startswith("cuda"):
            import torch

            torch.cuda.synchronize(self.device)

    def encode_images(self, pixels: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode(), self._autocast():
            t0 = time.perf_counter()
            x = self.to_device(pixels)
            self._sync()
            self.timing["transfer"] += time.perf_counter() - t0
            emb = self.model.encode_image(x).float()
            emb = torch.nn.functional.normalize(emb, dim=-1)
        return emb.cpu().numpy().astype(np.float32, copy=False)

    def tokenize(self, texts: list[str]):
        return self.tokenizer(texts)

    def encode_tokens(self, tokens, trim: bool = True) -> np.ndarray:
        """Token ids -> normalised embeddings; `trim` cuts the batch to its longest text when exact."""
        import torch

        with torch.inference_mode(), self._autocast():
            if trim and self.trim_ok:
                nonzero = (tokens != 0).any(dim=0).nonzero()
                n = int(nonzero.max()) + 1 if nonzero.numel() else 1
                emb = self._encode_text_trimmed(tokens[:, :n].to(self.device)).float()
            else:
                emb = self.model.encode_text(tokens.to(self.device)).float()
            emb = torch.nn.functional.normalize(emb, dim=-1)
        return emb.cpu().numpy().astype(np.float32, copy=False)

    def encode_texts(self, texts: list[str], trim: bool = True) -> np.ndarray:
        return self.encode_tokens(self.tokenize(texts), trim)


def get_encoder(name: str, pretrained: str | None, device: str, precision: str,
                config_dir: str | None = None, st: StorageConfig | None = None) -> ClipEncoder:
    """Once per process per (model, weights, device, precision)."""
    key = (name, pretrained, device, precision, config_dir)
    with _MODELS_LOCK:
        enc = _MODELS.get(key)
        if enc is None:
            enc = _MODELS[key] = ClipEncoder(name, pretrained, device, precision, config_dir, st)
        return enc


_HEADS: dict[tuple, heads_mod.Head] = {}


def get_head(kind: str, uri: str, st: StorageConfig | None = None) -> heads_mod.Head:
    key = (kind, uri)
    head = _HEADS.get(key)
    if head is None:
        data = storage.read_bytes(uri, st)
        act = "sigmoid" if kind == "watermark" else None
        head = _HEADS[key] = heads_mod.load_head(kind, data, source=uri, output_activation=act)
    return head


# -- thresholds --------------------------------------------------------------------


def threshold_for(language: str | None, cfg: ScoreConfig) -> float:
    if language and language in cfg.language_thresholds:
        return float(cfg.language_thresholds[language])
    return float(cfg.default_threshold)


def drop_reason(sim: float, language: str | None, punsafe: float | None, pwatermark: float | None,
                cfg: ScoreConfig) -> str | None:
    """The first configured filter a scored row fails, or None to keep it."""
    if sim < threshold_for(language, cfg):
        return "similarity_below_threshold"
    if punsafe is not None and punsafe == punsafe and punsafe >= cfg.punsafe_max:
        return "nsfw"
    if pwatermark is not None and pwatermark == pwatermark and pwatermark >= cfg.pwatermark_max:
        return "watermark"
    return None


def lsh_buckets(emb: np.ndarray, bits: int, tables: int, seed: int = 1234) -> np.ndarray:
    """Random-hyperplane LSH: [n, tables] int64 bucket ids; near vectors share buckets."""
    rng = np.random.default_rng(seed)
    planes = rng.standard_normal((tables, emb.shape[1], bits)).astype(np.float32)
    weights = (1 << np.arange(bits, dtype=np.int64))
    out = np.empty((emb.shape[0], tables), dtype=np.int64)
    for t in range(tables):
        out[:, t] = ((emb @ planes[t]) > 0).astype(np.int64) @ weights + (t << bits)
    return out


# -- one shard ---------------------------------------------------------------------


@dataclass
class Record:
    key: str
    image: bytes | None
    text: str | None
    meta: dict[str, Any]
    pixels: np.ndarray | None = None
    reason: str | None = None
    out: dict[str, Any] = field(default_factory=dict)


# Settings that change only speed or the final scored/ layout (rewritten by every run), not a
# shard's rows: changing them never makes a done shard stale.
NOT_IN_SHARD = ("device", "batch_size", "decode_threads", "force", "profile", "text_trim",
                "rows_per_file", "similarity_band_width")


def shard_settings(cfg: ScoreConfig) -> dict[str, Any]:
    """The settings a scored shard was computed under (compared before a done shard is reused)."""
    return fingerprint.settings(cfg, ignore=NOT_IN_SHARD)


def settings_uri(out_root: str) -> str:
    """Where the driver records the settings of the shards under `out_root` (checked before any work)."""
    return storage.join(out_root, ROWS_DIR, "_settings.json")


def rows_uri(out_root: str, sid: str) -> str:
    return storage.join(out_root, ROWS_DIR, f"{sid}.parquet")


def emb_uris(out_root: str, sid: str) -> dict[str, str]:
    base = storage.join(out_root, EMB_DIR)
    return {
        "img_emb": storage.join(base, "img_emb", f"img_emb_{sid}.npy"),
        "text_emb": storage.join(base, "text_emb", f"text_emb_{sid}.npy"),
        "metadata": storage.join(base, "metadata", f"metadata_{sid}.parquet"),
    }


def _records(shard: str, cfg: ScoreConfig, st: StorageConfig | None, stats: Stats) -> Iterator[Record]:
    meta = wds.read_metadata(lambda u: storage.open_uri(u, "rb", st), wds.sibling_parquet(shard), stats)
    try:
        fh = storage.open_uri(shard, "rb", st)
    except Exception as exc:  # noqa: BLE001 - an unreadable shard is counted, not raised
        stats.error("shard_unreadable", input=shard, message=f"{exc.__class__.__name__}: {exc}"[:300])
        return
    with fh:
        for sample in wds.iter_samples(fh, stats, source=shard):
            row = dict(meta.get(sample.key) or sample.meta() or {})
            _, image = sample.image()
            if image is None and (row.get("status") not in (None, "success") or set(sample.files) <= {"json"}):
                stats.incr("members_without_image_skipped")  # a failed download's .json, a stray member
                continue
            text = sample.text()
            if text is None:
                stats.error("missing_txt", input=f"{shard}#{sample.key}")
                fallback = row.get("caption") or row.get("text")
                text = fallback if isinstance(fallback, str) else None
            yield Record(sample.key, image, text, row)


def _chunks(items: Iterable[Record], n: int) -> Iterator[list[Record]]:
    batch: list[Record] = []
    for item in items:
        batch.append(item)
        if len(batch) >= n:
            yield batch
            batch = []
    if batch:
        yield batch


def _decode_many(records: list[Record], spec: ImageSpec, min_side: int) -> dict[str, float]:
    """Decode a chunk in a pool thread; returns the seconds spent decoding and resizing."""
    timing = {"decode": 0.0, "resize": 0.0, "_t": 0.0}
    for r in records:
        if r.image is None:
            r.reason = "missing_image"
            continue
        try:
            r.pixels, r.meta["_orig"] = load_image(r.image, spec, min_side, timing)
        except ImageError as exc:
            r.reason = exc.kind
            r.meta["_error"] = str(exc)
        r.image = None  # free the bytes early
    return timing


@dataclass
class Models:
    """What scoring a batch needs; get_encoder/get_head cache them per Python worker."""

    main: ClipEncoder
    multilingual: ClipEncoder | None
    heads: dict[str, heads_mod.Head]  # output column (punsafe, aesthetic, pwatermark) -> head


def load_models(cfg: ScoreConfig, device: str, st: StorageConfig | None, stats: Stats) -> Models:
    """The CLIP encoder(s) and the heads that fit its embedding size (a head that does not is counted)."""
    enc = get_encoder(cfg.model, cfg.pretrained, device, cfg.precision, cfg.model_config_dir, st)
    ml = None
    if cfg.multilingual_model:
        ml = get_encoder(cfg.multilingual_model, cfg.multilingual_pretrained, device, cfg.precision,
                         cfg.model_config_dir, st)
    heads: dict[str, heads_mod.Head] = {}
    for column, kind, uri in (("punsafe", "nsfw", cfg.nsfw_model), ("aesthetic", "aesthetic", cfg.aesthetic_model),
                              ("pwatermark", "watermark", cfg.watermark_model)):
        if not uri:
            continue
        try:
            head = get_head(kind, uri, st)
        except Exception as exc:  # noqa: BLE001 - a missing head file is a config error worth one line
            raise RuntimeError(f"--{kind}-model {uri}: {exc}") from exc
        why = head.check_dim(enc.dim)
        if why:
            stats.error("head_dim_mismatch", input=uri, message=why)
            stats.incr(f"head_skipped_{column}")
            continue
        heads[column] = head
    return Models(enc, ml, heads)


@dataclass
class BatchScores:
    img: np.ndarray  # image embeddings (rows normalised)
    txt: np.ndarray  # text embeddings
    similarity: np.ndarray
    similarity_model: list[str]  # "main" or "multilingual", per row
    heads: dict[str, np.ndarray]  # head column -> scores
    truncated: np.ndarray  # caption reached the tokenizer's context length


def score_batch(pixels: np.ndarray, texts: list[str], languages: list[str | None], models: Models,
                cfg: ScoreConfig, timing: dict[str, float]) -> BatchScores:
    """Embeddings, image-text similarity and head scores of one batch of decoded images (no I/O).

    Rows whose language is not in `main_model_languages` take their similarity from the
    multilingual model when one is configured; the embeddings are always the main model's.
    """
    enc, ml = models.main, models.multilingual
    t1 = time.perf_counter()
    img = enc.encode_images(pixels)
    t2 = time.perf_counter()
    tokens = enc.tokenize(texts)
    txt = enc.encode_tokens(tokens, cfg.text_trim)
    t3 = time.perf_counter()
    timing["model_image"] += t2 - t1
    timing["model_text"] += t3 - t2
    full = (tokens[:, -1] != 0).numpy() if hasattr(tokens, "numpy") else np.zeros(len(texts), bool)
    sim = np.sum(img * txt, axis=1)
    sim_model = ["main"] * len(texts)
    if ml is not None:
        main_langs = set(cfg.main_model_languages)
        idx = [i for i, lang in enumerate(languages) if (lang or "") not in main_langs]
        if idx:
            t4 = time.perf_counter()
            ml_img = ml.encode_images(pixels[idx])
            ml_txt = ml.encode_texts([texts[i] for i in idx], cfg.text_trim)
            sim[idx] = np.sum(ml_img * ml_txt, axis=1)
            for i in idx:
                sim_model[i] = "multilingual"
            timing["multilingual"] += time.perf_counter() - t4
    t5 = time.perf_counter()
    heads = {k: h(img) for k, h in models.heads.items()}
    timing["heads"] += time.perf_counter() - t5
    return BatchScores(img, txt, sim, sim_model, heads, full)


def _worker_threads(cfg: ScoreConfig, device: str, task_cpus: int, executor_cores: int | None) -> int:
    """Decode threads: the task's cores on CPU (shared with torch), the executor's beside a GPU."""
    if cfg.decode_threads > 0:
        return cfg.decode_threads
    if device == "cpu":
        return max(1, task_cpus)
    return executor_cores or os.cpu_count() or 1


def _done_stats(stats_uri: str, wanted: dict[str, Any], st: StorageConfig | None) -> Stats | None:
    """A done shard's stats when it was scored under the same settings, else None (score it again)."""
    try:
        done = Stats.from_dict(storage.read_json(stats_uri, st))
    except Exception:  # noqa: BLE001 - unreadable stats: the shard is scored again
        return None
    # one scored under other settings (an interrupted --force run, an output from before
    # fingerprints) is scored again, never reused
    if done.extra.get("settings") != wanted:
        return None
    # rows, drops and errors describe the output and stay; this run spent no time on the shard
    for k in [k for k in done.counts if k.startswith("ms_") or k == "shards_scored"]:
        del done.counts[k]
    done.incr("shards_skipped_done")
    return done


def score_shard(shard: str, out_root: str, cfg: ScoreConfig, st: StorageConfig | None = None,
                gpu_addresses: Sequence[str] | None = None, task_cpus: int = 1,
                executor_cores: int | None = None, force: bool = False) -> Stats:
    """Score one shard end to end: read + decode (a thread pool) -> score_batch -> write_shard.

    Returns its stats (also stored beside its rows, which are written last: the commit).
    """
    sid = wds.shard_id(shard)
    marker = rows_uri(out_root, sid)
    stats_uri = storage.join(out_root, ROWS_DIR, f"{sid}.stats.json")
    wanted = shard_settings(cfg)
    if not force and storage.exists(marker, st):
        done = _done_stats(stats_uri, wanted, st)
        if done is not None:
            return done

    import torch

    stats = Stats()
    stats.incr("shards_scored")
    t_start = time.perf_counter()
    device = pick_device(cfg.device, gpu_addresses)
    if device == "cpu":
        torch.set_num_threads(max(1, task_cpus))
    threads = _worker_threads(cfg, device, task_cpus, executor_cores)
    t0 = time.perf_counter()
    models = load_models(cfg, device, st, stats)
    enc = models.main
    stats.incr("ms_model_load", int((time.perf_counter() - t0) * 1000))

    kept: list[Record] = []
    all_rows: list[Record] = []
    kept_img: list[np.ndarray] = []
    kept_txt: list[np.ndarray] = []
    timing = {"decode_wait": 0.0, "decode_cpu": 0.0, "resize_cpu": 0.0, "model_image": 0.0, "model_text": 0.0,
              "heads": 0.0, "multilingual": 0.0}
    enc.profile = cfg.profile
    transfer0 = enc.timing["transfer"]

    def process(batch: list[Record], futures: list[Future]) -> None:
        tw = time.perf_counter()
        for f in futures:
            t = f.result()
            timing["decode_cpu"] += t["decode"]
            timing["resize_cpu"] += t["resize"]
        timing["decode_wait"] += time.perf_counter() - tw
        for r in batch:
            all_rows.append(r)
            if r.reason is None and r.text is None:
                r.reason = "missing_text"
        ok = [r for r in batch if r.reason is None]
        if not ok:
            return
        b = score_batch(np.stack([r.pixels for r in ok]), [r.text[: cfg.max_text_chars] for r in ok],
                        [r.meta.get("language") for r in ok], models, cfg, timing)
        stats.incr("texts_at_context_limit", int(b.truncated.sum()))
        for i, r in enumerate(ok):
            r.pixels = None
            punsafe, pwm, aest = (float(b.heads[k][i]) if k in b.heads else None
                                  for k in ("punsafe", "pwatermark", "aesthetic"))
            r.out = {"similarity": float(b.similarity[i]), "similarity_model": b.similarity_model[i],
                     "punsafe": punsafe, "pwatermark": pwm, "aesthetic": aest, "text_truncated": bool(b.truncated[i])}
            r.reason = drop_reason(float(b.similarity[i]), r.meta.get("language"), punsafe, pwm, cfg)
            if r.reason is None:
                kept.append(r)
                kept_img.append(b.img[i])
                kept_txt.append(b.txt[i])

    prefetch = 2
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="decode") as pool:
        pending: deque[tuple[list[Record], list[Future]]] = deque()
        for batch in _chunks(_records(shard, cfg, st, stats), cfg.batch_size):
            step = max(1, -(-len(batch) // (threads * 2)))
            futures = [pool.submit(_decode_many, batch[i: i + step], enc.spec, cfg.min_image_side)
                       for i in range(0, len(batch), step)]
            pending.append((batch, futures))
            if len(pending) > prefetch:
                process(*pending.popleft())
        while pending:
            process(*pending.popleft())

    t6 = time.perf_counter()
    write_embeddings(out_root, sid, kept, kept_img, kept_txt, cfg, st)
    count_rows(shard, all_rows, enc.spec.size, stats)
    stats.incr("ms_write_embeddings", int((time.perf_counter() - t6) * 1000))
    timing["transfer"] = enc.timing["transfer"] - transfer0  # inside model_image
    for k, v in timing.items():
        stats.incr(f"ms_{k}", int(v * 1000))
    stats.incr("ms_shard_total", int((time.perf_counter() - t_start) * 1000))
    stats.extra.update(device=device, precision=enc.precision, embedding_dim=enc.dim, settings=wanted)
    buckets = None
    if cfg.semantic_dup_threshold > 0 and kept_img:
        buckets = lsh_buckets(np.stack(kept_img), cfg.semantic_dup_bits, cfg.semantic_dup_tables)
    storage.write_json(stats_uri, stats.to_dict(), st)
    storage.write_bytes(marker, _rows_parquet(all_rows, kept, sid, cfg, buckets, kept_img), st)  # the commit
    return stats


def write_embeddings(out_root: str, sid: str, kept: list[Record], kept_img: list[np.ndarray],
                     kept_txt: list[np.ndarray], cfg: ScoreConfig, st: StorageConfig | None) -> None:
    """The shard's clip-retrieval triple (img_emb, text_emb, metadata; row-aligned), kept rows only."""
    dtype = np.float16 if cfg.embedding_dtype == "float16" else np.float32
    uris = emb_uris(out_root, sid)
    if not kept:
        for uri in uris.values():  # an earlier run's triple must not outlive this one
            storage.rm(uri, st, recursive=False)
        return
    for name, arrs in (("img_emb", kept_img), ("text_emb", kept_txt)):
        buf = io.BytesIO()
        np.save(buf, np.stack(arrs).astype(dtype))
        storage.write_bytes(uris[name], buf.getvalue(), st)
    storage.write_bytes(uris["metadata"], _metadata_parquet(kept, sid, cfg), st)


def count_rows(shard: str, all_rows: list[Record], model_size: int, stats: Stats) -> None:
    """rows_in = rows_out + every drop by reason; bad images also as errors naming the sample."""
    for r in all_rows:
        if r.reason is None:
            stats.incr("rows_out")
        else:
            stats.drop(r.reason)
            if r.reason in ("corrupt_image", "empty_image", "image_too_large"):
                stats.error(r.reason, input=f"{shard}#{r.key}", message=r.meta.get("_error"))
        if r.meta.get("_orig") and min(r.meta["_orig"]) < model_size:
            stats.incr("images_upscaled")
    stats.incr("rows_in", len(all_rows))


def _pa_types():
    import pyarrow as pa

    return {"string": pa.string(), "float64": pa.float64(), "int64": pa.int64()}


def _passthrough(r: Record) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, tp in PASSTHROUGH.items():
        v = r.meta.get(name)
        try:
            if v is None or (isinstance(v, float) and v != v):
                v = None
            elif tp == "int64":
                v = int(v)
            elif tp == "float64":
                v = float(v)
            else:
                v = str(v)
        except (TypeError, ValueError):
            v = None
        out[name] = v
    orig = r.meta.get("_orig")
    if orig:
        out["original_width"] = out["original_width"] or orig[0]
        out["original_height"] = out["original_height"] or orig[1]
        out["width"] = out["width"] or orig[0]
        out["height"] = out["height"] or orig[1]
    return out


def _metadata_parquet(kept: list[Record], sid: str, cfg: ScoreConfig) -> bytes:
    """clip-retrieval's metadata: one row per embedding row, same order."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = []
    for i, r in enumerate(kept):
        p = _passthrough(r)
        rows.append({"key": r.key, "uid": p["uid"], "url": p["url"], "caption": r.text, "text": r.text,
                     "language": p["language"], "similarity": r.out["similarity"], "punsafe": r.out["punsafe"],
                     "pwatermark": r.out["pwatermark"], "aesthetic": r.out["aesthetic"],
                     "width": p["width"], "height": p["height"], "shard": sid, "emb_row": i})
    schema = pa.schema([("key", pa.string()), ("uid", pa.string()), ("url", pa.string()),
                        ("caption", pa.string()), ("text", pa.string()), ("language", pa.string()), ("similarity", pa.float32()),
                        ("punsafe", pa.float32()), ("pwatermark", pa.float32()), ("aesthetic", pa.float32()),
                        ("width", pa.int64()), ("height", pa.int64()), ("shard", pa.string()),
                        ("emb_row", pa.int64())])
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), buf, compression="zstd")
    return buf.getvalue()


def rows_schema(cfg: ScoreConfig):
    import pyarrow as pa

    t = _pa_types()
    fields = [("key", pa.string()), ("text", pa.string())]
    fields += [(n, t[tp]) for n, tp in PASSTHROUGH.items()]
    fields += [("shard", pa.string()), ("emb_row", pa.int64()), ("similarity", pa.float32()),
               ("similarity_model", pa.string()), ("punsafe", pa.float32()), ("pwatermark", pa.float32()),
               ("aesthetic", pa.float32()), ("nsfw", pa.string()), ("text_truncated", pa.bool_()),
               ("drop_reason", pa.string()), ("error", pa.string())]
    if cfg.semantic_dup_threshold > 0:
        fields += [("lsh_buckets", pa.list_(pa.int64())), ("img_emb", pa.list_(pa.float32()))]
    return pa.schema(fields)


def _rows_parquet(all_rows: list[Record], kept: list[Record], sid: str, cfg: ScoreConfig,
                  buckets: np.ndarray | None, kept_img: list[np.ndarray]) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    emb_row = {id(r): i for i, r in enumerate(kept)}
    unsure, nsfw = (list(cfg.nsfw_tag_thresholds) + [0.3, 0.5])[:2]
    rows = []
    for r in all_rows:
        o = r.out
        row = {"key": r.key, "text": r.text, **_passthrough(r), "shard": sid, "emb_row": emb_row.get(id(r)),
               "similarity": o.get("similarity"), "similarity_model": o.get("similarity_model"),
               "punsafe": o.get("punsafe"), "pwatermark": o.get("pwatermark"), "aesthetic": o.get("aesthetic"),
               "nsfw": heads_mod.nsfw_tag(o.get("punsafe"), unsure, nsfw), "text_truncated": o.get("text_truncated"),
               "drop_reason": r.reason, "error": r.meta.get("_error")}
        if cfg.semantic_dup_threshold > 0:
            i = emb_row.get(id(r))
            row["lsh_buckets"] = None if i is None or buckets is None else buckets[i].tolist()
            row["img_emb"] = None if i is None else kept_img[i].astype(np.float32).tolist()
        rows.append(row)
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows, schema=rows_schema(cfg)), buf, compression="zstd")
    return buf.getvalue()


def flag_semantic_dups(keys: Sequence[str], emb: np.ndarray, threshold: float, block: int = 2048) -> list[str | None]:
    """Within one LSH bucket: for each row, the smallest key of an earlier row (key order)
    whose cosine is >= threshold, else None. The first of a group of near-twins stays unflagged."""
    order = np.argsort(np.asarray(keys, dtype=object))
    k_sorted = [keys[i] for i in order]
    e = np.asarray(emb, dtype=np.float32)[order]
    out: list[str | None] = [None] * len(keys)
    for start in range(0, len(k_sorted), block):
        stop = min(len(k_sorted), start + block)
        sims = e[start:stop] @ e[:stop].T  # rows vs every earlier-or-same row
        for j in range(stop - start):
            row = sims[j, : start + j]
            hit = np.nonzero(row >= threshold)[0]
            if hit.size:
                out[order[start + j]] = k_sorted[int(hit[0])]
    return out

