"""One way to reach local paths, s3:// and https:// from the driver and from executors.

fsspec does the work; this module only adds what every stage needs the same way:
the S3 endpoint from the config (SeaweedFS in tests, any S3-compatible store in
production), atomic small writes, URI joining, the s3:// -> s3a:// switch for
Spark's own readers, a local cache for models given as URIs, and the one place that
tells transient I/O from the rest (`is_transient`) and retries and resumes crawl-file
reads (`open_input`, docs/errors.md).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import http.client
import io
import os
import posixpath
import random
import shutil
import socket
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import fsspec
import orjson

from crawlpairs.config import StorageConfig
from crawlpairs.errors import TransientIOError

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
    multipart upload that appears only when completed) is already atomic; a transient
    failure is retried with our back-off (`retrying_write`), TransientIOError when spent.
    """
    if is_remote(uri):
        retrying_write(uri, storage, lambda fs, path: fs.pipe_file(path, data))
        return
    _replace_local(Path(filesystem(uri, storage)[1]), lambda tmp: Path(tmp).write_bytes(data))


def write_file(uri: str, fill: Callable[[str], object], storage: StorageConfig | None = None,
               tmp_dir: str | None = None) -> None:
    """Like write_bytes for a payload too big to hold in memory: `fill(path)` writes a local file.

    Local: the file is a hidden temp beside the target, renamed over it when full. Remote: a
    temp file in `tmp_dir` (the machine's local disk), uploaded whole (`put_file`), then removed.
    """
    if not is_remote(uri):
        _replace_local(Path(filesystem(uri, storage)[1]), fill)
        return
    fd, tmp = tempfile.mkstemp(prefix=".crawlpairs-", suffix=".tmp", dir=tmp_dir)
    os.close(fd)
    try:
        fill(tmp)
        put_file(tmp, uri, storage)
    finally:
        Path(tmp).unlink(missing_ok=True)


def retrying_write(uri: str, storage: StorageConfig | None, op: Callable[[Any, str], Any],
                   sleep: Callable[[float], None] = time.sleep) -> Any:
    """Run `op(fs, path)`, one whole upload to an object store, under the crawl-file retry policy.

    A 503 SlowDown, a 500, a reset or a cut in the middle of an upload: the whole upload is
    made again (a PUT of one key is idempotent, an interrupted one never appears), after
    `backoff_delay`; after `io_retries` failures in a row, TransientIOError. The libraries'
    own retries are off on this filesystem (`_read_options`), so the tries are the ones
    configured, the same as for reads (docs/errors.md).
    """
    st = storage or StorageConfig()
    target = "s3://" + uri[len("s3a://"):] if uri.startswith("s3a://") else uri
    fs, path = fsspec.core.url_to_fs(target, **_read_options(target, st))
    if hasattr(type(fs), "retries"):
        fs.retries = 1  # s3fs's own retry loop: this instance (our options) is ours alone
    failures = 0
    while True:
        try:
            return op(fs, path)
        except Exception as exc:  # noqa: BLE001 - classified below; the rest is re-raised
            if not is_transient(exc):
                raise
            failures += 1
            if failures > st.io_retries:
                raise TransientIOError(f"{uri}: write failed: {type(exc).__name__}: {exc} "
                                       f"(after {st.io_retries} retries)") from exc
            sleep(backoff_delay(failures, st, exc))


