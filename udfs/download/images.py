"""Decode, vet, resize and hash one downloaded image (Pillow), pure Python.

Order matters for safety and speed: the header is parsed first (Image.open reads only
that), so non-images and decompression bombs (huge declared pixel counts) are
refused before any pixel is decoded; JPEGs are then decoded at a reduced scale with
`draft` when the target is smaller (DCT scaling makes that several times faster);
only then is the image resized like img2dataset does and re-encoded.
"""

from __future__ import annotations

import hashlib
import io
import typing
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFile, ImageOps

from crawlpairs.config import DownloadConfig, ResizeMode

# We do the pixel-limit check ourselves (configurable) before decoding, so Pillow's own
# global limit must not fire first with a warning-or-exception of its own.
Image.MAX_IMAGE_PIXELS = None
ImageFile.LOAD_TRUNCATED_IMAGES = False

# Formats with mature decoders; anything else is `not_image`, whatever the header says.
FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "MPO")
RESIZE_MODES = typing.get_args(ResizeMode)  # the config's choices, one definition
_SAVE = {"jpg": "JPEG", "jpeg": "JPEG", "png": "PNG", "webp": "WEBP"}


class ImageReject(Exception):
    """An image that is not kept; `kind` is the error kind recorded for the URL."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind


@dataclass
class Processed:
    data: bytes  # encoded output image
    width: int
    height: int
    original_width: int
    original_height: int
    sha256: str  # of the original bytes as downloaded
    phash: str  # 64-bit DCT perceptual hash, hex


def _target_size(w: int, h: int, o: DownloadConfig) -> tuple[int, int]:
    """Size after scaling, before any crop or border."""
    s = o.image_size
    if o.resize_mode == "no":
        return w, h
    # keep_ratio / center_crop: the short side becomes s; border: the long side does
    scale = s / (min(w, h) if o.resize_mode in ("keep_ratio", "center_crop") else max(w, h))
    if o.resize_only_if_bigger and scale >= 1:
        return w, h
    return max(1, round(w * scale)), max(1, round(h * scale))


def _to_rgb(im: Image.Image) -> Image.Image:
    if im.mode == "RGB":
        return im
    if im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
        bg = Image.new("RGB", im.size, (255, 255, 255))
        bg.paste(im, mask=im.getchannel("A"))
        return bg
    return im.convert("RGB")


_K = np.arange(32)
_DCT = np.cos(np.pi * (2 * _K[None, :] + 1) * _K[:, None] / 64)  # 32-point DCT-II basis (unscaled), built once


def phash(im: Image.Image) -> str:
    """64-bit perceptual hash (DCT of a 32x32 grey thumbnail), as in the imagehash package."""
    g = np.asarray(im.convert("L").resize((32, 32), Image.Resampling.LANCZOS), dtype=np.float64)
    low = (_DCT @ g @ _DCT.T)[:8, :8]
    bits = (low > np.median(low)).flatten()
    return f"{int(''.join('1' if b else '0' for b in bits), 2):016x}"


def process(body: bytes, o: DownloadConfig) -> Processed:
    """Vet and transform one image body; raises ImageReject with the reason otherwise.

    The settings (image_size, resize_mode, min_image_bytes, max_pixels, ...) are read from
    the stage's DownloadConfig itself: one source of truth."""
    if len(body) < o.min_image_bytes:
        raise ImageReject("too_small", f"{len(body)} bytes < {o.min_image_bytes}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            im = Image.open(io.BytesIO(body), formats=FORMATS)
    except Exception as exc:  # UnidentifiedImageError and parser errors alike
        raise ImageReject("not_image", f"{exc.__class__.__name__}") from None
    ow, oh = im.size
    if ow <= 0 or oh <= 0:
        raise ImageReject("not_image", f"bad size {ow}x{oh}")
    if ow * oh > o.max_pixels:
        raise ImageReject("bomb", f"{ow}x{oh} = {ow * oh} pixels > {o.max_pixels}")
    if min(ow, oh) < o.min_side:
        raise ImageReject("too_small", f"{ow}x{oh} below min side {o.min_side}")
    transpose = im.format in ("JPEG", "MPO", "TIFF", "WEBP")
    try:
        orient = im.getexif().get(0x0112, 1) if transpose else 1
    except Exception:
        orient = 1
    if orient in (5, 6, 7, 8):
        ow, oh = oh, ow  # report the displayed size, as viewers show it
    tw, th = _target_size(ow, oh, o)
    try:
        if im.format == "JPEG" and (tw < ow or th < oh):
            im.draft("RGB", (th, tw) if orient in (5, 6, 7, 8) else (tw, th))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            im.load()
            if transpose and orient != 1:
                im = ImageOps.exif_transpose(im)
    except Image.DecompressionBombError as exc:
        raise ImageReject("bomb", str(exc)) from None
    except Exception as exc:  # truncated or corrupt data
        raise ImageReject("decode", f"{exc.__class__.__name__}: {str(exc)[:120]}") from None
    im = _to_rgb(im)
    ph = phash(im)
    if (tw, th) != im.size:
        im = im.resize((tw, th), Image.Resampling.LANCZOS if tw < im.width else Image.Resampling.BICUBIC,
                       reducing_gap=3.0 if tw * 2 < im.width else None)
    s = o.image_size
    if o.resize_mode == "center_crop" and (im.width > s or im.height > s):
        left, top = (im.width - min(s, im.width)) // 2, (im.height - min(s, im.height)) // 2
        im = im.crop((left, top, left + min(s, im.width), top + min(s, im.height)))
    elif o.resize_mode == "border" and (im.width != s or im.height != s) and im.width <= s and im.height <= s:
        canvas = Image.new("RGB", (s, s), (0, 0, 0))
        canvas.paste(im, ((s - im.width) // 2, (s - im.height) // 2))
        im = canvas
    fmt = _SAVE.get(o.output_format.lower())
    if fmt is None:
        raise ValueError(f"output_format {o.output_format!r}: use jpg, png or webp")
    out = io.BytesIO()
    if fmt == "PNG":
        im.save(out, fmt, optimize=False)
    else:
        im.save(out, fmt, quality=o.quality)
    return Processed(out.getvalue(), im.width, im.height, ow, oh, hashlib.sha256(body).hexdigest(), ph)
