"""MinHash signatures, LSH band keys and exact Jaccard for caption near-dedup.

Everything here works on plain Python values, numpy arrays or Arrow batches and
imports no Spark, so it runs on executors (via `mapInArrow`) and in unit tests.

Signatures are datasketch's `affine32` MinHash: the same permutations
(`MinHash(num_perm, seed).permutations`), the same MurmurHash3 pre-mix and the
same `min(a*h + b mod 2^32)`. What differs is only *how* they are computed: a
whole Arrow batch at once in numpy instead of one Python `MinHash` object per
caption (datasketch's `MinHash.bulk` spends most of its time creating and copying
those objects). The shingles are hashed with a vectorised polynomial hash of `k`
Unicode code points; tests/dedup/test_minhash.py feeds the very same shingle hashes to
`MinHash.bulk` and the tests check that both give identical hash values.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator, Sequence

import numpy as np
import pyarrow as pa
from datasketch import MinHash

try:  # datasketch's own pre-mix, so values match MinHash.update_batch bit for bit
    from datasketch.minhash import _fmix as _ds_fmix
except ImportError:  # pragma: no cover - older/newer datasketch: same constants below
    _ds_fmix = None

_NON_WORD = re.compile(r"[\W_]+", re.UNICODE)
_POLY = np.uint32(0x01000193)  # FNV prime: odd, spreads code points over 32 bits
_MAX32 = np.uint32(0xFFFFFFFF)
SHINGLE_CHUNK = 2048  # shingles per numpy block: 2048 x 128 perms x 4 B = 1 MB, stays in cache


def normalize(text: str | None) -> str:
    """Case, width, punctuation and spacing do not make a caption different."""
    if not text:
        return ""
    text = unicodedata.normalize("NFKC", text).lower()
    return _NON_WORD.sub(" ", text).strip()


def shingles(text: str, k: int) -> set[str]:
    """Character k-grams of the normalised text; a text shorter than k is one shingle."""
    t = normalize(text)
    if not t:
        return set()
    if len(t) <= k:
        return {t}
    return {t[i : i + k] for i in range(len(t) - k + 1)}


def jaccard(a: str | None, b: str | None, k: int) -> float:
    """Exact Jaccard similarity of the two captions' shingle sets (verification of LSH pairs)."""
    sa, sb = shingles(a or "", k), shingles(b or "", k)
    if not sa or not sb:
        return 0.0
    return len(sa & sb) / len(sa | sb)


def _fmix32(hv: np.ndarray) -> np.ndarray:
    if _ds_fmix is not None:
        return _ds_fmix(hv, 32)
    hv = hv ^ (hv >> np.uint32(16))
    hv = hv * np.uint32(0x85EBCA6B)
    hv = hv ^ (hv >> np.uint32(13))
    hv = hv * np.uint32(0xC2B2AE35)
    return hv ^ (hv >> np.uint32(16))


