"""The peer tools our users hand our output to, each in its own virtualenv.

A test that must show "img2dataset / HF datasets / DuckDB reads this" runs the real tool
in a subprocess of its own venv (its own pins, never ours). Venvs are cached under
`$CRAWLPAIRS_PEERS_DIR` (default `~/.cache/crawlpairs-peers`) and built once, from PyPI.
"""

from __future__ import annotations

import json
import os
import subprocess
import venv
from pathlib import Path


def peers_dir() -> Path:
    return Path(os.environ.get("CRAWLPAIRS_PEERS_DIR", Path.home() / ".cache" / "crawlpairs-peers"))


def peer_python(name: str, requirements: list[str], timeout: float = 900) -> Path:
    """The python of a venv holding exactly `requirements` (created on first use; a stamp says it is whole)."""
    root = peers_dir() / name
    stamp = root / ".crawlpairs-installed.json"
    python = root / "bin" / "python"
    if stamp.exists() and json.loads(stamp.read_text()) == requirements and python.exists():
        return python
    if python.exists() and _has(python, requirements):  # made by an earlier version of this helper
        stamp.write_text(json.dumps(requirements))
        return python
    venv.EnvBuilder(with_pip=True, clear=True).create(root)
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *requirements],
                   check=True, timeout=timeout)
    stamp.write_text(json.dumps(requirements))
    return python


def _has(python: Path, requirements: list[str]) -> bool:
    """Whether every `name==version` requirement is installed in that venv."""
    pins = dict(r.split("==", 1) for r in requirements if "==" in r)
    if len(pins) != len(requirements):
        return False
    code = ("import importlib.metadata as m, sys, json; pins = json.loads(sys.argv[1]); "
            "sys.exit(0 if all(m.version(k) == v for k, v in pins.items()) else 1)")
    return subprocess.run([str(python), "-c", code, json.dumps(pins)], capture_output=True).returncode == 0


def run_peer(python: Path, code: str, *args: str, timeout: float = 600, env: dict | None = None) -> str:
    """Run `code` with a peer's python; return its stdout (stderr in the error when it fails)."""
    full_env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", **(env or {})}
    full_env.pop("PYTHONPATH", None)
    done = subprocess.run([str(python), "-c", code, *args], capture_output=True, text=True, timeout=timeout,
                          env=full_env)
    if done.returncode != 0:
        raise AssertionError(f"peer failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return done.stdout


__all__ = ["peer_python", "peers_dir", "run_peer"]
