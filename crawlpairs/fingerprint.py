"""Fingerprints of the settings that shaped a stage's output.

Resume skips work that is already done; it must never skip work that was done under
other settings. Each stage records, beside what it commits (a per-file manifest, a
shard's stats, a plan), the settings that change its rows, and compares them with the
current run's before reusing anything. Settings that only change speed or politeness
(threads, timeouts, partition counts) are left out, so tuning them never forces a redo.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterable
from typing import Any


class StaleOutput(ValueError):
    """Output on disk was computed under other settings; the message says which and what to do."""


def settings(section: Any, ignore: Iterable[str] = ()) -> dict[str, Any]:
    """The output-affecting fields of a config section (a dataclass), as plain JSON values."""
    skip = set(ignore)
    doc = dataclasses.asdict(section) if dataclasses.is_dataclass(section) else dict(section)
    return {k: v for k, v in sorted(doc.items()) if k not in skip}


def digest(doc: dict[str, Any]) -> str:
    """Short stable hash of a settings document (key order does not matter)."""
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """`name: old -> new` for every setting that differs (missing on one side included)."""
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key, "<unset>"), new.get(key, "<unset>")
        if a != b:
            out.append(f"{key}: {json.dumps(a, default=str)} -> {json.dumps(b, default=str)}")
    return out


def check(old: dict[str, Any] | None, new: dict[str, Any], where: str, force_flag: str = "--force") -> None:
    """Raise StaleOutput when `old` (what `where` was computed with) differs from `new`.

    `old` None means the output predates fingerprints or holds nothing yet: nothing to compare.
    """
    if old is None:
        return
    diffs = differences(old, new)
    if diffs:
        shown = "; ".join(diffs[:5]) + (f"; and {len(diffs) - 5} more" if len(diffs) > 5 else "")
        raise StaleOutput(f"{where} was computed with other settings ({shown}): "
                          f"re-run with {force_flag} to recompute it, or write to a new --output")
