"""Realistic synthetic Common Crawl files (WAT and WARC) with known ground truth.

Real full-size WAT files cannot be had offline, yet the extract stage, the demo, the
dedup tests and the benchmarks all need tens of thousands of realistic records and
must know how many image-text pairs a correct extractor should find. This module
writes such files deterministically from a seed:

* WAT files exactly in Common Crawl's layout: one gzip member per record, a
  `warcinfo` record, a `metadata` record describing the WARC's warcinfo, then per
  page the request / response / metadata triplet, each a JSON document
  (Container -> Gzip-Metadata/Offset of the described WARC record; Envelope ->
  WARC-Header-Metadata, Payload-Metadata -> HTTP-Response-Metadata -> HTML-Metadata
  -> Head {Title, Base, Metas, Link, Scripts} and Links with the `path` values
  ia-web-commons emits: `IMG@/src`, `A@/href`, `FORM@/action`, ...). Attribute
  values are copied raw (entities not decoded), as ia-web-commons does.
* WARC files with the same pages: warcinfo, then request / response / metadata per
  page, real HTTP headers, real HTML. The WAT's Container offsets, lengths and CRCs
  are those of the WARC written from the same arguments.
* A ground-truth table (`_truth.parquet`, one row per `<img>` tag) and counts.

Every generated image is built with at most one "fault" (a reason LAION's default
filters drop it), so counts per drop reason do not depend on the order in which an
extractor applies its filters. Texts are kept away from the length limits so that
any reasonable cleanup (entity decoding, control-character removal, whitespace
collapsing, ftfy) agrees on which ones pass. See docs/generate.md.
"""

from __future__ import annotations

import base64
import hashlib
import html
import math
import os
import random
import re
import struct
import time
import zlib
from bisect import bisect_left
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from fractions import Fraction
from itertools import accumulate
from pathlib import Path
from typing import Any
from urllib.parse import quote, urljoin, urlsplit

import orjson

try:  # ISA-L's deflate is 3-5x faster than zlib at similar ratios; fall back if absent
    from isal import isal_zlib as _deflate_mod

    _DEFLATE_LEVEL = 2
except ImportError:  # pragma: no cover - isal is a core dependency
    _deflate_mod = zlib  # type: ignore[assignment]
    _DEFLATE_LEVEL = 3

from crawlpairs.config import CRAWL_ID, ExtractConfig
from crawlpairs.stage import Context, Stage

KINDS = ("wat", "warc", "both")

# LAION's default filters as the ground truth applies them: ExtractConfig's defaults (2000, 60,
# svg/gif, 5, 4000). The faults below are sized to clear these with a margin (tests check it).
_LAION = ExtractConfig()
MAX_URL_LENGTH = _LAION.max_url_length
MAX_DOMAIN_LENGTH = _LAION.max_domain_length
DROP_EXTENSIONS = tuple(_LAION.drop_extensions)
MIN_TEXT_LENGTH = _LAION.min_text_length
MAX_TEXT_LENGTH = _LAION.max_text_length
# Fault names (drop reasons) in the ground truth; None means the pair survives.
FAULTS = (
    "no_alt",  # no alt attribute
    "empty_alt",  # alt="" or only whitespace / control characters
    "text_too_short",  # cleaned alt shorter than MIN_TEXT_LENGTH (all are <= 3 chars)
    "text_too_long",  # cleaned alt longer than MAX_TEXT_LENGTH (all are > 4200 chars)
    "scheme",  # src is data: or javascript: (includes lazy-loading placeholders)
    "extension",  # .svg or .gif
    "url_too_long",  # resolved url longer than MAX_URL_LENGTH (all are > 2100)
    "domain_too_long",  # host longer than MAX_DOMAIN_LENGTH (all are >= 70)
)

_CTRL_RE = re.compile("[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028\u2029\ufeff]")
_WS_RE = re.compile(r"\s+")


def clean_text(raw: str) -> str:
    """The ground truth's text cleanup: decode entities, control chars to spaces, collapse spaces."""
    return _WS_RE.sub(" ", _CTRL_RE.sub(" ", html.unescape(raw))).strip()


def url_extension(url: str) -> str:
    """Lower-cased extension of the last path segment ('' when none)."""
    last = urlsplit(url).path.rsplit("/", 1)[-1]
    return last.rsplit(".", 1)[1].lower() if "." in last else ""


# --------------------------------------------------------------------------------------
# Text sources: real captions when the shared data is there, a small built-in list otherwise.

_FALLBACK_WORDS = {
    "en": [
        "red",
        "house",
        "garden",
        "summer",
        "beach",
        "family",
        "wedding",
        "dress",
        "vintage",
        "poster",
        "old",
        "city",
        "street",
        "night",
        "view",
        "mountain",
        "lake",
        "sunset",
        "coffee",
        "table",
        "kitchen",
        "design",
        "modern",
        "chair",
        "wooden",
        "cat",
        "dog",
        "puppy",
        "portrait",
        "woman",
        "man",
        "children",
        "playing",
        "football",
        "match",
        "team",
        "stadium",
        "car",
        "electric",
        "bike",
        "shoes",
        "leather",
        "bag",
    ],
    "de": [
        "rotes",
        "Haus",
        "Garten",
        "Sommer",
        "Strand",
        "Familie",
        "Hochzeit",
        "Kleid",
        "altes",
        "Plakat",
        "Stadt",
        "Straße",
        "Nacht",
        "Blick",
        "Berg",
        "See",
        "Sonnenuntergang",
        "Kaffee",
        "Tisch",
        "Küche",
        "modernes",
        "Design",
        "Stuhl",
        "Holz",
        "Katze",
        "Hund",
        "Welpe",
        "Bild",
    ],
    "fr": [
        "maison",
        "rouge",
        "jardin",
        "été",
        "plage",
        "famille",
        "mariage",
        "robe",
        "affiche",
        "ancienne",
        "ville",
        "rue",
        "nuit",
        "vue",
        "montagne",
        "lac",
        "coucher",
        "soleil",
        "café",
        "table",
        "cuisine",
        "design",
        "moderne",
        "chaise",
        "bois",
        "chat",
        "chien",
        "chiot",
    ],
    "es": [
        "casa",
        "roja",
        "jardín",
        "verano",
        "playa",
        "familia",
        "boda",
        "vestido",
        "cartel",
        "antiguo",
        "ciudad",
        "calle",
        "noche",
        "vista",
        "montaña",
        "lago",
        "atardecer",
        "café",
        "mesa",
        "cocina",
        "diseño",
        "moderno",
        "silla",
        "madera",
        "gato",
        "perro",
        "cachorro",
    ],
    "it": [
        "casa",
        "rossa",
        "giardino",
        "estate",
        "spiaggia",
        "famiglia",
        "matrimonio",
        "abito",
        "manifesto",
        "vecchio",
        "città",
        "strada",
        "notte",
        "vista",
        "montagna",
        "lago",
        "tramonto",
        "caffè",
        "tavolo",
        "cucina",
        "sedia",
        "legno",
        "gatto",
        "cane",
        "cucciolo",
    ],
    "pt": [
        "casa",
        "vermelha",
        "jardim",
        "verão",
        "praia",
        "família",
        "casamento",
        "vestido",
        "cartaz",
        "antigo",
        "cidade",
        "rua",
        "noite",
        "vista",
        "montanha",
        "lago",
        "pôr",
        "do",
        "sol",
        "café",
        "mesa",
        "cozinha",
        "cadeira",
        "madeira",
        "gato",
        "cachorro",
        "filhote",
    ],
    "nl": [
        "rood",
        "huis",
        "tuin",
        "zomer",
        "strand",
        "familie",
        "bruiloft",
        "jurk",
        "oude",
        "poster",
        "stad",
        "straat",
        "nacht",
        "uitzicht",
        "berg",
        "meer",
        "zonsondergang",
        "koffie",
        "tafel",
        "keuken",
        "stoel",
        "hout",
        "kat",
        "hond",
        "puppy",
        "portret",
    ],
    "pl": [
        "czerwony",
        "dom",
        "ogród",
        "lato",
        "plaża",
        "rodzina",
        "ślub",
        "sukienka",
        "stary",
        "plakat",
        "miasto",
        "ulica",
        "noc",
        "widok",
        "góra",
        "jezioro",
        "zachód",
        "słońca",
        "kawa",
        "stół",
        "kuchnia",
        "krzesło",
        "drewno",
        "kot",
        "pies",
        "szczeniak",
    ],
    "ru": [
        "красный",
        "дом",
        "сад",
        "лето",
        "пляж",
        "семья",
        "свадьба",
        "платье",
        "старый",
        "плакат",
        "город",
        "улица",
        "ночь",
        "вид",
        "гора",
        "озеро",
        "закат",
        "кофе",
        "стол",
        "кухня",
        "стул",
        "дерево",
        "кошка",
        "собака",
        "щенок",
        "портрет",
    ],
    "tr": [
        "kırmızı",
        "ev",
        "bahçe",
        "yaz",
        "plaj",
        "aile",
        "düğün",
        "elbise",
        "eski",
        "afiş",
        "şehir",
        "sokak",
        "gece",
        "manzara",
        "dağ",
        "göl",
        "gün",
        "batımı",
        "kahve",
        "masa",
        "mutfak",
        "sandalye",
        "ahşap",
        "kedi",
        "köpek",
        "yavru",
        "portre",
    ],
    "ja": [
        "赤い",
        "家",
        "庭",
        "夏",
        "海",
        "家族",
        "結婚式",
        "ドレス",
        "古い",
        "ポスター",
        "街",
        "夜景",
        "山",
        "湖",
        "夕日",
        "コーヒー",
        "テーブル",
        "台所",
        "椅子",
        "猫",
        "犬",
    ],
    "zh": [
        "红色",
        "房子",
        "花园",
        "夏天",
        "海滩",
        "家庭",
        "婚礼",
        "连衣裙",
        "旧",
        "海报",
        "城市",
        "街道",
        "夜景",
        "山",
        "湖",
        "日落",
        "咖啡",
        "桌子",
        "厨房",
        "椅子",
        "猫",
        "狗",
    ],
    "ar": [
        "بيت",
        "أحمر",
        "حديقة",
        "صيف",
        "شاطئ",
        "عائلة",
        "زفاف",
        "فستان",
        "ملصق",
        "قديم",
        "مدينة",
        "شارع",
        "ليل",
        "منظر",
        "جبل",
        "بحيرة",
        "غروب",
        "قهوة",
        "طاولة",
        "قطة",
        "كلب",
    ],
}
_CJK = ("ja", "zh")


