"""Where the generator's words come from: captions, the built-in word list, the synthetic web.

The lists themselves are package data (`crawlpairs/generate/data/*.json`, shipped by pyproject's
package-data), kept out of the code so that changing a word list is a data edit; the order of
every list is part of the output (draws index into them), so edit them knowing the pinned
sha256 in tests/generate changes.
"""

from __future__ import annotations

import json
import os
import random
import re
from collections import Counter
from importlib.resources import files
from itertools import accumulate
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crawlpairs.generate.truth import CTRL_RE, WS_RE, escape

if TYPE_CHECKING:
    from crawlpairs.generate.pages import Site


def _data(name: str) -> dict[str, Any]:
    return json.loads(files("crawlpairs.generate").joinpath("data", name).read_text("utf-8"))


_WEB = _data("web.json")
_DOM = _data("domains.json")
# Phrases when no captions Parquet is there: {language: words}, 13 languages
FALLBACK_WORDS: dict[str, list[str]] = _data("fallback_words.json")
# The synthetic web's parts: syllables and words of site names, TLDs by weight, shared CDNs
SYLLABLES: list[str] = _DOM["syllables"]
TLDS: list[str] = [tld for tld, weight in _DOM["tld_weights"] for _ in range(weight)]
NAME_WORDS: list[str] = _DOM["name_words"]
CDNS: list[str] = _DOM["cdns"]
# What pages carry: (code, url, label) licenses, Server / X-Powered-By (null: none) headers,
# (url template, label) share buttons, lazy-loading placeholders, javascript: srcs
LICENSES: list[tuple[str, str, str]] = [tuple(x) for x in _WEB["licenses"]]
SERVERS: list[str] = _WEB["servers"]
POWERED: list[str | None] = _WEB["powered_by"]
SHARES: list[tuple[str, str]] = [tuple(x) for x in _WEB["share_links"]]
LAZY_PLACEHOLDERS: list[str] = _WEB["lazy_placeholders"]
JS_SRCS: list[str] = _WEB["javascript_srcs"]
SHORT_ALTS: list[str] = _WEB["short_alts"]  # all <= 3 characters: text_too_short with a margin
# Characters a CMS writes as entities (the `entities` noise), and their entity
ENTITY_MAP: dict[str, str] = _WEB["entities"]
ENTITY_RE = re.compile("[" + "".join(ENTITY_MAP) + "]")
# Per page language: ISO 639-3 code and CLD2's name, for the WARC metadata record
ISO3: dict[str, str] = _WEB["iso639_3"]
LANG_NAMES: dict[str, str] = _WEB["cld2_names"]

# --------------------------------------------------------------------------------------
# Text sources: real captions when the shared data is there, the built-in list otherwise.

_CJK = ("ja", "zh")


def _fallback_captions(n: int = 4000) -> list[str]:
    """Phrases in 13 languages from the built-in word list (deterministic)."""
    rng = random.Random(20240833)
    langs = sorted(FALLBACK_WORDS)
    out = []
    for i in range(n):
        lang = langs[i % len(langs)]
        words = FALLBACK_WORDS[lang]
        k = rng.randint(3, 8)
        sep = "" if lang in _CJK else " "
        text = sep.join(rng.choice(words) for _ in range(k))
        if lang not in _CJK and rng.random() < 0.5:
            text = text[0].upper() + text[1:]
        if rng.random() < 0.15:
            text += f" {rng.randint(2, 2024)}"
        while len(text) < 8:
            text += sep + rng.choice(words)
        out.append(text)
    return out