def shingle_hashes(texts: Sequence[str | None], k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hashes of every shingle of every text, vectorised over the whole batch.

    Returns (hashes uint32, doc index of each hash int64, has_shingles bool per text).
    A shingle's hash is sum(cp[i+j] * P^(k-1-j)) mod 2^32 over its k code points;
    texts shorter than k are padded with zeros to one shingle. Empty texts have none.
    """
    norm = [normalize(t) for t in texts]
    n = len(norm)
    lengths = np.fromiter((len(t) for t in norm), dtype=np.int64, count=n)
    has = lengths > 0
    padded = [t if len(t) >= k or not t else t + "\0" * (k - len(t)) for t in norm]
    plen = np.fromiter((len(t) for t in padded), dtype=np.int64, count=n)
    if not has.any():
        return np.empty(0, np.uint32), np.empty(0, np.int64), has
    cps = np.frombuffer("".join(padded).encode("utf-32-le"), dtype=np.uint32)
    total = cps.shape[0]
    # rolling polynomial hash for every start position of the concatenation
    h = np.zeros(max(total - k + 1, 0), dtype=np.uint32)
    for j in range(k):
        h = h * _POLY + cps[j : total - k + 1 + j]
    starts = np.concatenate(([0], np.cumsum(plen)[:-1]))
    counts = np.where(has, plen - k + 1, 0)
    doc = np.repeat(np.arange(n, dtype=np.int64), counts)
    # position of each valid shingle: its doc's start + offset within the doc
    offs = np.arange(doc.shape[0], dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)
    pos = starts[doc] + offs
    return h[pos], doc, has


def _permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    a, b = MinHash(num_perm=num_perm, seed=seed, scheme="affine32").permutations
    return a.astype(np.uint32), b.astype(np.uint32)


_PERM_CACHE: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}


def permutations(num_perm: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    key = (num_perm, seed)
    if key not in _PERM_CACHE:
        _PERM_CACHE[key] = _permutations(num_perm, seed)
    return _PERM_CACHE[key]


def signatures(texts: Sequence[str | None], k: int = 5, num_perm: int = 128, seed: int = 1
               ) -> tuple[np.ndarray, np.ndarray]:
    """MinHash signatures (n x num_perm uint32) and a mask of texts that have shingles.

    Texts without shingles keep datasketch's empty value (all 0xFFFFFFFF) and must
    not be banded: they would all collide.
    """
    hv, doc, has = shingle_hashes(texts, k)
    n = len(texts)
    sig = np.full((n, num_perm), _MAX32, dtype=np.uint32)
    if hv.size == 0:
        return sig, has
    a, b = permutations(num_perm, seed)
    mixed = _fmix32(hv)
    buf = np.empty((SHINGLE_CHUNK, num_perm), dtype=np.uint32)
    for lo in range(0, hv.size, SHINGLE_CHUNK):
        hi = min(lo + SHINGLE_CHUNK, hv.size)
        phv = buf[: hi - lo]
        np.multiply(mixed[lo:hi, None], a[None, :], out=phv)  # wraps mod 2^32, like datasketch
        np.add(phv, b[None, :], out=phv)
        d = doc[lo:hi]
        # rows of one doc are contiguous: reduce each run, then fold into sig
        bounds = np.flatnonzero(np.r_[True, d[1:] != d[:-1]])
        mins = np.minimum.reduceat(phv, bounds, axis=0)
        ids = d[bounds]
        sig[ids] = np.minimum(sig[ids], mins)
    return sig, has


# -- LSH banding ---------------------------------------------------------------------

_C1 = np.uint64(0x9E3779B97F4A7C15)
_C2 = np.uint64(0xBF58476D1CE4E5B9)
_C3 = np.uint64(0x94D049BB133111EB)


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: a bijection that spreads every input bit."""
    x = x ^ (x >> np.uint64(30))
    x = x * _C2
    x = x ^ (x >> np.uint64(27))
    x = x * _C3
    return x ^ (x >> np.uint64(31))


def band_keys(sig: np.ndarray, bands: int, rows: int, salt: np.ndarray | None = None) -> np.ndarray:
    """One 64-bit key per (text, band): equal keys <=> equal band (up to 2^-64 collisions).

    The band index is folded in, so all bands share one key space and the Spark side
    needs a single shuffle key; `salt` (one int64 per text, e.g. a hash of the image
    domain) scopes collisions to texts with the same salt.
    """
    n = sig.shape[0]
    if bands * rows > sig.shape[1]:
        raise ValueError(f"bands x rows = {bands * rows} > num_perm = {sig.shape[1]}")
    with np.errstate(over="ignore"):
        base = np.zeros(n, np.uint64) if salt is None else np.asarray(salt).astype(np.int64).view(np.uint64)
        out = np.empty((n, bands), dtype=np.uint64)
        s = sig.astype(np.uint64)
        for bi in range(bands):
            h = _mix64(base + np.uint64(bi + 1) * _C1)
            for r in range(rows):
                h = _mix64(h ^ s[:, bi * rows + r] ^ (np.uint64(r) << np.uint64(32)))
            out[:, bi] = h
    return out.view(np.int64)


def candidate_probability(s: float, bands: int, rows: int) -> float:
    """P(two texts with Jaccard s share at least one band) = 1 - (1 - s^r)^b."""
    return 1.0 - (1.0 - s**rows) ** bands


def lsh_threshold(bands: int, rows: int) -> float:
    """The similarity where the S-curve is steepest, ~ (1/b)^(1/r)."""
    return (1.0 / bands) ** (1.0 / rows)


# -- Arrow batch functions for mapInArrow ---------------------------------------------

BAND_SCHEMA = pa.schema([("id", pa.int64()), ("bucket", pa.int64())])
PAIR_SCHEMA = pa.schema([("a", pa.int64()), ("b", pa.int64()), ("jaccard", pa.float32())])


def band_batches(batches: Iterator[pa.RecordBatch], k: int, num_perm: int, bands: int, rows: int,
                 seed: int = 1) -> Iterator[pa.RecordBatch]:
    """(id int64, text, scope int64|null) -> one (id, bucket) row per band of every text.

    Texts with no shingles (empty after normalisation) get no bucket: they cannot be
    near-duplicates of anything.
    """
    for batch in batches:
        if batch.num_rows == 0:
            continue
        ids = batch.column("id").to_numpy(zero_copy_only=False)
        texts = batch.column("text").to_pylist()
        salt = None
        if "scope" in batch.schema.names:
            salt = batch.column("scope").fill_null(0).to_numpy(zero_copy_only=False)
        sig, has = signatures(texts, k=k, num_perm=num_perm, seed=seed)
        if not has.all():
            sig, ids = sig[has], ids[has]
            salt = None if salt is None else salt[has]
        if ids.size == 0:
            continue
        keys = band_keys(sig, bands, rows, salt)
        yield pa.RecordBatch.from_arrays(
            [pa.array(np.repeat(ids, bands)), pa.array(keys.reshape(-1))], schema=BAND_SCHEMA
        )


def verify_batches(batches: Iterator[pa.RecordBatch], k: int) -> Iterator[pa.RecordBatch]:
    """(a, b, text_a, text_b) -> (a, b, exact Jaccard of the shingle sets)."""
    for batch in batches:
        if batch.num_rows == 0:
            continue
        ta, tb = batch.column("text_a").to_pylist(), batch.column("text_b").to_pylist()
        j = np.fromiter((jaccard(x, y, k) for x, y in zip(ta, tb, strict=True)), dtype=np.float32,
                        count=batch.num_rows)
        yield pa.RecordBatch.from_arrays([batch.column("a"), batch.column("b"), pa.array(j)],
                                         schema=PAIR_SCHEMA)