def _fallback_captions(n: int = 4000) -> list[str]:
    """Phrases in 13 languages from the built-in word list (deterministic)."""
    rng = random.Random(20240833)
    langs = sorted(_FALLBACK_WORDS)
    out = []
    for i in range(n):
        lang = langs[i % len(langs)]
        words = _FALLBACK_WORDS[lang]
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
    env = os.environ.get("CRAWLPAIRS_SHARED_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent.parent / "shared" / "data"


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
            t = _WS_RE.sub(" ", _CTRL_RE.sub(" ", t)).strip()
            if 8 <= len(t) <= 1500 and "&" not in t:
                # no '&' so that the raw text never looks like an entity to a decoder
                texts.append(t)
    if len(texts) < 100:
        texts = _fallback_captions()
    _CAPTION_CACHE[path] = texts
    return texts


# --------------------------------------------------------------------------------------
# Domains: a fixed synthetic web (the same for every seed and crawl), drawn Zipf-like.

_SYL = [
    "ka",
    "ri",
    "to",
    "mo",
    "na",
    "su",
    "ne",
    "lu",
    "be",
    "da",
    "vi",
    "pa",
    "co",
    "ra",
    "ze",
    "fi",
    "go",
    "ha",
    "ji",
    "ke",
    "la",
    "me",
    "no",
    "pe",
    "qu",
    "si",
    "ta",
    "ul",
    "vo",
    "wa",
    "xe",
    "yo",
    "zu",
    "an",
    "el",
    "in",
    "or",
    "um",
    "bar",
    "car",
    "del",
    "fan",
    "gor",
    "hil",
    "jon",
    "kit",
    "lam",
    "mor",
    "nex",
    "pol",
    "quin",
    "ros",
    "sol",
    "tur",
    "val",
    "win",
]
_TLDS = (
    ["com"] * 46
    + ["org"] * 6
    + ["net"] * 5
    + ["de"] * 6
    + ["co.uk"] * 4
    + ["fr"] * 3
    + ["ru"] * 4
    + ["jp"] * 2
    + ["br"] * 2
    + ["it"] * 2
    + ["es"] * 2
    + ["pl"] * 2
    + ["nl"] * 2
    + ["info"] * 2
    + ["cn"] * 2
    + ["in"] * 1
    + ["com.au"] * 1
    + ["io"] * 1
    + ["ca"] * 1
)
_WORDS_EN = [
    "blog",
    "shop",
    "news",
    "photo",
    "travel",
    "garden",
    "home",
    "kitchen",
    "studio",
    "design",
    "media",
    "daily",
    "world",
    "market",
    "style",
    "art",
    "music",
    "books",
    "auto",
    "tech",
    "health",
    "food",
    "wine",
    "craft",
    "pets",
    "baby",
    "sport",
    "fashion",
    "city",
    "local",
    "online",
]
N_DOMAINS = 20000
ZIPF_S = 1.07


def _make_domains() -> tuple[list[str], list[float]]:
    rng = random.Random(7)
    seen: set[str] = set()
    doms: list[str] = []
    while len(doms) < N_DOMAINS:
        r = rng.random()
        if r < 0.45:
            name = "".join(rng.choice(_SYL) for _ in range(rng.randint(2, 4)))
        elif r < 0.8:
            name = (
                rng.choice(_WORDS_EN)
                + rng.choice(["", "-"])
                + "".join(rng.choice(_SYL) for _ in range(rng.randint(1, 2)))
            )
        else:
            name = "".join(rng.choice(_SYL) for _ in range(2)) + rng.choice(_WORDS_EN)
        dom = f"{name}.{rng.choice(_TLDS)}"
        if len(name) >= 4 and dom not in seen:
            seen.add(dom)
            doms.append(dom)
    cum = list(accumulate(1.0 / (i + 1) ** ZIPF_S for i in range(N_DOMAINS)))
    return doms, cum


_DOMAINS, _DOMAIN_CUM = _make_domains()
_CDNS = [
    "i0.wp.com",
    "upload.wikimedia.org",
    "images.squarespace-cdn.com",
    "cdn.shopify.com",
    "res.cloudinary.com",
    "static.wixstatic.com",
    "images.unsplash.com",
    "live.staticflickr.com",
    "m.media-amazon.com",
    "i.pinimg.com",
    "lh3.googleusercontent.com",
    "cdn11.bigcommerce.com",
]

_LICENSES = [  # (code, url, label)
    ("cc-by", "https://creativecommons.org/licenses/by/4.0/", "CC BY 4.0"),
    ("cc-by-sa", "https://creativecommons.org/licenses/by-sa/4.0/", "CC BY-SA 4.0"),
    (
        "cc-by-sa",
        "http://creativecommons.org/licenses/by-sa/3.0/",
        "Creative Commons Attribution-ShareAlike 3.0",
    ),
    ("cc-by-nc", "https://creativecommons.org/licenses/by-nc/4.0/", "CC BY-NC 4.0"),
    ("cc0", "https://creativecommons.org/publicdomain/zero/1.0/", "CC0 1.0"),
    ("pdm", "https://creativecommons.org/publicdomain/mark/1.0/", "Public Domain Mark 1.0"),
]

_SERVERS = [
    "nginx",
    "Apache",
    "cloudflare",
    "LiteSpeed",
    "Microsoft-IIS/10.0",
    "nginx/1.18.0 (Ubuntu)",
    "openresty",
]
_POWERED = ["PHP/7.4.33", "PHP/8.1.27", "WP Engine", "Express", "ASP.NET", None, None, None]
_SHARES = [
    ("https://www.facebook.com/sharer/sharer.php?u={q}", "Facebook"),
    ("https://twitter.com/intent/tweet?url={q}", "Twitter"),
    ("https://pinterest.com/pin/create/button/?url={q}", "Pinterest"),
    ("https://www.linkedin.com/shareArticle?mini=true&amp;url={q}", "LinkedIn"),
    ("mailto:?subject=Look&amp;body={q}", "Email"),
]
_LAZY_PLACEHOLDERS = [
    "data:image/gif;base64,R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7",
    "data:image/svg+xml,%3Csvg%20xmlns='http://www.w3.org/2000/svg'%20viewBox='0%200%201%201'%3E%3C/svg%3E",
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII=",
]
_JS_SRCS = ["javascript:void(0)", "javascript:void(0);", "javascript:;"]
_SHORT_ALTS = ["img", "1", "ok", ":)", "->", "»", "pic", "ad", "x", "#1", "v2", "\u2605"]
_ENTITY_MAP = {
    "é": "&eacute;",
    "è": "&egrave;",
    "à": "&agrave;",
    "ü": "&uuml;",
    "ö": "&ouml;",
    "ä": "&auml;",
    "ñ": "&ntilde;",
    "ç": "&ccedil;",
    "’": "&rsquo;",
    "–": "&ndash;",
    "—": "&mdash;",
    "©": "&copy;",
    "®": "&reg;",
    "ß": "&szlig;",
    "'": "&#39;",
}
_ENTITY_RE = re.compile("[" + "".join(_ENTITY_MAP) + "]")
# Single-fault mix of <img> tags; ~55% carry a non-empty alt attribute.
_SLOT_WEIGHTS = {
    None: 32.0,
    "no_alt": 34.0,
    "empty_alt": 10.0,
    "text_too_short": 5.0,
    "text_too_long": 0.15,
    "scheme": 6.0,
    "extension": 8.0,
    "url_too_long": 1.0,
    "domain_too_long": 1.0,
}


def _escape(s: str) -> str:
    return html.escape(s, quote=True)


def _b32sha1(data: bytes) -> str:
    return "sha1:" + base64.b32encode(hashlib.sha1(data).digest()).decode()


def _signed32(x: int) -> int:
    return x - (1 << 32) if x >= (1 << 31) else x


def gzip_member(data: bytes) -> tuple[bytes, int]:
    """One gzip member (10-byte header, mtime 0, fast deflate, 8-byte footer); returns (member, deflate length)."""
    c = _deflate_mod.compressobj(_DEFLATE_LEVEL, zlib.DEFLATED, -15)
    body = c.compress(data) + c.flush()
    crc = zlib.crc32(data)
    return (
        b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff" + body + struct.pack("<II", crc, len(data) & 0xFFFFFFFF),
        len(body),
    )


def crawl_week_start(crawl: str) -> datetime:
    """Monday of ISO week WW of year YYYY for a crawl id CC-MAIN-YYYY-WW."""
    m = CRAWL_ID.match(crawl)
    if not m:
        raise ValueError(f"crawl {crawl!r}: expected CC-MAIN-YYYY-WW")
    year, week = int(m.group(1)), int(m.group(2))
    if not 1 <= week <= 53:
        raise ValueError(f"crawl {crawl!r}: week must be 1..53")
    d = date.fromisocalendar(year, week, 1)
    return datetime(d.year, d.month, d.day, tzinfo=UTC)


def _seed_int(*parts: Any) -> int:
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "big")


# --------------------------------------------------------------------------------------
# Results


@dataclass
class GenerateResult:
    """What was written and the ground truth a correct extractor should reproduce.

    Counts are over `<img>` tags (= `IMG@/src` links in the WAT). `pairs_expected` is the
    number of img+alt pairs that survive LAION's default filters (alt text only, no
    fallbacks; `src` only, no `data-src`), `unique_pairs_expected` the distinct
    (url, text) among them. `drops` counts the other tags by their single fault.
    """

    out_dir: str
    kind: str
    crawl: str
    seed: int
    files: int
    pages_per_file: int
    wat_files: list[str] = field(default_factory=list)
    warc_files: list[str] = field(default_factory=list)
    wat_paths: str | None = None  # wat.paths.gz (relative paths, like Common Crawl's)
    warc_paths: str | None = None
    truth_path: str | None = None
    images_dir: str | None = None
    images_written: int = 0
    pages: int = 0
    wat_records: int = 0
    warc_records: int = 0
    img_tags: int = 0
    imgs_with_alt: int = 0  # alt attribute present and non-empty after cleanup
    pairs_expected: int = 0
    unique_pairs_expected: int = 0
    unique_urls_expected: int = 0
    duplicate_pairs: int = 0  # surviving pairs that repeat an earlier (url, text) of the crawl
    shared_pairs: int = 0  # unique surviving pairs taken from `shared_pairs_from`
    title_fallback_pairs: int = 0  # no/empty alt, usable title attribute (WAT and WARC)
    figcaption_fallback_pairs: int = 0  # no/empty alt, no usable title, usable figcaption (WARC only)
    lazy_pairs: int = 0  # data: placeholder src + http(s) data-src + good alt (WARC only)
    drops: dict[str, int] = field(default_factory=dict)
    pages_with_license: dict[str, int] = field(default_factory=dict)
    pages_with_base: int = 0
    bytes_written: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------------------
# The per-file generator