def _shared_data_dir() -> Path:
    """$CRAWLPAIRS_SHARED_DATA, else ../shared/data beside the repository (the tests' default)."""
    env = os.environ.get("CRAWLPAIRS_SHARED_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[3] / "shared" / "data"


def find_captions(captions_path: str | None = None) -> str | None:
    """The captions Parquet to use: the argument (file or shared-data dir), env, or default; None if absent."""
    candidates = []
    if captions_path:
        p = Path(captions_path)
        candidates += [p, p / "captions" / "test_10000.parquet", p / "test_10000.parquet"]
    else:
        base = _shared_data_dir()
        candidates.append(base / "captions" / "test_10000.parquet")
    for c in candidates:
        if c.is_file():
            return str(c)
    if captions_path:
        raise FileNotFoundError(f"captions_path {captions_path}: no captions Parquet there")
    return None


_CAPTION_CACHE: dict[str | None, list[str]] = {}


def load_captions(path: str | None) -> list[str]:
    """Caption texts whose cleaned length is safely inside the length filters."""
    if path in _CAPTION_CACHE:
        return _CAPTION_CACHE[path]
    texts: list[str] = []
    if path:
        import pyarrow.parquet as pq

        col = pq.read_table(path, columns=["TEXT"]).column("TEXT").to_pylist()
        for t in col:
            if not isinstance(t, str):
                continue
            t = WS_RE.sub(" ", CTRL_RE.sub(" ", t)).strip()
            if 8 <= len(t) <= 1500 and "&" not in t:
                # no '&' so that the raw text never looks like an entity to a decoder
                texts.append(t)
    if len(texts) < 100:
        texts = _fallback_captions()
    _CAPTION_CACHE[path] = texts
    return texts


# --------------------------------------------------------------------------------------
# --------------------------------------------------------------------------------------
# Domains: a fixed synthetic web (the same for every seed and crawl), drawn Zipf-like.

N_DOMAINS = 20000
ZIPF_S = 1.07


def _make_domains() -> tuple[list[str], list[float]]:
    """N_DOMAINS distinct domains and their cumulative Zipf weights (rank 1 is the most common)."""
    rng = random.Random(7)
    seen: set[str] = set()
    doms: list[str] = []
    while len(doms) < N_DOMAINS:
        r = rng.random()
        if r < 0.45:
            name = "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 4)))
        elif r < 0.8:
            name = (
                rng.choice(NAME_WORDS)
                + rng.choice(["", "-"])
                + "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(1, 2)))
            )
        else:
            name = "".join(rng.choice(SYLLABLES) for _ in range(2)) + rng.choice(NAME_WORDS)
        dom = f"{name}.{rng.choice(TLDS)}"
        if len(name) >= 4 and dom not in seen:
            seen.add(dom)
            doms.append(dom)
    cum = list(accumulate(1.0 / (i + 1) ** ZIPF_S for i in range(N_DOMAINS)))
    return doms, cum


DOMAINS, DOMAIN_CUM = _make_domains()


# --------------------------------------------------------------------------------------
# The corpus: caption words as long strings that random slices turn into text and slugs


class Corpus:
    """Words of the captions as one long string; random slices give text and slugs fast."""

    def __init__(self, captions: list[str]) -> None:
        # words drawn with their real frequency (Zipf-like), so text compresses like real text
        import numpy as np

        freq = Counter(w for c in captions for w in c.split(" ") if 1 <= len(w) <= 14)
        words = sorted(freq)
        p = np.array([freq[w] for w in words], dtype=float)
        rs = np.random.RandomState(12345)
        esc = [escape(w) for w in words]
        self.text = " ".join([esc[i] for i in rs.choice(len(words), size=400_000, p=p / p.sum())]) + " "
        # ASCII slug of each escaped word, for URLs built from site vocabularies
        self.ascii_slug = {e: re.sub(r"[^0-9a-z]+", "", w.lower()) for e, w in zip(esc, words, strict=True)}
        sfreq: Counter = Counter()
        for w, n in freq.items():
            x = re.sub(r"[^0-9a-z\u00c0-\u024f]+", "", w.lower())
            if len(x) >= 2:
                sfreq[x] += n
        self.sites: dict[str, Site] = {}  # a site depends only on its domain and this corpus
        swords = sorted(sfreq) or ["page"]
        q = np.array([sfreq[w] or 1 for w in swords], dtype=float)
        self.slugs = "-".join([swords[i] for i in rs.choice(len(swords), size=150_000, p=q / q.sum())]) + "-"

    @staticmethod
    def cut(t: str, sep: str, rng: random.Random, lo: int, hi: int) -> str:
        """A random run of whole `sep`-separated tokens of t, about lo..hi characters."""
        n = lo + int(rng.random() * (hi - lo + 1))
        i = t.find(sep, int(rng.random() * (len(t) - hi - 64))) + 1
        j = t.rfind(sep, i, i + n)
        if j <= i:
            j = t.find(sep, i + 1)
        return t[i:j]

    def words(self, rng: random.Random, lo: int, hi: int) -> str:
        """HTML-escaped words, about lo..hi characters."""
        return self.cut(self.text, " ", rng, lo, hi)

    def slug(self, rng: random.Random, lo: int = 6, hi: int = 36) -> str:
        """ASCII-ish words joined by '-', for URL paths."""
        return self.cut(self.slugs, "-", rng, lo, hi)


_CORPUS_CACHE: dict[str | None, Corpus] = {}


def corpus_for(captions_file: str | None) -> Corpus:
    """The corpus (and its site cache) for one captions source, built once per process."""
    if captions_file not in _CORPUS_CACHE:
        _CORPUS_CACHE[captions_file] = Corpus(load_captions(captions_file))
    return _CORPUS_CACHE[captions_file]