def _replace_local(target: Path, fill: Callable[[str], object]) -> None:
    """Write a hidden temp file beside `target` with `fill(temp_path)`, then rename it over `target`."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        fill(tmp)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def put_file(local: str, uri: str, storage: StorageConfig | None = None) -> None:
    """Move a finished local file to `uri` atomically (local: rename; S3: one upload appears whole,
    retried as `retrying_write` says)."""
    if is_remote(uri):
        retrying_write(uri, storage, lambda fs, path: fs.put_file(local, path))
        return
    Path(uri).parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(local, uri)
    except OSError:  # another device (tmp on tmpfs): copy beside the target, then rename
        _replace_local(Path(uri), lambda tmp: shutil.copyfile(local, tmp))


def move(src: str, dst: str, storage: StorageConfig | None = None) -> None:
    """Rename a file or folder (local: one rename; object stores: copy then delete)."""
    if is_remote(src):
        fs, path = filesystem(src, storage)
        fs.mv(path, filesystem(dst, storage)[1], recursive=True)
        return
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    os.replace(src, dst)


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


# -- transient I/O: one classifier, one back-off policy, reads that resume -------------

_RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})
# S3 error codes that mean "try again later" (AWS and S3-compatible stores)
_RETRY_CODES = frozenset({
    "SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "RequestTimeoutException",
    "Throttling", "ThrottlingException", "ThrottledException", "RequestThrottled", "RequestLimitExceeded",
    "TooManyRequestsException", "ProvisionedThroughputExceededException", "BandwidthLimitExceeded",
    "EC2ThrottledException", "PriorRequestNotComplete", "IDPCommunicationError",
    "408", "429", "500", "502", "503", "504",
})
_RETRY_ERRNOS = frozenset({
    errno.ECONNRESET, errno.ECONNABORTED, errno.ECONNREFUSED, errno.ETIMEDOUT, errno.EPIPE,
    errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ENETDOWN, errno.ENETRESET, errno.EAGAIN,
})
_NEVER = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError, TransientIOError)


class ShortRead(ConnectionError):
    """The server ended a body before the size it announced (a cut without an error)."""


def _verdict(exc: BaseException) -> bool | None:
    """True: transient; False: not (bad data, a missing file, a refusal); None: look deeper."""
    if isinstance(exc, _NEVER):
        return False
    name = type(exc).__name__
    status = getattr(exc, "status", None)  # aiohttp.ClientResponseError (fsspec http)
    if isinstance(status, int) and name.startswith("Client"):
        return status in _RETRY_STATUS
    response = getattr(exc, "response", None)  # botocore ClientError
    if isinstance(response, dict) and "Error" in response:
        code = str(response["Error"].get("Code", ""))
        http_status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return code in _RETRY_CODES or http_status in _RETRY_STATUS
    if isinstance(exc, (ConnectionError, TimeoutError, socket.gaierror, socket.herror, http.client.HTTPException)):
        return True  # resets, refusals, timeouts, DNS failures, IncompleteRead / RemoteDisconnected
    module = type(exc).__module__ or ""
    if module.startswith(("aiohttp", "botocore", "urllib3")) and name not in ("ClientResponseError",):
        # ClientPayloadError, ServerDisconnectedError, ClientConnectorError (DNS too), ReadTimeoutError,
        # EndpointConnectionError, ConnectionClosedError, IncompleteReadError, ResponseStreamingError,
        # ProtocolError: all "the connection failed", never "the data is bad"
        return any(w in name for w in ("Payload", "Disconnect", "Connect", "Timeout", "Incomplete",
                                       "Streaming", "Protocol", "Connection", "ReadError"))
    if name in ("FSTimeoutError",):
        return True
    if isinstance(exc, OSError) and exc.errno in _RETRY_ERRNOS:
        return True
    return None


def is_transient(exc: BaseException) -> bool:
    """Whether an I/O failure may well succeed if tried again (docs/errors.md).

    The one classifier every reader uses. Walks the exception chain, because fsspec and
    s3fs wrap the library error: s3fs turns SlowDown into an OSError caused by the
    botocore ClientError, and fsspec's HTTP `open` turns a 503 on HEAD and GET into a
    FileNotFoundError caused by it. Transient if any link is (and none is a
    TransientIOError, whose retries are already spent).
    """
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, TransientIOError):
            return False
        if _verdict(exc):
            return True
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
        seen += 1
    return False


def retry_after(exc: BaseException) -> float | None:
    """Seconds a server asked us to wait (HTTP Retry-After, in seconds), if any."""
    for e in (exc, exc.__cause__, exc.__context__):
        if e is None:
            continue
        headers = getattr(e, "headers", None)
        response = getattr(e, "response", None)
        if headers is None and isinstance(response, dict):
            headers = response.get("ResponseMetadata", {}).get("HTTPHeaders")
        value = headers.get("Retry-After") or headers.get("retry-after") if headers else None
        if value:
            try:
                return max(0.0, float(value))
            except ValueError:
                return None
    return None


def backoff_delay(attempt: int, storage: StorageConfig | None, exc: BaseException | None = None,
                  rng: random.Random | None = None) -> float:
    """Seconds to wait before retry `attempt` (1, 2, ...): exponential with full jitter,
    never shorter than the server's Retry-After, never longer than io_backoff_max."""
    st = storage or StorageConfig()
    ceiling = min(st.io_backoff_max, st.io_backoff_base * 2 ** (attempt - 1))
    delay = (rng or random).uniform(0, ceiling)
    asked = retry_after(exc) if exc is not None else None
    if asked is not None:
        delay = max(delay, asked)
    return min(delay, st.io_backoff_max)


