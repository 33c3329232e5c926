"""Seeded draws shared by every part of the generator.

Every byte written depends on the order and kind of these draws; they sit in one place so
that a refactor cannot change them by accident (tests/generate pins the output's sha256).
"""

from __future__ import annotations

import hashlib
import random
from typing import Any


def seed_int(*parts: Any) -> int:
    """A 64-bit seed from any repr-able parts, stable across processes (unlike hash())."""
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "big")


def ri(rng: random.Random, a: int, b: int) -> int:
    """randint without randint's overhead (it is on the hot path)."""
    return a + int(rng.random() * (b - a + 1))


def ch(rng: random.Random, seq: Any) -> Any:
    """choice with one rng.random() per call, as ri (random.choice draws bits, not floats)."""
    return seq[int(rng.random() * len(seq))]
