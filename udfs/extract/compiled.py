"""The compiled extract loop (udfs/extract/_hotloop.c), or None where it cannot be loaded.

`pip install` builds it (setup.py; optional: no compiler, no extension). Rows are the same
either way; the C loop is faster. `CRAWLPAIRS_EXTRACT_ENGINE=python` forces the Python
loop (tests and benchmarks compare both). One place decides, so the reader
(warcread) and the page loop (candidates) always run the same engine.
"""

from __future__ import annotations

import hashlib
import os
import stat
import tempfile
import typing

NAME = "crawlpairs.udfs.extract._hotloop"


def _private_dir() -> str | None:
    """A folder only this user can write (`$TMPDIR/crawlpairs-ext-<uid>`, mode 0700), or None.

    A shared temp dir is writable by everyone: a file another user put there under the name we
    would load must never be loaded, so the folder must be ours and closed to others."""
    folder = os.path.join(tempfile.gettempdir(), f"crawlpairs-ext-{os.getuid()}")
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
        info = os.lstat(folder)
    except OSError:
        return None
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        return None
    return folder


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except FileNotFoundError:
        return None


def _from_zip() -> typing.Any:
    """The extension when this package runs from a `--py-files` zip (cluster/package.py puts
    the one built on the packaging machine in it). Python cannot import an extension from a
    zip, so the member is copied to a private folder (`_private_dir`) under its content hash,
    checked byte for byte, and loaded from there; a build for another platform or Python is
    skipped (None: the Python loop runs)."""
    import importlib.machinery
    import importlib.util
    import zipimport

    loader = globals().get("__loader__")
    if not isinstance(loader, zipimport.zipimporter):
        return None
    prefix = NAME.replace(".", "/")
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        try:
            data = loader.get_data(f"{loader.archive}/{prefix}{suffix}")
        except OSError:
            continue
        folder = _private_dir()
        if folder is None:
            return None
        path = os.path.join(folder, f"{hashlib.sha256(data).hexdigest()[:16]}-_hotloop{suffix}")
        try:
            if _read(path) != data:
                tmp = f"{path}.{os.getpid()}.tmp"
                with open(tmp, "wb") as fh:
                    fh.write(data)
                os.replace(tmp, path)  # atomic: concurrent workers never load a half-written file
            spec = importlib.util.spec_from_file_location(NAME, path)
            if spec is None or spec.loader is None:
                return None
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            return module
        except (OSError, ImportError):
            return None
    return None


def _load() -> typing.Any:
    if os.environ.get("CRAWLPAIRS_EXTRACT_ENGINE", "").lower() == "python":
        return None
    try:
        from crawlpairs.udfs.extract import _hotloop

        return _hotloop
    except ImportError:
        return _from_zip()


hot: typing.Any = _load()