def _read_options(uri: str, storage: StorageConfig | None) -> dict[str, Any]:
    """fsspec options for crawl-file reads and retried writes: our timeouts, and the library's own
    retries off (the policy is ResumableReader's / retrying_write's: attempts and delays as configured)."""
    st = storage or StorageConfig()
    opts = _fs_options(uri, st)
    if uri.startswith(("s3://", "s3a://")):
        opts["config_kwargs"] = {"connect_timeout": st.io_timeout, "read_timeout": st.io_timeout,
                                 "retries": {"total_max_attempts": 1, "mode": "standard"}}
    elif uri.startswith(("http://", "https://")):
        import aiohttp

        opts["client_kwargs"] = {"timeout": aiohttp.ClientTimeout(total=None, sock_connect=st.io_timeout,
                                                                  sock_read=st.io_timeout)}
    return opts


class ResumableReader(io.RawIOBase):
    """A crawl file read front to back; transient failures are retried and resumed.

    After a reset, a timeout, a 5xx/SlowDown/429 or a short body, the file is reopened
    and read on from the first byte not yet received (a range request), after the
    back-off. Bytes are handed out once, in order: whoever inflates and parses them
    keeps its state, so nothing is read twice and nothing is skipped. A file whose size
    (or S3 ETag) changed between two opens is not resumed (TransientIOError). When
    `io_retries` tries in a row fail, `TransientIOError` is raised. Anything else (a
    missing file, 403, bad data) propagates at once.
    """

    def __init__(self, uri: str, storage: StorageConfig | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        super().__init__()
        self.uri = uri
        self.storage = storage or StorageConfig()
        self.sleep = sleep
        self.pos = 0
        self.size: int | None = None
        self.retries = 0  # retries made, over the whole file
        self.waited = 0.0  # seconds spent backing off
        self._fh: Any = None
        self._remote = is_remote(uri)
        self.etag: str | None = None  # S3: a resumed read must find the same object
        self._opened = False
        self._call(lambda: None)  # open now: a missing file fails here, before any work

    def _open(self) -> None:
        if self._remote:
            target = "s3://" + self.uri[len("s3a://") :] if self.uri.startswith("s3a://") else self.uri
            fs, path = fsspec.core.url_to_fs(target, **_read_options(target, self.storage))
            if hasattr(type(fs), "retries"):
                fs.retries = 1  # s3fs's own retry loop (a class default, 5): this instance is ours alone
            fh = fs.open(path, "rb", block_size=self.storage.io_block_size, cache_type="readahead")
        else:
            fs, path = filesystem(self.uri, self.storage)
            fh = fs.open(path, "rb")
        try:
            size = getattr(fh, "size", None)
            details = getattr(fh, "details", None)
            etag = details.get("ETag") if isinstance(details, dict) else None
            if self._opened and (size != self.size or etag != self.etag):
                # resuming into another object would splice two files: read it again next run
                raise TransientIOError(f"{self.uri}: changed while being read (size {self.size} -> {size}, "
                                       f"ETag {self.etag} -> {etag}); nothing of it is committed")
            self.size = size if isinstance(size, int) else None
            self.etag = etag
            self._opened = True
            if self.pos:
                fh.seek(self.pos)
        except BaseException:
            fh.close()
            raise
        self._fh = fh

    def _drop(self) -> None:
        fh, self._fh = self._fh, None
        if fh is not None:
            with contextlib.suppress(Exception):
                fh.close()

    def _call(self, op: Callable[[], Any]) -> Any:
        failures = 0
        while True:
            try:
                if self._fh is None:
                    self._open()
                return op()
            except Exception as exc:  # noqa: BLE001 - classified below; the rest is re-raised
                self._drop()
                if not is_transient(exc):
                    raise
                failures += 1
                if failures > self.storage.io_retries:
                    raise TransientIOError(
                        f"{self.uri}: {type(exc).__name__}: {exc} (at byte {self.pos}, "
                        f"after {self.storage.io_retries} retries)") from exc
                delay = backoff_delay(failures, self.storage, exc)
                self.retries += 1
                self.waited += delay
                self.sleep(delay)

    def _read_some(self, n: int) -> bytes:
        data = self._fh.read(n)
        if not data and n and self.size is not None and self.pos < self.size:
            raise ShortRead(f"body ended at byte {self.pos} of {self.size}")
        return data

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            parts = []
            while chunk := self.read(8 * 1024 * 1024):
                parts.append(chunk)
            return b"".join(parts)
        data = self._call(lambda: self._read_some(n))
        self.pos += len(data)
        return data

    def readable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def close(self) -> None:
        self._drop()
        super().close()


def open_input(uri: str, storage: StorageConfig | None = None) -> ResumableReader:
    """A crawl file (local path, s3://, http(s)://) for one front-to-back read with retries."""
    return ResumableReader(uri, storage)
