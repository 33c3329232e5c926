"""MinHash udfs: same values as datasketch, LSH behaviour, and quality of the defaults."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from crawlpairs.config import DedupConfig
from crawlpairs.udfs.dedup import minhash

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def captions(shared_data) -> pd.DataFrame:
    return pd.read_parquet(shared_data / "captions" / "test_10000.parquet")


def reference_signatures(texts: list[str | None], k: int, num_perm: int, seed: int = 1) -> list:
    """The same shingle hashes through datasketch's own `MinHash.bulk` (slow: the reference)."""
    from datasketch import LeanMinHash, MinHash

    hv, doc, _ = minhash.shingle_hashes(texts, k)
    per_doc: list[list[int]] = [[] for _ in texts]
    for h, d in zip(hv.tolist(), doc.tolist(), strict=True):
        per_doc[d].append(h)
    ms = MinHash.bulk(per_doc, num_perm=num_perm, seed=seed, scheme="affine32", hashfunc=lambda x: x)
    return [LeanMinHash(m) for m in ms]


def test_signatures_equal_datasketch_bulk(captions):
    texts = captions["TEXT"].tolist()[:300] + ["", "!!", "ab", None, "日本語のキャプション 写真"]
    sig, has = minhash.signatures(texts, k=3, num_perm=64)
    ref = reference_signatures(texts, k=3, num_perm=64)
    assert np.array_equal(sig, np.array([m.hashvalues for m in ref], dtype=np.uint32))
    assert has.tolist()[-5:] == [False, False, True, False, True]


def test_normalisation_and_jaccard():
    assert minhash.normalize("  Banded  Dragonfly, GUYANA!") == "banded dragonfly guyana"
    assert minhash.jaccard("Banded Dragonfly, Guyana", "banded dragonfly guyana", 3) == 1.0
    assert minhash.jaccard("Glenni Coffee Table", "Beachy coffee table", 3) < 0.6
    assert round(minhash.jaccard("Glenni Coffee Table", "Beachy coffee table", 3), 2) == 0.48  # docs/dedup.md
    assert minhash.jaccard("", "x", 3) == 0.0


def test_band_keys_scope_and_batches():
    texts = ["Dark granite or marble texture abstract background."] * 2 + ["Stir Fry Mango Chicken"]
    sig, _ = minhash.signatures(texts, k=3, num_perm=50)
    plain = minhash.band_keys(sig, 10, 5)
    assert (plain[0] == plain[1]).all() and not (plain[0] == plain[2]).any()
    scoped = minhash.band_keys(sig, 10, 5, salt=np.array([1, 2, 1]))
    assert not (scoped[0] == scoped[1]).any()  # same text, other image domain: never a candidate
    batch = pa.RecordBatch.from_pydict({"id": [1, 2, 3, 4], "text": texts + ["..."],
                                        "scope": pa.array([7, 7, None, 7], pa.int64())})
    out = pa.Table.from_batches(list(minhash.band_batches(iter([batch]), 3, 50, 10, 5)))
    assert out.num_rows == 30  # 3 texts with shingles x 10 bands; "..." has none
    assert minhash.candidate_probability(0.9, 10, 5) > 0.99 > 0.2 > minhash.candidate_probability(0.3, 10, 5)


def test_default_parameters_precision_recall(captions):
    """The labelled sample (real captions + known near-duplicate variants), defaults only."""
    sys.path.insert(0, str(REPO / "bench" / "dedup"))
    from labelled import make_labelled
    from quality import predict, prf, truth_pairs

    df = make_labelled(captions.head(4000), variant_fraction=0.3, seed=1)
    d = DedupConfig()
    _, same = predict(df["text"].tolist(), d.shingle_size, d.num_perm, d.bands, d.rows_per_band, d.threshold)
    res = prf(same, truth_pairs(df["group"].tolist()))
    assert res["precision"] >= 0.95 and res["recall"] >= 0.88, res
