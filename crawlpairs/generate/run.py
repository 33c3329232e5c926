"""Orchestration: `generate()` splits the work into one job per file, makes the files (in
parallel if asked), merges their counts and truth, and writes the listings and `_generate.json`.

A file depends only on its job (seed, crawl, index and the shared slice), which is what makes
`--workers N` give the same bytes as one process.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from fractions import Fraction
from pathlib import Path
from typing import Any

import orjson

from crawlpairs.config import CRAWL_ID
from crawlpairs.generate.pages import FileGen, SharedPair
from crawlpairs.generate.rand import seed_int
from crawlpairs.generate.truth import FAULTS, MIN_TEXT_LENGTH, clean_text, escape, url_extension
from crawlpairs.generate.vocab import corpus_for, find_captions, load_captions
from crawlpairs.generate.warcwrite import Writer, gzip_member

KINDS = ("wat", "warc", "both")


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
    rng = random.Random(seed_int("names", crawl, seed))
    seg_base = int(start.timestamp() * 1000) + rng.randint(0, 86_400_000)
    seg_count = 4
    seg = idx % seg_count
    ts = start + timedelta(hours=seg * 3, minutes=rng.randint(0, 59), seconds=rng.randint(0, 59))
    hostname = f"ip-10-{rng.randint(0, 255)}-{rng.randint(0, 255)}-{rng.randint(1, 254)}.ec2.internal"
    stem = f"CC-MAIN-{ts.strftime('%Y%m%d%H%M%S')}-{idx:05d}-{hostname}"
    segment = f"{seg_base + seg * 3_600_000}.{seg}"
    return stem, segment, hostname


def _load_shared(src: Any) -> list[SharedPair]:
    """Unique surviving pairs of an earlier crawl as (url, text, alt_raw, noise, caption), in a stable order."""
    rows: list[SharedPair]
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
                rows.append((item[0], clean_text(escape(item[1])), escape(item[1]), None, item[1]))
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
COUNTS = (  # per-file counters, summed into GenerateResult (and the stage's stats)
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
    corpus = corpus_for(job["captions_file"])
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
    fg = FileGen(
        idx=idx,
        crawl=crawl,
        seed=seed,
        captions=captions,
        corpus=corpus,
        shared_slice=job["shared_slice"],
        shared_fraction=job["shared_fraction"],
        avoid=job["avoid"],
        image_base_url=job["image_base_url"],
        dup_rate=job["dup_rate"],
        sites=corpus.sites,
    )
    counts = dict.fromkeys(COUNTS, 0)
    drops = dict.fromkeys(FAULTS, 0)
    licenses: dict[str, int] = {}
    truth: dict[str, list] = {k: [] for k in _TRUTH_COLUMNS}
    w = Writer(
        crawl=crawl,
        week=crawl_week_start(crawl),
        hostname=hostname,
        warc_name=warc_name,
        wat_name=wat_name,
        seed=fg.rng.getrandbits(64),  # drawn here, between the file's setup and its first page
        want_warc=want_warc,
        want_wat=want_wat,
    )
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
                    _write_image(target, seed_int("img", img.image_rel), url_extension(img.url or ""))
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
        random.Random(seed_int("shared", seed, crawl)).shuffle(shared)
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
