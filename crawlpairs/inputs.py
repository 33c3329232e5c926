"""Turn what a user types after --input into a list of crawl files.

Accepted forms: local files, globs and folders; s3:// and https:// URIs (globs on
s3://); `@listfile` (plain or gzipped, one path per line, relative lines resolved
against a prefix, as in Common Crawl's `wat.paths.gz`); and a crawl id such as
`CC-MAIN-2024-33`, resolved to that crawl's WAT listing. What cannot be resolved is
returned as an error for the stats, never raised: one bad input must not stop the
others.
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass, field
from pathlib import Path

from crawlpairs import storage
from crawlpairs.config import CRAWL_ID, ExtractConfig, StorageConfig
from crawlpairs.udfs.extract.candidates import crawl_from_path  # one rule for driver and executors

_GLOB_CHARS = set("*?[")


@dataclass
class InputFile:
    uri: str
    crawl: str | None = None  # known from the way it was named (crawl id, crawl-data/ path)


@dataclass
class Resolved:
    files: list[InputFile] = field(default_factory=list)
    errors: list[tuple[str, str, str]] = field(default_factory=list)  # (kind, input, message)


def crawl_listing_uri(crawl_id: str, cfg: ExtractConfig) -> str:
    """Where a crawl's WAT listing lives (Common Crawl: crawl-data/<id>/wat.paths.gz)."""
    return cfg.crawl_index_url.format(crawl=crawl_id)


def _is_hidden(name: str) -> bool:
    return name.startswith((".", "_"))


def _expand(spec: str, st: StorageConfig) -> list[str]:
    """The files a path, glob or folder names, local or on an object store (hidden ones skipped)."""
    if not storage.is_remote(spec):
        spec = os.path.abspath(os.path.expanduser(spec))
    if _GLOB_CHARS & set(spec):
        return [u for u in storage.glob(spec, st)
                if not _is_hidden(storage.basename(u)) and not storage.isdir(u, st)]
    if not storage.exists(spec, st):
        return []
    if storage.isdir(spec, st):
        root = spec.rstrip("/") + "/"
        return [u for u in storage.find(spec, st)
                if not any(_is_hidden(part) for part in u[len(root):].split("/"))]
    return [spec]


def _read_listing(uri: str, st: StorageConfig) -> list[str]:
    data = storage.read_bytes(uri, st)
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    lines = data.decode("utf-8", errors="replace").splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]


def _join_prefix(prefix: str, rel: str) -> str:
    if "://" in rel or rel.startswith("/"):
        return rel
    if not prefix:
        return rel
    if storage.is_remote(prefix):
        return prefix.rstrip("/") + "/" + rel.lstrip("/")
    return str(Path(prefix) / rel)


def resolve(specs: list[str], cfg: ExtractConfig, st: StorageConfig | None = None) -> Resolved:
    st = st or StorageConfig()
    out = Resolved()
    seen: set[str] = set()

    def add(uri: str, crawl: str | None = None) -> None:
        if uri not in seen:
            seen.add(uri)
            out.files.append(InputFile(uri, crawl or crawl_from_path(uri)))

    for spec in specs:
        spec = spec.strip()
        if not spec:
            continue
        try:
            if CRAWL_ID.match(spec):
                listing = crawl_listing_uri(spec, cfg)
                try:
                    lines = _read_listing(listing, st)
                except FileNotFoundError:
                    out.errors.append(("unknown_crawl", spec, f"no WAT listing at {listing}"))
                    continue
                for rel in lines:
                    add(_join_prefix(cfg.prefix, rel), spec)
            elif spec.startswith("@"):
                listing = spec[1:]
                try:
                    lines = _read_listing(listing, st)
                except FileNotFoundError:
                    out.errors.append(("missing_input", spec, "list file not found"))
                    continue
                for rel in lines:
                    add(_join_prefix(cfg.prefix, rel))
            elif spec.startswith(("http://", "https://")):
                add(spec)
            else:
                matches = _expand(spec, st)
                if not matches:
                    out.errors.append(("missing_input", spec, "no such file"))
                for uri in matches:
                    add(uri)
        except Exception as exc:  # noqa: BLE001 - an unreadable input is a counted error
            out.errors.append(("input_error", spec, f"{exc.__class__.__name__}: {exc}"[:300]))
    return out
