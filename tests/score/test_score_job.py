"""The score stage on local Spark: three shards (two good, one of bad input), tiny CLIP, random weights."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from crawlpairs.config import Config, ScoreConfig
from crawlpairs.jobs.score import ScoreStage, list_shards
from crawlpairs.stage import UsageError, run_stage
from support.score import TINY, similarity_band


def config(images_dir: Path, out: Path, **kw) -> Config:
    cfg = Config()
    cfg.input = [str(images_dir)]
    cfg.output = str(out)
    base = {"model": TINY, "pretrained": None, "batch_size": 16,
            "language_thresholds": {"en": -1.0, "de": -1.0}, "default_threshold": 2.0,  # fr, es: dropped
            "semantic_dup_threshold": 0.999995,  # random tiny CLIP: distinct images reach 0.9999
            "rows_per_file": 4}  # big partitions are written by several tasks
    base.update(kw)
    cfg.score = ScoreConfig(**base)
    return cfg


@pytest.fixture(scope="module")
def job(spark, images_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("score-job")
    stats = run_stage(ScoreStage, config(images_dir, out), spark=spark)
    return out, stats


def test_job_writes_data_only_scored_files_and_counts_every_row(job, spark):
    out, stats = job
    doc = json.loads((out / "scored_meta" / "_stats.json").read_text())
    c, d = doc["counts"], doc["dropped"]
    assert c["shards_in"] == 3 and c["shards_scored"] == 3
    assert c["rows_in"] == c["rows_out"] + doc["dropped_total"]
    assert d["similarity_below_threshold"] > 0 and d["corrupt_image"] == 2 and d["empty_image"] == 1
    assert d["missing_text"] == 1 and doc["errors"]["missing_txt"] == 1
    # scored/ holds Parquet files only: no folders, no _SUCCESS, no .crc, no stats
    names = sorted(p.name for p in (out / "scored").iterdir())
    assert names and all(n.startswith("part-") and n.endswith(".parquet") for n in names), names
    # language and the band are columns inside every file (a band is a number), and each file is
    # at most rows_per_file rows and sorted, so a filter on either skips files by their statistics
    files = sorted((out / "scored").glob("*.parquet"))
    assert len(files) >= -(-c["rows_out"] // 4)
    langs = set()
    for f in files:
        t = pq.read_table(f)
        assert t.num_rows <= 4 and t.schema.field("similarity_band").type == "double"
        assert t.schema.field("language").type == "string"
        pairs = list(zip(t.column("language").to_pylist(), t.column("similarity_band").to_pylist(), strict=True))
        assert pairs == sorted(pairs)
        langs |= {p[0] for p in pairs}
    assert langs == {"de", "en"}
    df = spark.read.parquet(str(out / "scored"))
    assert df.count() == c["rows_out"]
    assert "drop_reason" not in df.columns and "img_emb" not in df.columns
    rows = df.select("similarity", "similarity_band").toPandas()
    assert rows.similarity_band.nunique() > 1
    assert ((rows.similarity >= rows.similarity_band - 1e-6) & (rows.similarity < rows.similarity_band + 0.05 + 1e-6)).all()
    # the job's Spark expression gives every row the band the udf gives it
    assert [similarity_band(s, 0.05) for s in rows.similarity] == list(rows.similarity_band)


def test_embeddings_one_aligned_triple_per_shard(job):
    out, stats = job
    emb = out / "embeddings"
    total = 0
    for sid in ("00000", "00001", "00002"):
        img = np.load(emb / "img_emb" / f"img_emb_{sid}.npy")
        txt = np.load(emb / "text_emb" / f"text_emb_{sid}.npy")
        meta = pq.read_table(emb / "metadata" / f"metadata_{sid}.parquet").to_pandas()
        assert img.shape[0] == txt.shape[0] == len(meta) > 0
        np.testing.assert_allclose(np.sum(img * txt, axis=1), meta.similarity, atol=1e-5)
        assert set(meta.language) <= {"en", "de"}
        total += len(meta)
    assert total == stats.counts["rows_out"]
    assert stats.extra["embedding_files"] == 3


def test_semantic_duplicates_flagged_across_shards(job, spark):
    out, stats = job
    df = spark.read.parquet(str(out / "scored")).select("key", "semantic_dup", "semantic_dup_of").toPandas()
    flagged = df[df.semantic_dup].set_index("key").semantic_dup_of
    assert stats.counts["semantic_dups_flagged"] == len(flagged)
    # shards 00000 ("a…") and 00001 ("b…") hold the same photos: the later key points at the earlier;
    # in the bad-input shard c00003 and c00006 are the same image with different captions
    assert flagged.pop("c00006") == "c00003"
    assert len(flagged) > 20 and flagged.index.str.startswith("b").all()
    assert flagged.str.startswith("a").all()
    assert not df[df.key.str.startswith("a")].semantic_dup.any()


def test_rerun_skips_done_shards_and_rewrites_the_same_output(job, spark, images_dir):
    out, first = job
    again = run_stage(ScoreStage, config(images_dir, out), spark=spark)
    assert again.counts["shards_skipped_done"] == 3 and "shards_scored" not in again.counts
    assert again.counts["rows_out"] == first.counts["rows_out"]
    assert spark.read.parquet(str(out / "scored")).count() == first.counts["rows_out"]


def test_rerun_with_other_thresholds_stops_and_force_rescores(job, spark, images_dir):
    """The issue's experiment: other thresholds into the same output must not reuse old shard rows."""
    out, first = job
    keep_all = {"default_threshold": -1.0, "language_thresholds": {}}
    with pytest.raises(UsageError, match=r"default_threshold: 2\.0 -> -1\.0.*--force"):
        run_stage(ScoreStage, config(images_dir, out, **keep_all), spark=spark)
    forced = run_stage(ScoreStage, config(images_dir, out, force=True, **keep_all), spark=spark)
    assert forced.counts["shards_scored"] == 3 and "similarity_below_threshold" not in forced.dropped
    assert forced.counts["rows_out"] > first.counts["rows_out"]
    # the output now records the new settings: a plain re-run with them reuses every shard
    again = run_stage(ScoreStage, config(images_dir, out, **keep_all), spark=spark)
    assert again.counts["shards_skipped_done"] == 3 and again.counts["rows_out"] == forced.counts["rows_out"]
    # back to the fixture's settings for the tests after this one
    run_stage(ScoreStage, config(images_dir, out, force=True), spark=spark)


