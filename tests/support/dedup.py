"""Helpers for dedup tests: candidate tables written exactly as extract writes them."""

from __future__ import annotations

import datetime as dt
import hashlib
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from crawlpairs.udfs.extract.candidates import CANDIDATE_SCHEMA, make_uid

T0 = dt.datetime(2024, 8, 1, tzinfo=dt.UTC)


def domain(url: str) -> str:
    return url.split("/")[2]


def row(url: str, text: str, crawl: str = "CC-MAIN-2024-33", minutes: int = 0, page: str | None = None,
        offset: int = 0) -> dict:
    page = page or f"https://{domain(url)}/page-{hashlib.md5(url.encode()).hexdigest()[:6]}.html"
    return {
        "uid": make_uid(url, text), "url": url, "text": text, "text_source": "alt", "page_url": page,
        "page_domain": domain(page), "image_domain": domain(url), "language": "en", "language_score": 0.9,
        "license": None, "license_url": None, "crawl": crawl, "source_file": f"s3://commoncrawl/{crawl}/x.wat.gz",
        "source_offset": offset, "fetch_time": T0 + dt.timedelta(minutes=minutes), "width": None, "height": None,
    }


def write_candidates(root: Path, rows: list[dict], batch: str = "b0", files: int = 1) -> Path:
    """candidates/crawl=<id>/batch=<id>/part-*.parquet, partition columns only in the path."""
    names = [f.name for f in CANDIDATE_SCHEMA if f.name != "crawl"]
    schema = pa.schema([CANDIDATE_SCHEMA.field(n) for n in names])
    by_crawl: dict[str, list[dict]] = {}
    for r in rows:
        by_crawl.setdefault(r["crawl"], []).append(r)
    for crawl, rs in by_crawl.items():
        part = root / f"crawl={crawl}" / f"batch={batch}"
        part.mkdir(parents=True, exist_ok=True)
        step = max(1, -(-len(rs) // files))
        for i in range(0, len(rs), step):
            table = pa.Table.from_pylist([{n: r[n] for n in names} for r in rs[i : i + step]], schema=schema)
            pq.write_table(table, part / f"part-{i:05d}.parquet")
    return root


def dedup_config(inp: Path | list, out: Path, seen: Path | None = None, **dedup):
    from crawlpairs.config import Config

    cfg = Config()
    cfg.input = [str(p) for p in (inp if isinstance(inp, list) else [inp])]
    cfg.output = str(out)
    cfg.dedup.seen = str(seen) if seen else None
    for k, v in dedup.items():
        setattr(cfg.dedup, k, v)
    return cfg


def chained_rows(seed: int = 3, chains: int = 24, length: int = 50, singles: int = 600) -> list[dict]:
    """Captions that chain: caption i of a chain is words i..i+7 of the chain's word list, so
    neighbours are near-duplicates and the ends are not; one cluster per chain needs several
    components rounds (ids are hashes, so the chain's order is random)."""
    rng = random.Random(seed)

    def word() -> str:
        return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(4, 8)))

    rows = []
    for c in range(chains):
        words = [word() for _ in range(length + 8)]
        host = f"img{c % 4}.example.org"
        for i in range(length):
            rows.append(row(f"https://{host}/c{c}/p{i}.jpg", " ".join(words[i:i + 8]), minutes=rng.randint(0, 10**5)))
    for s in range(singles):
        rows.append(row(f"https://img{s % 4}.example.org/s/{s}.jpg", " ".join(word() for _ in range(6))))
    return rows
