"""A labelled near-duplicate sample built from real captions.

Real alt texts (`captions/test_10000.parquet`) are the originals; for a fraction of
them we add variants made by the edits that produce near-duplicate captions on the
web: the same caption re-cased or re-punctuated, with a site or stock-photo suffix,
a prefix, a word swapped (size, colour, number), a word dropped, a typo, two words
swapped. Every row carries the `group` of its original, so "same group" is the
ground truth for "near-duplicate" and everything else is a negative. Distinct real
captions that happen to be near-identical stay labelled negative (we count them
as false positives; see docs/dedup.md for how many there are).
"""

from __future__ import annotations

import random

import pandas as pd

SUFFIXES = [" - Stock Photo", " | Etsy", " (2019)", " image", " for sale", " - Free Shipping", " HD wallpaper"]
PREFIXES = ["Photo: ", "Image of ", "Picture of ", "New! "]
SWAPS = ["red", "blue", "black", "white", "small", "large", "XL", "2", "3", "10", "2020", "green", "men", "women"]


def _variant(text: str, edit: str, rng: random.Random) -> str:
    words = text.split()
    if edit == "case_punct":
        t = text.upper() if rng.random() < 0.5 else text.lower()
        return t.replace(" ", "  ", 1) + rng.choice([".", "!", " -", ""])
    if edit == "suffix":
        return text + rng.choice(SUFFIXES)
    if edit == "prefix":
        return rng.choice(PREFIXES) + text
    if edit == "swap_word" and len(words) >= 3:
        i = rng.randrange(len(words))
        words[i] = rng.choice(SWAPS)
        return " ".join(words)
    if edit == "drop_word" and len(words) >= 4:
        del words[rng.randrange(len(words))]
        return " ".join(words)
    if edit == "typo" and len(text) >= 8:
        i = rng.randrange(1, len(text) - 1)
        return text[:i] + rng.choice("aeioustnrl") + text[i + 1 :]
    if edit == "reorder" and len(words) >= 3:
        i = rng.randrange(len(words) - 1)
        words[i], words[i + 1] = words[i + 1], words[i]
        return " ".join(words)
    return text + rng.choice(SUFFIXES)


EDITS = ["case_punct", "suffix", "prefix", "swap_word", "drop_word", "typo", "reorder"]


def make_labelled(captions: pd.DataFrame, variant_fraction: float = 0.3, seed: int = 0) -> pd.DataFrame:
    """Originals (one group each) plus 1-2 variants for `variant_fraction` of them."""
    rng = random.Random(seed)
    texts = captions["TEXT"].astype(str).tolist()
    urls = captions["URL"].astype(str).tolist()
    rows = []
    for g, (t, u) in enumerate(zip(texts, urls, strict=True)):
        rows.append({"text": t, "url": u, "group": g, "edit": "original"})
        if rng.random() < variant_fraction:
            for _ in range(rng.choice([1, 1, 2])):
                edit = rng.choice(EDITS)
                rows.append({"text": _variant(t, edit, rng), "url": u + f"?v={len(rows)}", "group": g,
                             "edit": edit})
    return pd.DataFrame(rows)
