"""Counters every stage fills and writes to `_stats.json`.

Spark-free, so udfs count on executors and the job merges what they return. A
count is a plain int keyed by name; drops and errors have their own maps so that
"every dropped row has a reason" is checkable: rows_in == rows_out + sum(dropped).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

MAX_SAMPLES = 50  # error samples kept per kind: enough to debug, small enough to ship


@dataclass
class Stats:
    counts: Counter = field(default_factory=Counter)
    dropped: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)
    error_samples: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def incr(self, key: str, n: int = 1) -> None:
        self.counts[key] += n

    def drop(self, reason: str, n: int = 1) -> None:
        if n:
            self.dropped[reason] += n

    def error(self, kind: str, input: str | None = None, message: str | None = None) -> None:
        """Count an error; keep a few samples naming the input they concern."""
        self.errors[kind] += 1
        same_kind = sum(1 for s in self.error_samples if s["kind"] == kind)
        if same_kind < MAX_SAMPLES:
            self.error_samples.append(
                {"kind": kind, "input": input, "message": (message or "")[:500]}
            )

    def merge(self, other: Stats) -> Stats:
        self.counts.update(other.counts)
        self.dropped.update(other.dropped)
        self.errors.update(other.errors)
        for sample in other.error_samples:
            if sum(1 for s in self.error_samples if s["kind"] == sample["kind"]) < MAX_SAMPLES:
                self.error_samples.append(sample)
        for key, value in other.extra.items():
            self.extra.setdefault(key, value)
        return self

    def to_dict(self) -> dict[str, Any]:
        return {
            "counts": dict(sorted(self.counts.items())),
            "dropped": dict(sorted(self.dropped.items())),
            "dropped_total": sum(self.dropped.values()),
            "errors": dict(sorted(self.errors.items())),
            "errors_total": sum(self.errors.values()),
            "error_samples": self.error_samples,
            **({"extra": self.extra} if self.extra else {}),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Stats:
        return cls(
            counts=Counter(d.get("counts", {})),
            dropped=Counter(d.get("dropped", {})),
            errors=Counter(d.get("errors", {})),
            error_samples=list(d.get("error_samples", [])),
            extra=dict(d.get("extra", {})),
        )