class _Site:
    """Per-domain structure (navigation, footer, scripts) shared by all its pages, in every crawl."""

    __slots__ = (
        "domain",
        "name",
        "scheme",
        "www",
        "server",
        "powered",
        "nav",
        "nav_links",
        "footer",
        "footer_links",
        "scripts",
        "css",
        "lang",
        "img_host",
        "upload_dir",
        "template",
        "license",
        "head_license",
        "text",
        "slugs",
    )

    def __init__(self, domain: str, corpus: _Corpus) -> None:
        rng = random.Random(_seed_int("site", domain))
        self.domain = domain
        label = domain.split(".")[0].replace("-", " ")
        self.name = label.title()
        self.scheme = "https" if rng.random() < 0.8 else "http"
        self.www = "www." if rng.random() < 0.5 else ""
        self.server = _ch(rng, _SERVERS)
        self.powered = _ch(rng, _POWERED)
        self.lang = _ch(rng, ["en"] * 6 + ["de", "fr", "es", "it", "pt", "nl", "pl", "ru", "ja", "zh", "tr"])
        self.template = _ch(rng, ["blog", "blog", "shop", "gallery", "news"])
        r = rng.random()
        self.img_host = (
            (self.www + domain)
            if r < 0.55
            else ("cdn." + domain if r < 0.75 else ("static." + domain if r < 0.82 else _ch(rng, _CDNS)))
        )
        self.upload_dir = f"/wp-content/uploads/{_ri(rng, 2012, 2024)}/{_ri(rng, 1, 12):02d}/"
        lic = rng.random()
        self.license = _LICENSES[int(rng.random() * len(_LICENSES))] if lic < 0.12 else None
        self.head_license = self.license is not None and rng.random() < 0.4
        base = f"{self.scheme}://{self.www}{domain}"
        # a site talks about a few things: its own small vocabulary, used for link texts and slugs
        vocab = corpus.words(rng, 300, 900).split(" ")
        self.text = " ".join(rng.choices(vocab, k=300)) + " "
        slug_of = corpus.ascii_slug
        sl = [x for x in (slug_of.get(w, "") for w in vocab) if len(x) >= 2] or ["page"]
        self.slugs = "-".join(rng.choices(sl, k=250)) + "-"
        # navigation
        nav_parts = ['<nav class="main-nav"><ul>']
        links: list[dict] = []
        section = _ch(rng, ["category", "collections", "topics", "c", "shop", "blog/category"])
        r = rng.random()
        n_nav = _ri(rng, 5, 15) if r < 0.15 else (_ri(rng, 15, 60) if r < 0.6 else _ri(rng, 60, 220))
        parents = [self.slug(rng, 3, 16) for _ in range(_ri(rng, 4, 12))]
        absolute = rng.random() < 0.3  # some CMSs write every link absolute
        for _ in range(n_nav):
            w = self.words(rng, 4, 24) or "Home"
            slug = f"/{section}/{_ch(rng, parents)}/{self.slug(rng, 3, 24)}/"
            url = base + slug if absolute else slug
            nav_parts.append(f'<li class="menu-item"><a href="{url}">{w}</a></li>')
            links.append({"path": "A@/href", "url": url, "text": w})
        nav_parts.append("</ul></nav>")
        self.nav = "".join(nav_parts)
        self.nav_links = links
        # footer
        fparts = ['<footer class="site-footer"><div class="widgets">']
        flinks: list[dict] = []
        for _ in range(_ri(rng, 8, 30)):
            w = self.words(rng, 4, 40) or "About"
            url = f"/{self.slug(rng, 3, 30)}.html" if rng.random() < 0.6 else f"https://{_ch(rng, _DOMAINS)}/"
            title = self.words(rng, 4, 20) if rng.random() < 0.2 else None
            if title:
                fparts.append(f'<a href="{url}" title="{title}">{w}</a> ')
                flinks.append({"path": "A@/href", "url": url, "title": title, "text": w})
            else:
                fparts.append(f'<a href="{url}">{w}</a> ')
                flinks.append({"path": "A@/href", "url": url, "text": w})
        fparts.append("</div>")
        self.footer = "".join(fparts)
        self.footer_links = flinks
        self.scripts = [
            {
                "path": "SCRIPT@/src",
                "url": f"/static/js/{corpus.slug(rng)}.min.js?ver={_ri(rng, 1, 9)}.{_ri(rng, 0, 9)}",
                "type": "text/javascript",
            }
            for _ in range(_ri(rng, 0, 4))
        ]
        self.css = f"/static/css/style.{rng.getrandbits(32):08x}.css"

    def words(self, rng: random.Random, lo: int, hi: int) -> str:
        return _Corpus._slice(self.text, " ", rng, lo, hi)

    def slug(self, rng: random.Random, lo: int = 6, hi: int = 36) -> str:
        return _Corpus._slice(self.slugs, "-", rng, lo, hi)


def _ri(rng: random.Random, a: int, b: int) -> int:
    """randint without randint's overhead (it is on the hot path)."""
    return a + int(rng.random() * (b - a + 1))


def _ch(rng: random.Random, seq: Any) -> Any:
    return seq[int(rng.random() * len(seq))]


class _Corpus:
    """Words of the captions as one long string; random slices give text and slugs fast."""

    def __init__(self, captions: list[str]) -> None:
        # words drawn with their real frequency (Zipf-like), so text compresses like real text
        import numpy as np

        freq = Counter(w for c in captions for w in c.split(" ") if 1 <= len(w) <= 14)
        words = sorted(freq)
        p = np.array([freq[w] for w in words], dtype=float)
        rs = np.random.RandomState(12345)
        esc = [_escape(w) for w in words]
        self.text = " ".join([esc[i] for i in rs.choice(len(words), size=400_000, p=p / p.sum())]) + " "
        # ASCII slug of each escaped word, for URLs built from site vocabularies
        self.ascii_slug = {e: re.sub(r"[^0-9a-z]+", "", w.lower()) for e, w in zip(esc, words, strict=True)}
        sfreq: Counter = Counter()
        for w, n in freq.items():
            x = re.sub(r"[^0-9a-z\u00c0-\u024f]+", "", w.lower())
            if len(x) >= 2:
                sfreq[x] += n
        self.sites: dict[str, _Site] = {}  # a site depends only on its domain and this corpus
        swords = sorted(sfreq) or ["page"]
        q = np.array([sfreq[w] or 1 for w in swords], dtype=float)
        self.slugs = "-".join([swords[i] for i in rs.choice(len(swords), size=150_000, p=q / q.sum())]) + "-"

    @staticmethod
    def _slice(t: str, sep: str, rng: random.Random, lo: int, hi: int) -> str:
        n = lo + int(rng.random() * (hi - lo + 1))
        i = t.find(sep, int(rng.random() * (len(t) - hi - 64))) + 1
        j = t.rfind(sep, i, i + n)
        if j <= i:
            j = t.find(sep, i + 1)
        return t[i:j]

    def words(self, rng: random.Random, lo: int, hi: int) -> str:
        """HTML-escaped words, about lo..hi characters."""
        return self._slice(self.text, " ", rng, lo, hi)

    def slug(self, rng: random.Random, lo: int = 6, hi: int = 36) -> str:
        return self._slice(self.slugs, "-", rng, lo, hi)


class _Img:
    """One <img> tag as written, with its ground truth."""

    __slots__ = (
        "src",
        "alt",
        "title",
        "data_src",
        "srcset",
        "fault",
        "url",
        "text",
        "title_text",
        "fig_text",
        "lazy_url",
        "shared",
        "dup",
        "image_rel",
        "wrap_link",
        "noise",
        "caption",
    )

    def __init__(self) -> None:
        self.src = ""
        self.alt: str | None = None
        self.title: str | None = None
        self.data_src: str | None = None
        self.srcset: str | None = None
        self.fault: str | None = None
        self.url: str | None = None
        self.text: str | None = None
        self.title_text: str | None = None
        self.fig_text: str | None = None
        self.lazy_url: str | None = None
        self.shared = False
        self.dup = False
        self.image_rel: str | None = None
        self.wrap_link: str | None = None
        self.noise: str | None = None
        self.caption: str | None = None


