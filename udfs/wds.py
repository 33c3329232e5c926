"""Read img2dataset-style webdataset shards (``00000.tar`` + ``00000.parquet``) without Spark.

A shard is a tar whose members are grouped by key: ``key.jpg``, ``key.txt``, ``key.json``
(webdataset's convention: the key is the member path up to the first dot of its basename,
and a sample's files are consecutive). Beside it img2dataset writes ``00000.parquet`` with
one row per URL of the shard (``key``, ``url``, ``text``, ``status``, ...). The reader
streams the tar (a 10k-image shard is never held in memory), tolerates a truncated or
corrupt tar (the samples before the damage are kept, the damage is counted), and takes the
Parquet as the metadata source, falling back to each sample's ``.json``.

Only the standard library, pyarrow and fsspec are used: no ``webdataset`` dependency.
"""

from __future__ import annotations

import json
import posixpath
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

from crawlpairs.stats import Stats

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff")

Opener = Callable[[str], IO[bytes]]


@dataclass
class Sample:
    """One webdataset sample: its key and file extension -> bytes (``{"jpg": b"..."}``)."""

    key: str
    files: dict[str, bytes] = field(default_factory=dict)

    def image(self) -> tuple[str, bytes] | tuple[None, None]:
        """The first image member (extension, bytes), or (None, None)."""
        for ext in IMAGE_EXTENSIONS:
            if ext in self.files:
                return ext, self.files[ext]
        return None, None

    def text(self) -> str | None:
        raw = self.files.get("txt")
        return None if raw is None else raw.decode("utf-8", errors="replace")

    def meta(self) -> dict[str, Any] | None:
        raw = self.files.get("json")
        if raw is None:
            return None
        try:
            value = json.loads(raw)
        except ValueError:
            return None
        return value if isinstance(value, dict) else None


def split_member(name: str) -> tuple[str, str]:
    """``dir/00000123.jpg`` -> (``dir/00000123``, ``jpg``); webdataset's key rule."""
    dirname, base = posixpath.split(name)
    if "." not in base:
        return name, ""
    stem, ext = base.split(".", 1)
    return (posixpath.join(dirname, stem) if dirname else stem), ext.lower()


def shard_id(uri: str) -> str:
    """``s3://b/images/00012.tar`` -> ``00012``: the name every per-shard output is derived from."""
    base = uri.rstrip("/").rsplit("/", 1)[-1]
    return base[: -len(".tar")] if base.endswith(".tar") else base.rsplit(".", 1)[0]


def sibling_parquet(uri: str) -> str:
    """The img2dataset Parquet written beside a tar shard."""
    return uri[: -len(".tar")] + ".parquet" if uri.endswith(".tar") else uri + ".parquet"


def iter_samples(
    fileobj: IO[bytes], stats: Stats | None = None, source: str | None = None
) -> Iterator[Sample]:
    """Stream samples from a tar file object; a damaged tar ends the stream, counted, never raised."""
    stats = stats if stats is not None else Stats()
    current: Sample | None = None
    try:
        with tarfile.open(fileobj=fileobj, mode="r|*") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                key, ext = split_member(member.name)
                if posixpath.basename(member.name).startswith((".", "__")):
                    continue  # tar metadata / hidden files (e.g. macOS ._x)
                extracted = tar.extractfile(member)
                data = extracted.read() if extracted is not None else b""
                if current is not None and current.key != key:
                    yield current
                    current = None
                if current is None:
                    current = Sample(key)
                current.files[ext] = data
    except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
        stats.error("tar_corrupt", input=source, message=f"{exc.__class__.__name__}: {exc}"[:300])
    if current is not None:
        yield current


def read_metadata(open_fn: Opener, parquet_uri: str, stats: Stats | None = None) -> dict[str, dict]:
    """key -> row of the shard's img2dataset Parquet; {} when there is none or it is unreadable."""
    import pyarrow.parquet as pq

    stats = stats if stats is not None else Stats()
    try:
        with open_fn(parquet_uri) as fh:
            table = pq.read_table(fh)
    except FileNotFoundError:
        stats.incr("shards_without_parquet")
        return {}
    except Exception as exc:  # a broken Parquet must not lose the shard's images
        stats.error("parquet_unreadable", input=parquet_uri, message=f"{exc.__class__.__name__}: {exc}"[:300])
        return {}
    if "key" not in table.column_names:
        stats.error("parquet_without_key", input=parquet_uri)
        return {}
    rows = table.to_pylist()
    return {str(r["key"]): r for r in rows if r.get("key") is not None}
