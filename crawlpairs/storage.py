"""One way to reach local paths, s3:// and https:// from the driver and from executors.

fsspec does the work; this module only adds what every stage needs the same way:
the S3 endpoint from the config (SeaweedFS in tests, any S3-compatible store in
production), atomic small writes, URI joining, the s3:// -> s3a:// switch for
Spark's own readers, and a local cache for models given as URIs.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import posixpath
import tempfile
from pathlib import Path
from typing import IO, Any

import fsspec
import orjson

from crawlpairs.config import StorageConfig

_REMOTE = ("s3://", "s3a://", "gs://", "http://", "https://")


def is_remote(uri: str) -> bool:
    return uri.startswith(_REMOTE)


def _fs_options(uri: str, storage: StorageConfig | None) -> dict[str, Any]:
    storage = storage or StorageConfig()
    if uri.startswith(("s3://", "s3a://")):
        client: dict[str, Any] = {}
        endpoint = storage.s3_endpoint or os.environ.get("AWS_ENDPOINT_URL")
        if endpoint:
            client["endpoint_url"] = endpoint
        if storage.s3_region:
            client["region_name"] = storage.s3_region
        opts: dict[str, Any] = {"client_kwargs": client}
        if storage.s3_anon:
            opts["anon"] = True
        return opts
    return {}


def filesystem(uri: str, storage: StorageConfig | None = None) -> tuple[fsspec.AbstractFileSystem, str]:
    """The fsspec filesystem for a URI and the path inside it."""
    if uri.startswith("s3a://"):
        uri = "s3://" + uri[len("s3a://") :]
    return fsspec.core.url_to_fs(uri, **_fs_options(uri, storage))


def _uri(fs: fsspec.AbstractFileSystem, path: str) -> str:
    """Put the protocol back on a path an fsspec call returned."""
    proto = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    if proto in ("file", "local"):
        return path
    if "://" in path:
        return path
    return f"{proto}://{path}"


def join(uri: str, *parts: str) -> str:
    out = uri.rstrip("/") if len(uri) > 1 else uri
    for part in parts:
        if part:
            out = f"{out}/{part.strip('/')}" if out else part
    return out


def basename(uri: str) -> str:
    return posixpath.basename(uri.rstrip("/"))


def open_uri(uri: str, mode: str = "rb", storage: StorageConfig | None = None, **kwargs: Any) -> IO:
    """Open for streaming; remote reads use a read-ahead buffer sized for crawl files."""
    fs, path = filesystem(uri, storage)
    if "r" in mode and is_remote(uri):
        kwargs.setdefault("block_size", 8 * 1024 * 1024)
        kwargs.setdefault("cache_type", "readahead")
    if "w" in mode and not is_remote(uri):
        fs.makedirs(posixpath.dirname(path) or ".", exist_ok=True)
    return fs.open(path, mode, **kwargs)


def read_bytes(uri: str, storage: StorageConfig | None = None) -> bytes:
    fs, path = filesystem(uri, storage)
    return fs.cat_file(path)


def write_bytes(uri: str, data: bytes, storage: StorageConfig | None = None) -> None:
    """Readers see the old object or the whole new one, never a part.

    Local: a hidden temp file beside the target, then rename. S3: one PUT (or a
    multipart upload that appears only when completed) is already atomic.
    """
    fs, path = filesystem(uri, storage)
    if is_remote(uri):
        fs.pipe_file(path, data)
        return
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(uri: str, obj: Any, storage: StorageConfig | None = None) -> None:
    write_bytes(uri, orjson.dumps(obj, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS, default=str), storage)


def read_json(uri: str, storage: StorageConfig | None = None) -> Any:
    return orjson.loads(read_bytes(uri, storage))


def exists(uri: str, storage: StorageConfig | None = None) -> bool:
    fs, path = filesystem(uri, storage)
    if is_remote(uri):
        fs.invalidate_cache()
    return fs.exists(path)


def glob(pattern: str, storage: StorageConfig | None = None) -> list[str]:
    fs, path = filesystem(pattern, storage)
    if is_remote(pattern):
        fs.invalidate_cache()
    return sorted(_uri(fs, p) for p in fs.glob(path))


def ls(uri: str, storage: StorageConfig | None = None, detail: bool = False) -> list[Any]:
    """Entries of a folder (empty when it does not exist)."""
    fs, path = filesystem(uri, storage)
    if is_remote(uri):
        fs.invalidate_cache()
    try:
        entries = fs.ls(path, detail=True)
    except FileNotFoundError:
        return []
    if detail:
        return entries
    return sorted(_uri(fs, e["name"]) for e in entries)


def find(uri: str, storage: StorageConfig | None = None) -> list[str]:
    """Every file below a folder, recursively."""
    fs, path = filesystem(uri, storage)
    if is_remote(uri):
        fs.invalidate_cache()
    try:
        return sorted(_uri(fs, p) for p in fs.find(path))
    except FileNotFoundError:
        return []


def isdir(uri: str, storage: StorageConfig | None = None) -> bool:
    fs, path = filesystem(uri, storage)
    return fs.isdir(path)


def rm(uri: str, storage: StorageConfig | None = None, recursive: bool = True) -> None:
    fs, path = filesystem(uri, storage)
    with contextlib.suppress(FileNotFoundError):
        fs.rm(path, recursive=recursive)


def check_writable(uri: str, storage: StorageConfig | None = None) -> None:
    """Write and delete a probe so a bad --output fails before any work is done."""
    probe = join(uri, f"_write_probe_{os.getpid()}")
    write_bytes(probe, b"ok", storage)
    rm(probe, storage, recursive=False)


def spark_uri(uri: str, storage: StorageConfig | None = None) -> str:
    """The URI Spark's own readers and writers take: s3:// becomes s3a:// off EMR."""
    scheme = (storage or StorageConfig()).spark_s3_scheme
    if uri.startswith("s3://") and scheme != "s3":
        return f"{scheme}://" + uri[len("s3://") :]
    return uri


def local_copy(uri: str, storage: StorageConfig | None = None, cache_dir: str | None = None) -> str:
    """A local file for a model given as a path or URI, fetched once per machine."""
    if not is_remote(uri) and not uri.startswith("file://"):
        if not Path(uri).exists():
            raise FileNotFoundError(uri)
        return uri
    if uri.startswith("file://"):
        return uri[len("file://") :]
    root = Path(cache_dir or os.environ.get("CRAWLPAIRS_CACHE", Path.home() / ".cache" / "crawlpairs"))
    target = root / hashlib.sha256(uri.encode()).hexdigest()[:16] / basename(uri)
    if not target.exists():
        write_bytes(str(target), read_bytes(uri, storage))
    return str(target)