def test_bad_model_name_is_a_one_line_usage_error(spark, images_dir, tmp_path):
    with pytest.raises(UsageError, match="--model nope"):
        run_stage(ScoreStage, config(images_dir, tmp_path, model="nope"), spark=spark)
    with pytest.raises(UsageError, match="--nsfw-model"):
        run_stage(ScoreStage, config(images_dir, tmp_path, nsfw_model=str(tmp_path / "missing.npz")), spark=spark)


def test_list_shards_forms(images_dir):
    assert [Path(p).name for p in list_shards([str(images_dir)], None)] == ["00000.tar", "00001.tar", "00002.tar"]
    assert len(list_shards([str(images_dir / "0000[01].tar")], None)) == 2
    assert len(list_shards([str(images_dir / "00002.tar")], None)) == 1


def test_cli_flags_reach_the_score_config():
    from crawlpairs.stage import build_parser, config_from_args

    stage = ScoreStage()
    args = build_parser(stage).parse_args([
        "--input", "in", "--output", "out", "--model", TINY, "--pretrained", "none",
        "--language-thresholds", "en=0.3,de=0.2", "--default-threshold", "0.25", "--punsafe-max", "0.45",
        "--main-model-languages", "en,de", "--no-text-trim", "--semantic-dup-threshold", "0.97"])
    sc = config_from_args(args, stage).score
    assert sc.pretrained is None and sc.language_thresholds == {"en": 0.3, "de": 0.2}
    assert sc.default_threshold == 0.25 and sc.punsafe_max == 0.45 and sc.main_model_languages == ["en", "de"]
    assert sc.text_trim is False and sc.semantic_dup_threshold == 0.97


@pytest.mark.integration
def test_duckdb_and_hf_datasets_see_language_and_band_as_columns(job):
    """The issue's readers: DuckDB's `scored/**` (no _SUCCESS/.crc to trip on) and HF `datasets`
    (which lost language and the band when they were folder names)."""
    from support.peers import peer_python, run_peer

    out, _ = job
    n = json.loads((out / "scored_meta" / "_stats.json").read_text())["counts"]["rows_out"]
    duck = peer_python("duckdb", ["duckdb==2.0.1"])
    code = ("import duckdb,sys; r=duckdb.sql(\"select count(*), count(distinct language), typeof(any_value(similarity_band))"
            " from read_parquet('\" + sys.argv[1] + \"/**')\").fetchall()[0]; print(r)")
    assert eval(run_peer(duck, code, str(out / "scored"))) == (n, 2, "DOUBLE")
    hf = peer_python("hf-datasets", ["datasets==5.2.0"])
    code = ("import datasets,sys; d=datasets.load_dataset(sys.argv[1])['train'];"
            "print(d.num_rows, sorted(set(d['language'])), d.features['similarity_band'].dtype)")
    assert run_peer(hf, code, str(out / "scored")).split() == [str(n), "['de',", "'en']", "float64"]