class _FileGen:
    def __init__(
        self,
        *,
        idx: int,
        crawl: str,
        seed: int,
        pages: int,
        captions: list[str],
        corpus: _Corpus,
        shared_slice: list[tuple[str, str, str]] | None,
        shared_fraction: Fraction,
        avoid: set[tuple[str, str]] | None,
        image_base_url: str | None,
        dup_rate: float,
        warc_name: str,
        hostname: str,
        sites: dict[str, _Site],
    ) -> None:
        self.idx = idx
        self.crawl = crawl
        self.rng = random.Random(_seed_int("file", seed, crawl, idx))
        self.pages = pages
        self.captions = captions
        self.corpus = corpus
        self.shared_slice = shared_slice or []
        self.shared_pos = 0
        self.shared_fraction = shared_fraction
        self.avoid = avoid or set()
        self.image_base_url = image_base_url.rstrip("/") if image_base_url else None
        self.dup_rate = dup_rate
        self.warc_name = warc_name
        self.hostname = hostname
        self.sites = sites
        self.new_pairs = 0  # distinct surviving pairs issued by this file
        self.shared_used = 0
        self.issued: list[tuple[str, str]] = []  # (url, alt_raw) of surviving pairs, for duplicates
        self.alt_info: dict[str, tuple[str | None, str | None]] = {}  # alt_raw -> (noise, caption)
        self.issued_set: set[tuple[str, str]] = set()
        self.week = crawl_week_start(crawl)
        self.bust = hashlib.sha1(f"{crawl}/{idx}".encode()).hexdigest()[:6]
        weights = dict(_SLOT_WEIGHTS)
        if self.image_base_url:
            weights.pop("domain_too_long")
        self.slot_kinds = list(weights)
        self.slot_cum = list(accumulate(weights.values()))

    # ---- texts

    def caption(self) -> str:
        rng = self.rng
        a = _ch(rng, self.captions)
        if rng.random() < 0.45:
            b = _ch(rng, self.captions)
            wa, wb = a.split(" "), b.split(" ")
            if len(wa) > 2 and len(wb) > 2:
                mixed = " ".join(wa[: max(2, len(wa) // 2)] + wb[len(wb) // 2 :])
                if len(mixed) >= 8:  # keep every good caption clear of the length limits
                    a = mixed
        return a

    def alt_raw(self, text: str) -> str:
        """The attribute source for a good caption, with realistic noise that cleanup removes.

        Records (noise kind, caption) for the raw string in `alt_info`, for the truth table.
        """
        raw, noise, text = self._noisy(text)
        self.alt_info[raw] = (noise, text)
        return raw

    def _noisy(self, text: str) -> tuple[str, str | None, str]:
        rng = self.rng
        r = rng.random()
        if r < 0.06:  # named / numeric entities
            esc = _escape(text)
            if _ENTITY_RE.search(esc):
                return _ENTITY_RE.sub(lambda m: _ENTITY_MAP[m.group(0)], esc), "entities", text
            out = esc.encode("ascii", "xmlcharrefreplace").decode("ascii")
            return out, ("entities" if "&" in out else None), text
        if r < 0.09:  # mojibake (UTF-8 read as cp1252), kept in `text`: ftfy may repair it
            if text.isascii():  # typographic punctuation first, as CMSs do, so there is something to break
                text = text.replace("'", "\u2019").replace(" - ", " \u2014 ")
                if text.isascii():
                    text += " \u2013 photo"
            try:
                moj = text.encode("utf-8").decode("cp1252")
            except UnicodeDecodeError:
                return _escape(text), None, text
            return _escape(moj), "mojibake", text
        if r < 0.11:  # control characters / zero-width spaces inside
            pos = rng.randrange(1, len(text))
            ctrl = _ch(rng, ["\x07", "\x0b", "\u200b", "\x1b", "\x7f"])
            return _escape(text[:pos] + ctrl + text[pos:]), "control", text
        if r < 0.15:  # stray whitespace and newlines
            return _escape("\n  " + text.replace(" ", "  ", 1) + "  "), "whitespace", text
        return _escape(text), None, text

    # ---- URLs

    def image_path(self, site: _Site, ext: str) -> str:
        rng = self.rng
        stem = self.corpus.slug(rng, 6, 50) + f"-{rng.getrandbits(40):010x}"
        if ext == "":
            return f"/media/image.php?id={rng.getrandbits(40)}"
        r = rng.random()
        if r < 0.4:
            path = f"{site.upload_dir}{stem}.{ext}"
        elif r < 0.7:
            path = f"/images/{stem}.{ext}"
        else:
            path = f"/assets/img/{rng.getrandbits(16):04x}/{stem}-{_ch(rng, [300, 640, 800, 1024])}x{_ch(rng, [200, 480, 600])}.{ext}"
        if rng.random() < 0.1 and ext in ("jpg", "jpeg", "png", "webp"):
            path += f"?w={_ch(rng, [320, 640, 1080])}&amp;q={_ri(rng, 60, 95)}"
        return path

    def pick_ext(self, allow_bad: bool) -> str:
        r = self.rng.random()
        if r < 0.62:
            return "jpg"
        if r < 0.8:
            return "png"
        if r < 0.9:
            return "webp"
        if r < 0.95:
            return "jpeg"
        if r < 0.97:
            return "JPG"
        return ""

    def src_for(self, site: _Site, page_url: str, base: str | None, ext: str) -> tuple[str, str]:
        """(src as written in HTML, resolved absolute url with entities decoded)."""
        rng = self.rng
        path = self.image_path(site, ext)
        if self.image_base_url:
            name = path.split("?")[0].rsplit("/", 1)[-1].encode("ascii", "ignore").decode() or "x"
            rel = f"img/{rng.getrandbits(8):02x}/{name}"  # ASCII: servable as is
            if ext == "":
                rel = f"img/{rng.getrandbits(48):012x}"
            src = f"{self.image_base_url}/{rel}"
            return src, src
        host = site.img_host
        r = rng.random()
        if base is not None and r < 0.5:
            src = path.rsplit("/", 1)[-1] if rng.random() < 0.7 else "media/" + path.rsplit("/", 1)[-1]
        elif r < 0.45:
            src = f"{site.scheme}://{host}{path}"
        elif r < 0.55:
            src = f"//{host}{path}"
        elif r < 0.85 and host.endswith(site.domain):
            src = path
        elif r < 0.93:
            src = path.rsplit("/", 1)[-1] if rng.random() < 0.5 else "../" + path.rsplit("/", 1)[-1]
        else:
            src = f"https://{host}{path}"
        url = _resolve(base or page_url, html.unescape(src))
        return src, url

    # ---- images

    def new_image(self, site: _Site, page_url: str, base: str | None, in_figure: bool) -> _Img:
        rng = self.rng
        img = _Img()
        fault = self.slot_kinds[bisect_left(self.slot_cum, rng.random() * self.slot_cum[-1])]
        img.fault = fault
        good_ext = self.pick_ext(False)
        if fault is None:
            self._good_pair(img, site, page_url, base)
        else:
            # the one fault; everything else about the tag is fine
            text = self.caption()
            if fault in ("no_alt", "empty_alt", "text_too_short", "text_too_long"):
                img.src, img.url = self.src_for(site, page_url, base, good_ext)
                if fault == "empty_alt":
                    img.alt = _ch(rng, ["", "", " ", "&#8203;", "\n"])
                elif fault == "text_too_short":
                    img.alt = _escape(_ch(rng, _SHORT_ALTS))
                elif fault == "text_too_long":
                    img.alt = self.corpus.words(rng, 4700, 6500)
                if fault in ("no_alt", "empty_alt") and rng.random() < 0.3:
                    img.title = _escape(self.caption())
                elif rng.random() < 0.1:
                    img.title = _escape(_ch(rng, _SHORT_ALTS))
            elif fault == "scheme":
                img.alt = self.alt_raw(text)
                r = rng.random()
                if r < 0.6:  # lazy loading: placeholder in src, the real image in data-src
                    img.src = _ch(rng, _LAZY_PLACEHOLDERS)
                    ds, img.lazy_url = self.src_for(site, page_url, base, good_ext)
                    img.data_src = ds
                elif r < 0.8:
                    img.src = _ch(rng, _JS_SRCS)
                else:
                    img.src = (
                        "data:image/jpeg;base64,"
                        + base64.b64encode(rng.randbytes(_ri(rng, 60, 600))).decode()
                    )
            elif fault == "extension":
                img.alt = self.alt_raw(text)
                img.src, img.url = self.src_for(
                    site, page_url, base, _ch(rng, ["svg", "gif", "gif", "GIF", "svg"])
                )
            elif fault == "url_too_long":
                img.alt = self.alt_raw(text)
                if self.image_base_url:
                    img.src = f"{self.image_base_url}/img/r/{rng.randbytes(1100).hex()}/photo.jpg"
                else:
                    pad = rng.randbytes(_ri(rng, 1060, 1500)).hex()
                    img.src = f"https://{site.img_host}/cdn-cgi/image/fit=cover,w=800/{pad}/photo.jpg"
                img.url = img.src
            elif fault == "domain_too_long":
                img.alt = self.alt_raw(text)
                sub = self.corpus.slug(rng, 4, 20)
                host = f"{sub}-img-cdn-eu-west-{_ri(rng, 1, 3)}-prod-cache-{_ri(rng, 100, 999)}.storage-accelerator-network.{site.domain}"
                while len(host) < MAX_DOMAIN_LENGTH + 10:
                    host = "edge-" + host
                img.src = f"https://{host}/i/{rng.getrandbits(40):010x}.jpg"
                img.url = img.src
            img.text = clean_text(img.alt) if img.alt is not None else None
        if img.title is not None:
            img.title_text = clean_text(img.title)
        self._serve(img)
        if img.alt is not None and img.alt in self.alt_info:
            img.noise, img.caption = self.alt_info[img.alt]
        if in_figure and (fault is None or fault in ("no_alt", "empty_alt")) and rng.random() < 0.6:
            img.fig_text = self.caption()
        return img

    def _serve(self, img: _Img) -> None:
        """In image-server mode, pick the file to write for this tag (2% left missing: a 404)."""
        if not self.image_base_url or img.shared:
            return
        url = img.url or img.lazy_url
        if not url or not url.startswith(self.image_base_url + "/img/") or len(url) > MAX_URL_LENGTH:
            return
        if url_extension(url) in DROP_EXTENSIONS or self.rng.random() < 0.02:
            return
        img.image_rel = url[len(self.image_base_url) + 1 :]

    def _good_pair(self, img: _Img, site: _Site, page_url: str, base: str | None) -> None:
        rng = self.rng
        if self.issued and rng.random() < self.dup_rate:  # repeat a pair this file already used
            url, alt = self.issued[int(rng.random() * len(self.issued))]
            img.src, img.url, img.alt, img.dup = _escape(url), url, alt, True
        else:
            k = self.new_pairs
            f = self.shared_fraction
            take = f > 0 and math.floor((k + 1) * f) > math.floor(k * f)
            if take:
                if self.shared_pos >= len(self.shared_slice):
                    raise ValueError(
                        f"shared_pairs_from has too few pairs for shared_fraction={float(f)}: file {self.idx} "
                        f"needs more than its {len(self.shared_slice)} (generate a larger first crawl)"
                    )
                url, _text, alt, noise, cap = self.shared_slice[self.shared_pos]
                self.alt_info[alt] = (noise, cap)
                self.shared_pos += 1
                self.shared_used += 1
                img.src, img.url, img.alt, img.shared = _escape(url), url, alt, True
            else:
                while True:
                    if self.issued and rng.random() < 0.02:  # same image, another caption
                        img.url = self.issued[int(rng.random() * len(self.issued))][0]
                        img.src = _escape(img.url)
                    else:
                        img.src, img.url = self.src_for(site, page_url, base, self.pick_ext(False))
                    img.alt = self.alt_raw(self.caption())
                    if (img.url, img.alt) not in self.issued_set and (
                        img.url,
                        clean_text(img.alt),
                    ) not in self.avoid:
                        break
            self.new_pairs += 1
            self.issued.append((img.url, img.alt))
            self.issued_set.add((img.url, img.alt))
            if rng.random() < 0.25:
                img.title = img.alt
        img.text = clean_text(img.alt)
        if rng.random() < 0.12 and not img.dup and not img.shared and not self.image_base_url:
            stem = img.src.rsplit(".", 1)
            if len(stem) == 2 and "?" not in stem[1]:
                img.srcset = f"{stem[0]}-300x200.{stem[1]} 300w, {stem[0]}-768x512.{stem[1]} 768w"

    # ---- pages

    def page(self, n: int) -> dict[str, Any]:
        rng = self.rng
        domain = _DOMAINS[bisect_left(_DOMAIN_CUM, rng.random() * _DOMAIN_CUM[-1])]
        site = self.sites.get(domain)
        if site is None:
            if len(self.sites) > 4000:
                self.sites.clear()
            site = self.sites[domain] = _Site(domain, self.corpus)
        tpl = site.template
        slug = self.corpus.slug(rng)
        pid = rng.getrandbits(36)
        r = rng.random()
        if r < 0.35:
            path = f"/{_ri(rng, 2012, 2024)}/{_ri(rng, 1, 12):02d}/{slug}/"
        elif r < 0.6:
            path = f"/{_ch(rng, ['blog', 'news', 'product', 'p', 'article', 'item'])}/{slug}-{pid}.html"
        elif r < 0.8:
            path = f"/{_ch(rng, ['category', 'gallery', 'shop'])}/{slug}/{pid}"
        else:
            path = f"/index.php?p={pid}&amp;lang={site.lang}"
        page_url = f"{site.scheme}://{site.www}{domain}{html.unescape(path)}"
        base = None
        if rng.random() < 0.08:
            base = f"{site.scheme}://{site.img_host}/{_ch(rng, ['media', 'assets', 'files'])}/{rng.getrandbits(16):04x}/"
        title = _escape(self.caption()[:95].strip())
        # Head
        metas: list[dict] = []
        head_html = [f'<!DOCTYPE html>\n<html lang="{site.lang}">\n<head>\n<meta charset="utf-8">\n']
        head_html.append('<meta name="viewport" content="width=device-width, initial-scale=1">\n')
        metas.append({"name": "viewport", "content": "width=device-width, initial-scale=1"})
        desc = self.corpus.words(rng, 50, 160)
        head_html.append(f'<meta name="description" content="{desc}">\n')
        metas.append({"name": "description", "content": desc})
        head_html.append(f'<meta property="og:title" content="{title}">\n')
        metas.append({"content": title, "property": "og:title"})
        if rng.random() < 0.1:
            head_html.append('<meta name="robots" content="noindex, follow">\n')
            metas.append({"name": "robots", "content": "noindex, follow"})
        if rng.random() < 0.3:
            head_html.append('<meta http-equiv="X-UA-Compatible" content="IE=edge">\n')
            metas.append({"content": "IE=edge", "http-equiv": "X-UA-Compatible"})
        head_html.append(f"<title>{title}</title>\n")
        head: dict[str, Any] = {"Metas": metas, "Title": title}
        if base:
            head_html.append(f'<base href="{base}">\n')
            head["Base"] = base
        link = [
            {"path": "LINK@/href", "url": site.css, "rel": "stylesheet", "type": "text/css"},
            {"path": "LINK@/href", "url": page_url.replace("&", "&amp;"), "rel": "canonical"},
        ]
        head_html.append(f'<link rel="stylesheet" href="{site.css}" type="text/css">\n')
        head_html.append(f'<link rel="canonical" href="{link[1]["url"]}">\n')
        if site.license and site.head_license:
            head_html.append(f'<link rel="license" href="{site.license[1]}">\n')
            link.append({"path": "LINK@/href", "url": site.license[1], "rel": "license"})
        head["Link"] = link
        for s in site.scripts:
            head_html.append(f'<script src="{s["url"]}" type="text/javascript"></script>\n')
        if site.scripts:
            head["Scripts"] = list(site.scripts)
        head_html.append(
            "<style>body{font-family:sans-serif;margin:0}.wp-caption{max-width:100%}</style>\n</head>\n"
        )
        # Body
        links: list[dict] = []
        body = [
            f'<body class="{tpl} page-{pid}">\n<header id="masthead"><a href="/" rel="home">{_escape(site.name)}</a>'
        ]
        links.append({"path": "A@/href", "url": "/", "rel": "home", "text": _escape(site.name)})
        body.append(site.nav)
        links.extend(site.nav_links)
        body.append(
            '<form role="search" method="get" action="/search"><input type="text" name="q"></form></header>\n'
        )
        links.append({"path": "FORM@/action", "method": "get", "url": "/search"})
        body.append(f'<main id="content"><article><h1>{title}</h1>\n')
        n_img = self._n_images(tpl)
        imgs: list[_Img] = []
        for i in range(n_img):
            # text between images: paragraphs and inline links
            if i == 0 or rng.random() < 0.5:
                body.append("<p>" + self.corpus.words(rng, 120, 600) + "</p>\n")
            if rng.random() < 0.4:
                w = site.words(rng, 4, 35)
                u = (
                    f"/{self.corpus.slug(rng)}/"
                    if rng.random() < 0.6
                    else f"https://{_ch(rng, _DOMAINS)}/{self.corpus.slug(rng)}"
                )
                if u.startswith("https://") and rng.random() < 0.5:
                    body.append(
                        f'<p>{self.corpus.words(rng, 40, 90)} <a href="{u}" target="_blank">{w}</a>.</p>\n'
                    )
                    links.append({"path": "A@/href", "url": u, "target": "_blank", "text": w})
                else:
                    body.append(f'<p>{self.corpus.words(rng, 40, 90)} <a href="{u}">{w}</a>.</p>\n')
                    links.append({"path": "A@/href", "url": u, "text": w})
            in_fig = tpl == "blog" and rng.random() < 0.5
            img = self.new_image(site, page_url, base, in_fig)
            imgs.append(img)
            wrap = tpl in ("shop", "gallery") and rng.random() < 0.7
            tag = self._img_tag(img, tpl)
            entry: dict[str, Any] = {"path": "IMG@/src", "url": img.src}
            if img.alt is not None:
                entry["alt"] = img.alt
            if img.title is not None:
                entry["title"] = img.title
            if in_fig:
                body.append(f'<figure class="wp-block-image">{tag}')
                links.append(entry)
                if img.fig_text:
                    body.append(f"<figcaption>{_escape(img.fig_text)}</figcaption>")
                body.append("</figure>\n")
            elif wrap:
                href = f"/{site.slug(rng)}-{rng.getrandbits(24)}.html"
                name = site.words(rng, 8, 60)
                body.append(
                    f'<div class="item"><a href="{href}">{tag}<span class="name">{name}</span></a></div>\n'
                )
                links.append(entry)
                a = {"path": "A@/href", "url": href}
                if name:
                    a["text"] = name
                links.append(a)
            else:
                body.append(f"<p>{tag}</p>\n")
                links.append(entry)
        body.append("<p>" + self.corpus.words(rng, 200, 1100) + "</p>\n</article>\n")
        # related posts
        body.append('<aside class="related"><ul>')
        for _ in range(_ri(rng, 3, 25)):
            w = site.words(rng, 10, 70)
            u = f"/{site.slug(rng)}-{rng.getrandbits(20)}/"
            body.append(f'<li><a href="{u}">{w}</a></li>')
            links.append({"path": "A@/href", "url": u, "text": w})
        body.append("</ul></aside>\n")
        # tags, share buttons, comments and pagination: the repetitive links real pages carry
        if rng.random() < 0.6:
            body.append('<div class="tags">')
            for _ in range(_ri(rng, 2, 20)):
                t = site.slug(rng, 3, 18)
                body.append(f'<a href="/tag/{t}/" rel="tag">{t.replace("-", " ")}</a> ')
                links.append(
                    {"path": "A@/href", "url": f"/tag/{t}/", "rel": "tag", "text": t.replace("-", " ")}
                )
            body.append("</div>\n")
        if rng.random() < 0.5:
            q = quote(page_url, safe="")
            body.append('<div class="share">')
            for share, label in _SHARES:
                u = share.format(q=q)
                body.append(
                    f'<a href="{u}" target="_blank" rel="nofollow noopener" title="{label}">{label}</a>'
                )
                links.append(
                    {
                        "path": "A@/href",
                        "url": u,
                        "target": "_blank",
                        "title": label,
                        "rel": "nofollow noopener",
                        "text": label,
                    }
                )
            body.append("</div>\n")
        if tpl in ("blog", "news") and rng.random() < 0.5:
            body.append('<ol class="comments">')
            for _ in range(_ri(rng, 1, 15)):
                cid = _ri(rng, 1000, 99999)
                who = site.words(rng, 3, 16)
                body.append(
                    f'<li id="comment-{cid}"><cite>{who}</cite><p>{site.words(rng, 20, 200)}</p>'
                    f'<a rel="nofollow" class="comment-reply-link" href="?replytocom={cid}#respond">Reply</a></li>'
                )
                links.append(
                    {
                        "path": "A@/href",
                        "url": f"?replytocom={cid}#respond",
                        "rel": "nofollow",
                        "text": "Reply",
                    }
                )
            body.append("</ol>\n")
        if tpl in ("shop", "gallery") and rng.random() < 0.7:
            body.append('<nav class="pagination">')
            for k in range(1, _ri(rng, 3, 12)):
                body.append(f'<a class="page-numbers" href="?page={k}">{k}</a>')
                links.append({"path": "A@/href", "url": f"?page={k}", "text": str(k)})
            body.append("</nav>\n")
        body.append("</main>\n")
        if tpl == "news" and rng.random() < 0.3:
            vid = base64.urlsafe_b64encode(rng.randbytes(8)).decode()[:11]
            body.append(
                f'<iframe src="https://www.youtube.com/embed/{vid}" width="560" height="315"></iframe>\n'
            )
            links.append({"path": "IFRAME@/src", "url": f"https://www.youtube.com/embed/{vid}"})
        body.append(site.footer)
        links.extend(site.footer_links)
        lic = site.license
        if lic:
            body.append(f'<p class="license"><a rel="license" href="{lic[1]}">')
            badge = f"https://mirrors.creativecommons.org/presskit/buttons/88x31/svg/{lic[0].replace('cc-', '').replace('pdm', 'publicdomain')}.svg"
            bimg = _Img()
            bimg.src = bimg.url = badge
            bimg.alt = "Creative Commons License"
            bimg.text = bimg.alt
            bimg.fault = "extension"
            imgs.append(bimg)
            body.append(
                f'<img alt="Creative Commons License" style="border-width:0" src="{badge}"></a> {lic[2]}</p>\n'
            )
            links.append({"path": "IMG@/src", "url": badge, "alt": "Creative Commons License"})
            links.append({"path": "A@/href", "url": lic[1], "rel": "license"})
        body.append(f"<p>&copy; {_ri(rng, 2005, 2024)} {_escape(site.name)}</p></footer>\n</body>\n</html>\n")
        html_bytes = ("".join(head_html) + "".join(body)).encode("utf-8")
        hm: dict[str, Any] = {"Head": head, "Links": links}
        return {
            "url": page_url,
            "site": site,
            "html": html_bytes,
            "html_meta": hm,
            "imgs": imgs,
            "base": base,
            "license": lic[0] if lic else None,
            "license_url": lic[1] if lic else None,
            "n": n,
        }

    def _n_images(self, tpl: str) -> int:
        rng = self.rng
        if rng.random() < 0.08:
            return 0
        if tpl in ("shop", "gallery"):
            return min(40, int(rng.expovariate(1 / 16)) + 1)
        return min(40, int(rng.expovariate(1 / 7)) + 1)

    def _img_tag(self, img: _Img, tpl: str) -> str:
        rng = self.rng
        parts = ["<img"]
        if img.data_src is not None:
            parts.append(f' src="{img.src}" data-src="{img.data_src}" class="lazyload"')
        else:
            parts.append(f' src="{img.src}"')
        if img.srcset:
            parts.append(f' srcset="{img.srcset}" sizes="(max-width: 768px) 100vw, 768px"')
        if img.alt is not None:
            parts.append(f' alt="{img.alt}"')
        if img.title is not None:
            parts.append(f' title="{img.title}"')
        if rng.random() < 0.5:
            parts.append(
                f' width="{_ch(rng, [150, 300, 640, 800])}" height="{_ch(rng, [100, 200, 480, 600])}"'
            )
        if rng.random() < 0.3:
            parts.append(' loading="lazy"')
        parts.append(">" if rng.random() < 0.8 else " />")
        return "".join(parts)


# --------------------------------------------------------------------------------------
# Records


def _resolve(base: str, ref: str) -> str:
    """urljoin, with the common absolute and scheme-relative forms done without parsing."""
    if ref.startswith(("https://", "http://")):
        return ref
    if ref.startswith("//"):
        return base[: base.index(":") + 1] + ref
    return urljoin(base, ref)


def _warc_record(headers: list[tuple[str, str]], block: bytes) -> tuple[bytes, bytes]:
    """(full record bytes, header bytes) with Content-Length added."""
    head = (
        "WARC/1.0\r\n"
        + "".join(f"{k}: {v}\r\n" for k, v in headers)
        + f"Content-Length: {len(block)}\r\n\r\n"
    )
    hb = head.encode("utf-8")
    return hb + block + b"\r\n\r\n", hb


def _uuid(rng: random.Random) -> str:
    h = f"{rng.getrandbits(128):032x}"
    return f"<urn:uuid:{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) % 4]}{h[17:20]}-{h[20:32]}>"


def _fmt_date(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def _http_date(dt: datetime) -> str:
    return dt.strftime("%a, %d %b %Y %H:%M:%S GMT")


class _Writer:
    """Builds one WARC and its WAT in step (the WAT describes the WARC's records)."""

    def __init__(self, fg: _FileGen, wat_name: str, want_warc: bool, want_wat: bool) -> None:
        self.fg = fg
        self.wat_name = wat_name
        self.want_warc = want_warc
        self.want_wat = want_wat
        self.warc_chunks: list[bytes] = []
        self.wat_chunks: list[bytes] = []
        self.warc_offset = 0
        self.wat_records = 0
        self.warc_records = 0
        self.rng = random.Random(fg.rng.getrandbits(64))  # ids and timings, separate from content
        self.t = fg.week + timedelta(days=_ri(self.rng, 0, 5), seconds=_ri(self.rng, 0, 86399))
        self.warcinfo_id = _uuid(self.rng)

    def _emit_warc(self, rec: bytes) -> dict[str, Any]:
        member, dlen = gzip_member(rec)
        container = {
            "Filename": self.fg.warc_name,
            "Compressed": True,
            "Offset": str(self.warc_offset),
            "Gzip-Metadata": {
                "Deflate-Length": str(dlen),
                "Header-Length": "10",
                "Footer-Length": "8",
                "Inflated-CRC": str(_signed32(zlib.crc32(rec))),
                "Inflated-Length": str(len(rec)),
            },
        }
        self.warc_offset += len(member)
        self.warc_records += 1
        if self.want_warc:
            self.warc_chunks.append(member)
        return container

    def _emit_wat(self, target: str, date_s: str, refers_to: str, doc: dict[str, Any]) -> None:
        body = orjson.dumps(doc)
        digest = _b32sha1(body)
        headers = [
            ("WARC-Type", "metadata"),
            ("WARC-Target-URI", target),
            ("WARC-Date", date_s),
            ("WARC-Record-ID", _uuid(self.rng)),
            ("WARC-Refers-To", refers_to),
            ("Content-Type", "application/json"),
        ]
        head = "WARC/1.0\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers)
        head += f"Content-Length: {len(body)}\r\nWARC-Payload-Digest: {digest}\r\nWARC-Block-Digest: {digest}\r\n\r\n"
        rec = head.encode("utf-8") + body + b"\r\n\r\n"
        self.wat_records += 1
        if self.want_wat:
            self.wat_chunks.append(gzip_member(rec)[0])

    def _page_record(
        self,
        headers: list[tuple[str, str]],
        block: bytes,
        block_digest: str,
        actual_type: str,
        meta_key: str,
        meta: dict[str, Any],
    ) -> None:
        """Write one WARC record of a page and the WAT record describing it. The WAT's
        WARC-Header-Metadata repeats the WARC headers with Content-Length after WARC-Record-ID,
        as ia-web-commons writes it; Payload-Metadata holds `meta_key: meta` (the
        HTTP-Request/HTTP-Response/WARC-Metadata part) between the type and the block sizes."""
        rec, hb = _warc_record(headers, block)
        container = self._emit_warc(rec)
        header_meta = dict(headers[:3])  # WARC-Type, WARC-Date, WARC-Record-ID
        header_meta["Content-Length"] = str(len(block))
        header_meta.update(headers[3:])
        doc = {
            "Container": container,
            "Envelope": {
                "Payload-Metadata": {
                    "Actual-Content-Type": actual_type,
                    meta_key: meta,
                    "Actual-Content-Length": str(len(block)),
                    "Trailing-Slop-Length": "4",
                    "Block-Digest": block_digest,
                },
                "Format": "WARC/1.0",
                "WARC-Header-Length": str(len(hb)),
                "WARC-Header-Metadata": header_meta,
            },
        }
        self._emit_wat(
            header_meta["WARC-Target-URI"], header_meta["WARC-Date"], header_meta["WARC-Record-ID"], doc
        )

    def start(self) -> None:
        fg = self.fg
        info = (
            f"isPartOf: {fg.crawl}\r\npublisher: Common Crawl\r\n"
            f"description: Wide crawl of the web for {fg.week.strftime('%B %Y')}\r\n"
            f"operator: Common Crawl Admin (info@commoncrawl.org)\r\nhostname: {fg.hostname}\r\n"
            "software: Apache Nutch 1.20 (modified, https://github.com/commoncrawl/nutch/)\r\n"
            "robots: checked via crawler-commons 1.5-SNAPSHOT (https://github.com/crawler-commons/crawler-commons)\r\n"
            "format: WARC File Format 1.1\r\n"
            "conformsTo: https://iipc.github.io/warc-specifications/specifications/warc-format/warc-1.1/\r\n"
        ).encode()
        date_s = _fmt_date(self.t)
        rec, hb = _warc_record(
            [
                ("WARC-Type", "warcinfo"),
                ("WARC-Date", date_s),
                ("WARC-Record-ID", self.warcinfo_id),
                ("Content-Type", "application/warc-fields"),
                ("WARC-Filename", fg.warc_name),
            ],
            info,
        )
        container = self._emit_warc(rec)
        # the WAT's own warcinfo (carries isPartOf too, so a reader can get the crawl id from either)
        extracted = self.t + timedelta(days=6)
        winfo = (
            "Software-Info: ia-web-commons.1.1.10-SNAPSHOT-20240513074037\r\n"
            f"Extracted-Date: {_http_date(extracted)}\r\nip: 10.67.{_ri(self.rng, 0, 255)}.{_ri(self.rng, 1, 254)}\r\n"
            f"hostname: {fg.hostname}\r\nformat: WARC File Format 1.0\r\n"
            "conformsTo: http://bibnum.bnf.fr/WARC/WARC_ISO_28500_version1_latestdraft.pdf\r\n"
            f"isPartOf: {fg.crawl}\r\n"
        ).encode()
        wrec, _ = _warc_record(
            [
                ("WARC-Type", "warcinfo"),
                ("WARC-Date", _fmt_date(extracted)),
                ("WARC-Filename", self.wat_name),
                ("WARC-Record-ID", _uuid(self.rng)),
                ("Content-Type", "application/warc-fields"),
                ("WARC-Block-Digest", _b32sha1(winfo)),
            ],
            winfo,
        )
        self.wat_records += 1
        if self.want_wat:
            self.wat_chunks.append(gzip_member(wrec)[0])
        fields = {}
        for line in info.decode().split("\r\n"):
            if ": " in line:
                k, v = line.split(": ", 1)
                fields[k] = v
        doc = {
            "Container": container,
            "Envelope": {
                "Format": "WARC/1.0",
                "WARC-Header-Length": str(len(hb)),
                "Block-Digest": _b32sha1(info),
                "Actual-Content-Length": str(len(info)),
                "WARC-Header-Metadata": {
                    "WARC-Type": "warcinfo",
                    "WARC-Date": date_s,
                    "WARC-Record-ID": self.warcinfo_id,
                    "Content-Length": str(len(info)),
                    "Content-Type": "application/warc-fields",
                    "WARC-Filename": fg.warc_name,
                },
                "Payload-Metadata": {
                    "Actual-Content-Type": "application/warc-fields",
                    "WARC-Info-Metadata": fields,
                    "Actual-Content-Length": str(len(info)),
                    "Trailing-Slop-Length": "4",
                },
            },
        }
        self._emit_wat(fg.warc_name, date_s, self.warcinfo_id, doc)

    def add_page(self, page: dict[str, Any]) -> None:
        rng = self.rng
        site: _Site = page["site"]
        url = page["url"]
        self.t += timedelta(seconds=_ri(rng, 0, 40))
        date_s = _fmt_date(self.t)
        ip = f"{_ri(rng, 1, 223)}.{_ri(rng, 0, 255)}.{_ri(rng, 0, 255)}.{_ri(rng, 1, 254)}"
        parts = urlsplit(url)
        host = parts.netloc
        rpath = parts.path + (f"?{parts.query}" if parts.query else "")
        # request
        req_headers = {
            "User-Agent": "CCBot/2.0 (https://commoncrawl.org/faq/)",
            "Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
            "Accept-Language": "en-US,en;q=0.5",
            "Accept-Encoding": "br,gzip",
            "Host": host,
            "Connection": "Keep-Alive",
        }
        req_head = (
            f"GET {rpath} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in req_headers.items()) + "\r\n"
        )
        req_block = req_head.encode("utf-8")
        req_id, resp_id, meta_id = _uuid(rng), _uuid(rng), _uuid(rng)
        self._page_record(
            [
                ("WARC-Type", "request"),
                ("WARC-Date", date_s),
                ("WARC-Record-ID", req_id),
                ("Content-Type", "application/http; msgtype=request"),
                ("WARC-Warcinfo-ID", self.warcinfo_id),
                ("WARC-IP-Address", ip),
                ("WARC-Target-URI", url),
            ],
            req_block,
            _b32sha1(req_block),
            "application/http; msgtype=request",
            "HTTP-Request-Metadata",
            {
                "Request-Message": {"Method": "GET", "Path": rpath, "Version": "HTTP/1.1"},
                "Headers-Length": str(len(req_block) - 2),
                "Headers": req_headers,
                "Entity-Length": "0",
                "Entity-Digest": "sha1:3I42H3S6NNFQ2MSVX7XZKYAYSCX5QBYJ",  # sha1 of nothing
                "Entity-Trailing-Slop-Length": "0",
            },
        )
        # response
        body = page["html"]
        fetched = self.t - timedelta(seconds=_ri(rng, 0, 5))
        resp_headers: dict[str, str] = {
            "Date": _http_date(fetched),
            "Content-Type": "text/html; charset=UTF-8",
        }
        resp_headers["Server"] = site.server
        if site.powered:
            resp_headers["X-Powered-By"] = site.powered
        if rng.random() < 0.6:
            resp_headers["Last-Modified"] = _http_date(fetched - timedelta(days=_ri(rng, 1, 2000)))
        if rng.random() < 0.5:
            resp_headers["ETag"] = f'W/"{rng.getrandbits(48):x}-{rng.getrandbits(32):x}"'
        resp_headers["Vary"] = "Accept-Encoding"
        resp_headers["Cache-Control"] = _ch(rng, ["max-age=0", "no-cache", "max-age=3600, public", "private"])
        if rng.random() < 0.2:
            resp_headers["Set-Cookie"] = f"PHPSESSID={rng.getrandbits(96):024x}; path=/; HttpOnly"
        resp_headers["X-Crawler-Content-Encoding"] = "gzip"
        resp_headers["Content-Length"] = str(len(body))
        resp_head = "HTTP/1.1 200 OK\r\n" + "".join(f"{k}: {v}\r\n" for k, v in resp_headers.items()) + "\r\n"
        rh = resp_head.encode("utf-8")
        block = rh + body
        payload_digest = _b32sha1(body)
        block_digest = _b32sha1(block)
        self._page_record(
            [
                ("WARC-Type", "response"),
                ("WARC-Date", date_s),
                ("WARC-Record-ID", resp_id),
                ("Content-Type", "application/http; msgtype=response"),
                ("WARC-Warcinfo-ID", self.warcinfo_id),
                ("WARC-Concurrent-To", req_id),
                ("WARC-IP-Address", ip),
                ("WARC-Target-URI", url),
                ("WARC-Payload-Digest", payload_digest),
                ("WARC-Block-Digest", block_digest),
                ("WARC-Identified-Payload-Type", "text/html"),
            ],
            block,
            block_digest,
            "application/http; msgtype=response",
            "HTTP-Response-Metadata",
            {
                "Response-Message": {"Status": "200", "Version": "HTTP/1.1", "Reason": "OK"},
                "Headers-Length": str(len(rh)),
                "Headers": resp_headers,
                "HTML-Metadata": page["html_meta"],
                "Entity-Length": str(len(body)),
                "Entity-Digest": payload_digest,
                "Entity-Trailing-Slop-Length": "0",
            },
        )
        # metadata
        lang = site.lang
        cld2 = (
            f'{{"reliable":true,"text-bytes":{len(body) // 3},"languages":[{{"code":"{lang}",'
            f'"code-iso-639-3":"{_ISO3.get(lang, "eng")}","text-covered":0.{_ri(rng, 70, 99):02d},'
            f'"score":{_ri(rng, 300, 1900)}.0,"name":"{_LANG_NAMES.get(lang, "ENGLISH")}"}}]}}'
        )
        fetch_ms = str(_ri(rng, 20, 4000))
        mblock = f"fetchTimeMs: {fetch_ms}\r\ncharset-detected: UTF-8\r\nlanguages-cld2: {cld2}\r\n".encode()
        self._page_record(
            [
                ("WARC-Type", "metadata"),
                ("WARC-Date", date_s),
                ("WARC-Record-ID", meta_id),
                ("Content-Type", "application/warc-fields"),
                ("WARC-Warcinfo-ID", self.warcinfo_id),
                ("WARC-Concurrent-To", resp_id),
                ("WARC-Target-URI", url),
            ],
            mblock,
            _b32sha1(mblock),
            "application/metadata-fields",
            "WARC-Metadata-Metadata",
            {
                "Metadata-Records": [
                    {"Name": "fetchTimeMs", "Value": fetch_ms},
                    {"Name": "charset-detected", "Value": "UTF-8"},
                    {"Name": "languages-cld2", "Value": cld2},
                ]
            },
        )


_ISO3 = {
    "en": "eng",
    "de": "deu",
    "fr": "fra",
    "es": "spa",
    "it": "ita",
    "pt": "por",
    "nl": "nld",
    "pl": "pol",
    "ru": "rus",
    "ja": "jpn",
    "zh": "zho",
    "tr": "tur",
}
_LANG_NAMES = {
    "en": "ENGLISH",
    "de": "GERMAN",
    "fr": "FRENCH",
    "es": "SPANISH",
    "it": "ITALIAN",
    "pt": "PORTUGUESE",
    "nl": "DUTCH",
    "pl": "POLISH",
    "ru": "RUSSIAN",
    "ja": "Japanese",
    "zh": "Chinese",
    "tr": "TURKISH",
}


# --------------------------------------------------------------------------------------
# Images for a loopback server


def _write_image(path: Path, seed: int, ext: str) -> None:
    """A small, unique, deterministic picture (> 5 kB so download's min_image_bytes keeps it)."""
    import numpy as np
    from PIL import Image

    rs = np.random.RandomState(seed % (2**32))
    w, h = int(rs.choice([128, 160, 192])), int(rs.choice([96, 120, 144]))
    c0, c1 = rs.randint(0, 256, 3), rs.randint(0, 256, 3)
    t = np.linspace(0.0, 1.0, w)[None, :, None]
    grad = c0[None, None, :] * (1 - t) + c1[None, None, :] * t
    arr = np.repeat(grad, h, axis=0) + rs.normal(0, 28, (h, w, 3))
    y0, x0 = rs.randint(0, h // 2), rs.randint(0, w // 2)
    arr[y0 : y0 + h // 3, x0 : x0 + w // 3] = rs.randint(0, 256, 3)
    im = Image.fromarray(np.clip(arr, 0, 255).astype("uint8"), "RGB")
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = {"png": "PNG", "webp": "WEBP"}.get(ext.lower(), "JPEG")
    im.save(path, format=fmt, **({"quality": 90} if fmt != "PNG" else {}))


# --------------------------------------------------------------------------------------
# Layout


def file_stem(crawl: str, idx: int, seed: int) -> tuple[str, str, str]:
    """(file stem, segment, hostname) for file `idx`, named like Common Crawl's 2014-era files."""
    start = crawl_week_start(crawl)
    rng = random.Random(_seed_int("names", crawl, seed))
    seg_base = int(start.timestamp() * 1000) + rng.randint(0, 86_400_000)
    seg_count = 4
    seg = idx % seg_count
    ts = start + timedelta(hours=seg * 3, minutes=rng.randint(0, 59), seconds=rng.randint(0, 59))
    hostname = f"ip-10-{rng.randint(0, 255)}-{rng.randint(0, 255)}-{rng.randint(1, 254)}.ec2.internal"
    stem = f"CC-MAIN-{ts.strftime('%Y%m%d%H%M%S')}-{idx:05d}-{hostname}"
    segment = f"{seg_base + seg * 3_600_000}.{seg}"
    return stem, segment, hostname


_CORPUS_CACHE: dict[str | None, _Corpus] = {}


def _corpus(captions_file: str | None) -> _Corpus:
    """The corpus (and its site cache) for one captions source, built once per process."""
    if captions_file not in _CORPUS_CACHE:
        _CORPUS_CACHE[captions_file] = _Corpus(load_captions(captions_file))
    return _CORPUS_CACHE[captions_file]


def _load_shared(src: Any) -> list[tuple[str, str, str, str | None, str | None]]:
    """Unique surviving pairs of an earlier crawl as (url, text, alt_raw, noise, caption), in a stable order."""
    rows: list[tuple[str, str, str, str | None, str | None]]
    if src is None:
        return []
    if isinstance(src, GenerateResult):
        src = src.truth_path
    if isinstance(src, (str, os.PathLike)):
        p = Path(src)
        if p.is_dir():
            p = p / "_truth.parquet"
        import pyarrow.parquet as pq

        t = pq.read_table(p).to_pydict()
        n = len(t["url"])
        noise = t.get("noise", [None] * n)
        caps = t.get("caption", [None] * n)
        rows = [
            (t["url"][i], t["text"][i], t["alt"][i], noise[i], caps[i])
            for i in range(n)
            if t["fault"][i] is None
        ]
    else:
        rows = []
        for item in src:
            item = tuple(item)
            if len(item) == 2:
                rows.append((item[0], clean_text(_escape(item[1])), _escape(item[1]), None, item[1]))
            else:
                rows.append((item[0], item[1], item[2], None, None))
    seen: set[tuple[str, str]] = set()
    out = []
    for row in rows:
        if (row[0], row[1]) not in seen:
            seen.add((row[0], row[1]))
            out.append(row)
    return out


_TRUTH_COLUMNS = (
    "file",
    "page_url",
    "img_index",
    "src",
    "url",
    "alt",
    "text",
    "title_text",
    "figcaption_text",
    "lazy_url",
    "fault",
    "shared",
    "dup",
    "license",
    "image_file",
    "noise",
    "caption",
)
_COUNTS = (
    "pages",
    "wat_records",
    "warc_records",
    "img_tags",
    "imgs_with_alt",
    "pairs_expected",
    "shared_pairs",
    "title_fallback_pairs",
    "figcaption_fallback_pairs",
    "lazy_pairs",
    "pages_with_base",
    "bytes_written",
    "images_written",
)


def _make_file(job: dict[str, Any]) -> dict[str, Any]:
    """Write one WAT and/or WARC (depends only on the job, so files can be made in any order or process)."""
    idx, crawl, seed = job["idx"], job["crawl"], job["seed"]
    captions = load_captions(job["captions_file"])
    corpus = _corpus(job["captions_file"])
    stem, segment, hostname = file_stem(crawl, idx, seed)
    warc_name = f"{stem}.warc.gz"
    wat_name = f"{stem}.warc.wat.gz"
    if job["layout"] == "cc":
        seg_dir = f"crawl-data/{crawl}/segments/{segment}"
        wat_path, warc_path = f"{seg_dir}/wat/{wat_name}", f"{seg_dir}/warc/{warc_name}"
    else:
        wat_path, warc_path = wat_name, warc_name
    want_wat, want_warc, write_truth = job["want_wat"], job["want_warc"], job["write_truth"]
    img_dir = Path(job["images_dir"]) if job["images_dir"] else None
    fg = _FileGen(
        idx=idx,
        crawl=crawl,
        seed=seed,
        pages=job["pages"],
        captions=captions,
        corpus=corpus,
        shared_slice=job["shared_slice"],
        shared_fraction=job["shared_fraction"],
        avoid=job["avoid"],
        image_base_url=job["image_base_url"],
        dup_rate=job["dup_rate"],
        warc_name=warc_name,
        hostname=hostname,
        sites=corpus.sites,
    )
    counts = dict.fromkeys(_COUNTS, 0)
    drops = dict.fromkeys(FAULTS, 0)
    licenses: dict[str, int] = {}
    truth: dict[str, list] = {k: [] for k in _TRUTH_COLUMNS}
    w = _Writer(fg, wat_name, want_warc, want_wat)
    w.start()
    tfile = wat_path if want_wat else warc_path
    for n in range(job["pages"]):
        page = fg.page(n)
        w.add_page(page)
        counts["pages"] += 1
        lic = page["license"]
        if lic:
            licenses[lic] = licenses.get(lic, 0) + 1
        if page["base"]:
            counts["pages_with_base"] += 1
        for i, img in enumerate(page["imgs"]):
            if img_dir and img.image_rel:
                target = img_dir / img.image_rel
                if not target.exists():
                    _write_image(target, _seed_int("img", img.image_rel), url_extension(img.url or ""))
                    counts["images_written"] += 1
            if write_truth:
                truth["file"].append(tfile)
                truth["page_url"].append(page["url"])
                truth["img_index"].append(i)
                truth["src"].append(img.src)
                truth["url"].append(img.url)
                truth["alt"].append(img.alt)
                truth["text"].append(img.text)
                truth["title_text"].append(img.title_text)
                truth["figcaption_text"].append(img.fig_text)
                truth["lazy_url"].append(img.lazy_url)
                truth["fault"].append(img.fault)
                truth["shared"].append(img.shared)
                truth["dup"].append(img.dup)
                truth["license"].append(lic)
                truth["image_file"].append(img.image_rel)
                truth["noise"].append(img.noise)
                truth["caption"].append(img.caption)
            counts["img_tags"] += 1
            if img.text:
                counts["imgs_with_alt"] += 1
            if img.fault is None:
                counts["pairs_expected"] += 1
            else:
                drops[img.fault] += 1
                if img.fault in ("no_alt", "empty_alt"):
                    if img.title_text and len(img.title_text) >= MIN_TEXT_LENGTH:
                        counts["title_fallback_pairs"] += 1
                    elif img.fig_text:
                        counts["figcaption_fallback_pairs"] += 1
                elif img.fault == "scheme" and img.lazy_url:
                    counts["lazy_pairs"] += 1
    counts["shared_pairs"] = fg.shared_used
    counts["wat_records"] = w.wat_records
    counts["warc_records"] = w.warc_records
    out = Path(job["out"])
    written = {"wat": None, "warc": None}
    for key, rel, chunks, keep in (
        ("wat", wat_path, w.wat_chunks, want_wat),
        ("warc", warc_path, w.warc_chunks, want_warc),
    ):
        if not keep:
            continue
        target = out / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".tmp")
        with open(tmp, "wb") as fh:
            fh.writelines(chunks)
        os.replace(tmp, target)
        counts["bytes_written"] += target.stat().st_size
        written[key] = rel
    return {"counts": counts, "drops": drops, "licenses": licenses, "truth": truth, **written}


def generate(
    out_dir: str,
    kind: str = "wat",
    files: int = 1,
    pages_per_file: int = 1000,
    seed: int = 0,
    crawl: str = "CC-MAIN-2024-33",
    shared_pairs_from: str | os.PathLike | GenerateResult | Iterable[Any] | None = None,
    shared_fraction: float = 0.0,
    image_base_url: str | None = None,
    images_dir: str | None = None,
    captions_path: str | None = None,
    layout: str = "cc",
    dup_rate: float = 0.03,
    write_truth: bool = True,
    workers: int = 1,
) -> GenerateResult:
    """Write `files` WAT and/or WARC files of `pages_per_file` pages each under `out_dir`.

    Deterministic: the same arguments give byte-identical files (each file depends only
    on (seed, crawl, file index), so files can also be made one at a time).
    `shared_pairs_from` (an earlier output dir, its `_truth.parquet`, its GenerateResult,
    or (url, text[, alt_raw]) tuples) with `shared_fraction` f: in each file, the
    k-th new surviving pair is taken from the earlier crawl iff floor((k+1)f) > floor(kf),
    so exactly floor(f * M) of a file's M distinct surviving pairs are shared.
    `image_base_url` + `images_dir`: image URLs point at that server and the images are
    written under `images_dir` (the URL path below the base is the file's relative path).
    """
    t0 = time.perf_counter()
    if kind not in KINDS:
        raise ValueError(f"kind {kind!r}: use one of {', '.join(KINDS)}")
    if files < 1 or pages_per_file < 0:
        raise ValueError("files must be >= 1 and pages_per_file >= 0")
    if not 0.0 <= shared_fraction <= 1.0:
        raise ValueError(f"shared_fraction {shared_fraction}: must be in [0, 1]")
    if shared_fraction > 0 and shared_pairs_from is None:
        raise ValueError("shared_fraction > 0 needs shared_pairs_from")
    if layout not in ("cc", "flat"):
        raise ValueError(f"layout {layout!r}: use cc or flat")
    if (image_base_url is None) != (images_dir is None):
        raise ValueError("image_base_url and images_dir go together")
    crawl_week_start(crawl)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    captions_file = find_captions(captions_path)
    shared = _load_shared(shared_pairs_from) if shared_fraction > 0 or shared_pairs_from is not None else []
    avoid = {(row[0], row[1]) for row in shared}
    if shared:
        random.Random(_seed_int("shared", seed, crawl)).shuffle(shared)
    frac = Fraction(shared_fraction).limit_denominator(1_000_000)
    want_wat = kind in ("wat", "both")
    want_warc = kind in ("warc", "both")
    res = GenerateResult(
        out_dir=str(out), kind=kind, crawl=crawl, seed=seed, files=files, pages_per_file=pages_per_file
    )
    truth: dict[str, list] = {k: [] for k in _TRUTH_COLUMNS}
    jobs = []
    for idx in range(files):
        jobs.append(
            {
                "idx": idx,
                "crawl": crawl,
                "seed": seed,
                "pages": pages_per_file,
                "captions_file": captions_file,
                "shared_slice": shared[idx::files] if frac > 0 else None,
                "shared_fraction": frac,
                "avoid": avoid,
                "image_base_url": image_base_url,
                "images_dir": images_dir,
                "dup_rate": dup_rate,
                "layout": layout,
                "out": str(out),
                "want_wat": want_wat,
                "want_warc": want_warc,
                "write_truth": write_truth,
            }
        )
    if workers > 1 and files > 1:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=min(workers, files)) as pool:
            parts = list(pool.map(_make_file, jobs))
    else:
        parts = [_make_file(job) for job in jobs]
    wat_rel: list[str] = []
    warc_rel: list[str] = []
    drops = {f: 0 for f in FAULTS}
    lic_pages: dict[str, int] = {}
    for part in parts:
        c = part["counts"]
        for k, v in c.items():
            setattr(res, k, getattr(res, k) + v)
        for k, v in part["drops"].items():
            drops[k] += v
        for k, v in part["licenses"].items():
            lic_pages[k] = lic_pages.get(k, 0) + v
        if part["wat"]:
            wat_rel.append(part["wat"])
            res.wat_files.append(str(out / part["wat"]))
        if part["warc"]:
            warc_rel.append(part["warc"])
            res.warc_files.append(str(out / part["warc"]))
        for k, v in part["truth"].items():
            truth[k].extend(v)
    res.drops = drops
    res.pages_with_license = dict(sorted(lic_pages.items()))
    # Pair uniqueness over the whole crawl
    if write_truth:
        seen: set[tuple[str, str]] = set()
        urls: set[str] = set()
        for u, x, f in zip(truth["url"], truth["text"], truth["fault"], strict=True):
            if f is None:
                if (u, x) in seen:
                    res.duplicate_pairs += 1
                seen.add((u, x))
                urls.add(u)
        res.unique_pairs_expected = len(seen)
        res.unique_urls_expected = len(urls)
        import pyarrow as pa
        import pyarrow.parquet as pq

        tpath = out / "_truth.parquet"
        pq.write_table(pa.table(truth), tpath)
        res.truth_path = str(tpath)
    # Listings like Common Crawl's (paths relative to the output root, one per line, gzipped)
    for name, rels in (("wat.paths.gz", wat_rel), ("warc.paths.gz", warc_rel)):
        if not rels:
            continue
        data = gzip_member(("\n".join(rels) + "\n").encode())[0]
        targets = [out / name]
        if layout == "cc":
            targets.append(out / "crawl-data" / crawl / name)
        for t in targets:
            t.parent.mkdir(parents=True, exist_ok=True)
            t.write_bytes(data)
        if name == "wat.paths.gz":
            res.wat_paths = str(out / name)
        else:
            res.warc_paths = str(out / name)
    if images_dir:
        res.images_dir = str(images_dir)
    res.seconds = round(time.perf_counter() - t0, 3)
    (out / "_generate.json").write_bytes(
        orjson.dumps({k: v for k, v in res.to_dict().items() if k != "seconds"}, option=orjson.OPT_INDENT_2)
    )
    return res


# --------------------------------------------------------------------------------------
# CLI: `crawlpairs generate --output DIR --kind wat --files 2 --pages-per-file 1000 --seed 1`


class GenerateStage(Stage):
    """Writes crawl files plus `_truth.parquet`, `_generate.json` and `_stats.json` under --output."""

    name = "generate"
    section = None
    output_dir = ""
    uses_spark = False
    input_required = False
    help = "write realistic Common Crawl WAT/WARC files with known ground truth"

    def add_arguments(self, parser: Any) -> None:
        g = parser.add_argument_group("generate")
        g.add_argument("--kind", choices=KINDS, default="wat", help="wat, warc or both (default wat)")
        g.add_argument("--files", type=int, default=1, help="number of files (default 1)")
        g.add_argument("--pages-per-file", type=int, default=1000, help="pages per file (default 1000)")
        g.add_argument("--seed", type=int, default=0, help="same seed, same bytes (default 0)")
        g.add_argument("--crawl", default="CC-MAIN-2024-33", help="crawl id CC-MAIN-YYYY-WW")
        g.add_argument(
            "--layout",
            choices=("cc", "flat"),
            default="cc",
            help="cc: crawl-data/<crawl>/segments/<seg>/wat/...; flat: all files in --output",
        )
        g.add_argument(
            "--shared-from",
            default=None,
            metavar="DIR",
            help="an earlier generate output whose pairs this crawl reuses",
        )
        g.add_argument(
            "--shared-fraction",
            type=float,
            default=0.0,
            help="fraction of this crawl's distinct pairs taken from --shared-from",
        )
        g.add_argument("--dup-rate", type=float, default=0.03, help="pairs repeated within a file")
        g.add_argument(
            "--image-base-url",
            default=None,
            metavar="URL",
            help="point image URLs at this server (with --images-dir)",
        )
        g.add_argument("--images-dir", default=None, metavar="DIR", help="write the served images here")
        g.add_argument(
            "--captions",
            default=None,
            metavar="PATH",
            help="captions Parquet (TEXT column) or shared-data dir; default $CRAWLPAIRS_SHARED_DATA",
        )
        g.add_argument("--workers", type=int, default=1, help="processes (files are made in parallel)")
        g.add_argument("--no-truth", action="store_true", help="skip _truth.parquet (faster for benchmarks)")

    def run(self, ctx: Context) -> None:
        from crawlpairs import storage
        from crawlpairs.stage import UsageError

        a = ctx.args
        out = ctx.cfg.output
        if storage.is_remote(out):
            raise UsageError(f"--output {out}: generate writes local files; upload them afterwards")
        try:
            res = generate(
                out,
                kind=a.kind,
                files=a.files,
                pages_per_file=a.pages_per_file,
                seed=a.seed,
                crawl=a.crawl,
                shared_pairs_from=a.shared_from,
                shared_fraction=a.shared_fraction,
                image_base_url=a.image_base_url,
                images_dir=a.images_dir,
                captions_path=a.captions,
                layout=a.layout,
                dup_rate=a.dup_rate,
                write_truth=not a.no_truth,
                workers=a.workers,
            )
        except (ValueError, FileNotFoundError) as exc:
            raise UsageError(str(exc)) from None
        for key in (
            "pages",
            "wat_records",
            "warc_records",
            "img_tags",
            "imgs_with_alt",
            "pairs_expected",
            "unique_pairs_expected",
            "shared_pairs",
            "bytes_written",
            "images_written",
        ):
            ctx.stats.incr(key, getattr(res, key))
        ctx.stats.incr("files_written", len(res.wat_files) + len(res.warc_files))
        ctx.stats.extra["result"] = res.to_dict()

    def summary(self, ctx: Context) -> str:
        c = ctx.stats.counts
        return (
            f"generate: {c['files_written']} files, {c['pages']} pages, {c['img_tags']} <img>, "
            f"{c['pairs_expected']} pairs expected -> {ctx.cfg.output}"
        )


if __name__ == "__main__":
    from crawlpairs.stage import main

    raise SystemExit(main(GenerateStage))
