"""The extract job on a real embedded Spark engine, over the real crawl files."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.dataset as ds
import pytest

from crawlpairs import storage
from crawlpairs.config import Config
from crawlpairs.jobs.extract import ExtractStage, file_key
from crawlpairs.stage import UsageError, run_stage
from crawlpairs.stats import Stats
from crawlpairs.udfs.extract.candidates import CANDIDATE_SCHEMA, extract_stream

REPO = Path(__file__).resolve().parents[2]
CC2014_WAT = "CC-MAIN-20140820021334-00006-ip-10-180-136-8.ec2.internal.warc.wat"


def read_table(path: str | Path):
    dataset = ds.dataset(str(path), format="parquet", partitioning="hive")
    return dataset.to_table().to_pandas()


def make_cfg(inputs: list[str], out: Path, lid_model: str) -> Config:
    cfg = Config()
    cfg.input = inputs
    cfg.output = str(out)
    cfg.extract.lid_model = lid_model
    return cfg


def reference_uids(files: list[Path], cfg: Config) -> set[str]:
    """What the udf alone yields per file, united: the job must neither lose nor duplicate."""
    uids: set[str] = set()
    for f in files:
        with open(f, "rb") as fh:
            for rb in extract_stream(fh, str(f), cfg.extract, Stats()):
                uids.update(rb.column("uid").to_pylist())
    return uids


@pytest.fixture(scope="module")
def real_run(spark, shared_data, tmp_path_factory):
    """Every real crawl file with default settings (language ID by the packaged model)."""
    out = tmp_path_factory.mktemp("extract-real")
    cfg = Config()
    cfg.input, cfg.output = [str(shared_data / "wat"), str(shared_data / "warc")], str(out)
    stats = run_stage(ExtractStage, cfg, spark)
    return cfg, out, stats


def test_real_files_rows_match_udf_and_are_unique(real_run, shared_data):
    cfg, out, stats = real_run
    df = read_table(out / "candidates")
    files = [p for d in ("wat", "warc") for p in sorted((shared_data / d).iterdir())]
    assert set(df.uid) == reference_uids(files, cfg)
    assert not df.duplicated(["source_file", "uid"]).any()  # within a file: once (across files: dedup stage)
    assert df.duplicated("uid").any()  # the 2014 WAT and its WARC twin hold the same pairs: both kept
    assert len(df) == stats.counts["rows_out"]
    assert set(df.columns) == set(CANDIDATE_SCHEMA.names)
    assert df.url.str.match(r"^https?://").all()
    assert (df.text.str.len() >= 5).all()


def test_real_files_known_values(real_run):
    _, out, _ = real_run
    df = read_table(out / "candidates")
    # The CC-MAIN-2014-35 WAT holds 4 IMG@/src links with alt text; two alts are shorter than
    # LAION's 5 characters. Its WARC twin holds the same pages.
    urls = set(df.url)
    assert "http://0pointer.de/photos/galleries/Australia/thumbs/img-495.jpg" in urls
    assert "http://creativecommons.org/images/public/somerights20.png" in urls
    assert set(df.crawl) >= {"CC-MAIN-2014-35", "CC-MAIN-2020-34"}
    assert df.language.notna().all()  # the default model (builtin lid.176.ftz), no network
    assert (df[df.url == "http://0pointer.de/photos/galleries/Australia/thumbs/img-495.jpg"].language == "en").all()


def test_stats_account_for_every_pair_and_error(real_run):
    _, out, stats = real_run
    doc = json.loads((out / "candidates_meta" / "_stats.json").read_text())
    c = doc["counts"]
    assert c["pairs_found"] == c["rows_out"] + doc["dropped_total"]
    assert doc["errors"].get("wat_json", 0) >= 1  # the truncated CC-MAIN-2023-14 WAT
    truncated = [s for s in doc["error_samples"] if "truncated" in (s["input"] or "")]
    assert truncated, "the truncated file's error names that file"
    assert doc["seconds"] > 0 and doc["stage"] == "extract"


def test_manifests_record_the_tasks_wall_and_cpu_seconds(real_run):
    """Each file's manifest says how long its task took and how much CPU its Python worker
    spent on it (bench/extract reads the marginal cost of a file from `cpu_seconds`)."""
    _, out, _ = real_run
    docs = [json.loads(p.read_text()) for p in (out / "candidates_meta" / "files").glob("*.json")]
    assert len(docs) >= 8
    assert all(d["seconds"] >= 0 and d["cpu_seconds"] >= 0 for d in docs)
    biggest = max(docs, key=lambda d: d["rows"])
    assert biggest["rows"] > 100 and biggest["cpu_seconds"] > 0


def test_rerun_skips_committed_files_and_changes_nothing(real_run, spark):
    cfg, out, stats = real_run
    before = read_table(out / "candidates").sort_values("uid").reset_index(drop=True)
    again = run_stage(ExtractStage, cfg, spark)
    assert again.extra["this_run"]["counts"]["files_skipped_committed"] == again.counts["files_read"]
    after = read_table(out / "candidates").sort_values("uid").reset_index(drop=True)
    assert before.equals(after)


def test_output_of_the_old_layout_is_moved_not_redone(real_run, spark):
    """An output written before the data-only layout (manifests in candidates/_files/, stats in
    candidates/): the next run moves the manifests beside the data and redoes no file."""
    cfg, out, _ = real_run
    before = read_table(out / "candidates").sort_values("uid").reset_index(drop=True)
    meta = out / "candidates_meta"
    keys = sorted(p.name for p in (meta / "files").glob("*.json"))
    (meta / "files").rename(out / "candidates" / "_files")
    (meta / "_stats.json").rename(out / "candidates" / "_stats.json")
    again = run_stage(ExtractStage, cfg, spark)
    assert again.extra["this_run"]["counts"]["files_skipped_committed"] == len(keys)
    assert sorted(p.name for p in (meta / "files").glob("*.json")) == keys
    assert all(p.name.startswith("crawl=") for p in (out / "candidates").iterdir())  # data only again
    after = read_table(out / "candidates").sort_values("uid").reset_index(drop=True)
    assert before.equals(after)


def test_lost_manifest_rewrites_file_without_duplicates(spark, shared_data, lid_model, tmp_path):
    """A crash after a file's rows were written but before its manifest: the re-run redoes that file only."""
    cfg = make_cfg([str(shared_data / "wat"), str(shared_data / "warc")], tmp_path, lid_model)
    run_stage(ExtractStage, cfg, spark)
    first = read_table(tmp_path / "candidates").sort_values(["source_file", "uid"]).reset_index(drop=True)
    victim = tmp_path / "candidates_meta" / "files" / (file_key(str(shared_data / "wat" / (CC2014_WAT + ".gz"))) + ".json")
    victim.unlink()
    # a killed task's leftovers: a temp file (hidden) and the orphan data file stay until the re-run
    (tmp_path / "candidates" / "crawl=CC-MAIN-2014-35" / ".x.123.parquet.tmp").write_bytes(b"partial")
    again = run_stage(ExtractStage, cfg, spark)
    assert again.extra["this_run"]["counts"]["files_read"] == 1
    second = read_table(tmp_path / "candidates").sort_values(["source_file", "uid"]).reset_index(drop=True)
    assert second.equals(first)
    assert not list((tmp_path / "candidates").rglob("*.tmp"))
    assert again.counts["rows_out"] == len(second)


def test_orphan_of_an_input_no_longer_given_is_removed(spark, shared_data, lid_model, tmp_path):
    """Between runs, every visible row belongs to a manifested file (stats and table agree)."""
    cfg = make_cfg([str(shared_data / "wat" / (CC2014_WAT + ".gz"))], tmp_path, lid_model)
    run_stage(ExtractStage, cfg, spark)
    manifest = next((tmp_path / "candidates_meta" / "files").glob("*.json"))
    manifest.unlink()  # killed between its data file and its manifest
    cfg.input = [str(shared_data / "warc" / "dolma-sample-0000.warc.gz")]
    stats = run_stage(ExtractStage, cfg, spark)
    df = read_table(tmp_path / "candidates")
    assert set(df.source_file) <= {cfg.input[0]}
    assert len(df) == stats.counts["rows_out"]


def test_bad_inputs_are_counted_and_the_rest_succeeds(spark, shared_data, lid_model, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "empty.warc.gz").write_bytes(b"")
    (bad / "random.bin").write_bytes(os.urandom(4096))
    whole = (shared_data / "wat" / (CC2014_WAT + ".gz")).read_bytes()
    (bad / "cut.warc.wat.gz").write_bytes(whole[: len(whole) * 2 // 3])  # truncated gzip member
    shutil.copy(shared_data / "warc" / "dolma-sample-0000.warc.gz", bad / "good.warc.gz")
    listing_dir = tmp_path / "crawl-index"
    cfg = make_cfg([str(bad), str(tmp_path / "missing.wat.gz"), "CC-MAIN-1999-01"], tmp_path / "out", lid_model)
    cfg.extract.crawl_index_url = str(listing_dir / "{crawl}" / "wat.paths.gz")
    stats = run_stage(ExtractStage, cfg, spark)
    assert stats.errors["missing_input"] == 1
    assert stats.errors["unknown_crawl"] == 1
    assert sum(stats.errors.values()) >= 4  # + empty, random bytes, truncated member
    df = read_table(tmp_path / "out" / "candidates")
    good = reference_uids([bad / "good.warc.gz"], cfg)
    assert good <= set(df.uid)
    per_file = list((tmp_path / "out" / "candidates_meta" / "files").glob("*.json"))
    assert len(per_file) == 4  # one manifest per input file, errors included


def test_crawl_id_and_listing_resolve_through_prefix(spark, shared_data, lid_model, tmp_path):
    """A crawl id is read from its listing; relative lines are joined to --prefix."""
    crawl_dir = tmp_path / "mirror" / "crawl-data" / "CC-MAIN-2014-35" / "segments" / "s1" / "wat"
    crawl_dir.mkdir(parents=True)
    shutil.copy(shared_data / "wat" / (CC2014_WAT + ".gz"), crawl_dir / (CC2014_WAT + ".gz"))
    rel = f"crawl-data/CC-MAIN-2014-35/segments/s1/wat/{CC2014_WAT}.gz"
    listing = tmp_path / "mirror" / "crawl-data" / "CC-MAIN-2014-35" / "wat.paths.gz"
    listing.write_bytes(gzip.compress((rel + "\n").encode()))
    cfg = make_cfg(["CC-MAIN-2014-35"], tmp_path / "out", lid_model)
    cfg.extract.prefix = str(tmp_path / "mirror")
    cfg.extract.crawl_index_url = str(tmp_path / "mirror" / "crawl-data" / "{crawl}" / "wat.paths.gz")
    cfg.extract.min_text_length = 1
    stats = run_stage(ExtractStage, cfg, spark)
    assert stats.counts["rows_out"] == 4  # all 4 alt-text images once the length filter is off
    assert set(read_table(tmp_path / "out" / "candidates").crawl) == {"CC-MAIN-2014-35"}


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "crawlpairs.cli", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


@pytest.mark.parametrize("args, needle", [
    (["extract", "--input", "x", "--output", "y", "--no-such-flag"], "--no-such-flag"),
    (["extract", "--input", "x", "--output", "y", "--min-text-length", "five"], "min_text_length"),
    (["extract", "--output", "y"], "--input"),
    (["extract", "--input", "x", "--output", "/proc/forbidden/out"], "--output /proc/forbidden/out"),
    (["extract", "--input", "x", "--output", "y", "--config", "/nonexistent.toml"], "--config"),
    (["frobnicate"], "frobnicate"),
])
def test_user_errors_are_one_line_naming_the_flag(args, needle, tmp_path):
    res = cli(*args, cwd=tmp_path)
    assert res.returncode == 2
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, res.stderr
    assert needle in lines[0]


@pytest.mark.parametrize("model, needle", [
    ("/nonexistent/lid.176.bin", "no such file"),
    ("http://127.0.0.1:1/lid.bin", "cannot fetch"),
    ("NOT_FASTTEXT", "not a fastText model"),
])
def test_unusable_lid_model_stops_before_any_input_is_read(model, needle, shared_data, tmp_path):
    """One line naming --lid-model, exit 2, nothing committed (not a run of empty files)."""
    if model == "NOT_FASTTEXT":
        model = str(shared_data / "wat" / (CC2014_WAT + ".gz"))
    res = cli("extract", "--input", str(shared_data / "wat" / (CC2014_WAT + ".gz")), "--output", str(tmp_path / "o"),
              "--lid-model", model, cwd=tmp_path)
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.returncode == 2 and len(lines) == 1, res.stderr
    assert "--lid-model" in lines[0] and needle in lines[0]
    assert not (tmp_path / "o" / "candidates_meta" / "files").exists()


def test_changed_settings_stop_the_rerun_and_force_reextracts(spark, shared_data, lid_model, tmp_path):
    """Resume never reuses rows made under other settings: it names the difference, --force redoes."""
    cfg = make_cfg([str(shared_data / "wat" / (CC2014_WAT + ".gz"))], tmp_path, lid_model)
    first = run_stage(ExtractStage, cfg, spark)
    cfg.extract.min_text_length = 1
    with pytest.raises(UsageError, match=r"--force.*min_text_length: 5 -> 1"):
        run_stage(ExtractStage, cfg, spark)
    cfg.extract.force = True
    forced = run_stage(ExtractStage, cfg, spark)
    assert forced.extra["this_run"]["counts"]["files_forced"] == 1
    assert forced.counts["rows_out"] == 4 > first.counts["rows_out"]  # the two short alts now pass
    assert len(read_table(tmp_path / "candidates")) == 4
    # the same model at another path is the same setting: no redo, no complaint
    cfg.extract.force = False
    cfg.extract.lid_model = "builtin"
    again = run_stage(ExtractStage, cfg, spark)
    assert again.extra["this_run"]["counts"]["files_skipped_committed"] == 1


def test_unknown_setting_in_toml_is_named(tmp_path):
    (tmp_path / "c.toml").write_text("[extract]\nmin_text_lenght = 3\n")
    res = cli("extract", "--input", "x", "--output", "y", "--config", str(tmp_path / "c.toml"), cwd=tmp_path)
    assert res.returncode == 2 and "min_text_lenght" in res.stderr


@pytest.mark.integration
def test_s3_input_and_output(s3_spark, s3_server, shared_data, lid_model, tmp_path):
    """Inputs read from and candidates written to a real S3-compatible server (SeaweedFS)."""
    st = s3_server.storage
    for name in (CC2014_WAT + ".gz", "truncated-CC-MAIN-2023-14.warc.wat.gz"):
        storage.write_bytes(s3_server.uri("in", name), (shared_data / "wat" / name).read_bytes(), st)
    storage.write_bytes(s3_server.uri("in", "dolma.warc.gz"),
                        (shared_data / "warc" / "dolma-sample-0000.warc.gz").read_bytes(), st)
    cfg = make_cfg([s3_server.uri("in/")], Path("unused"), lid_model)
    cfg.output = s3_server.uri("out")
    cfg.storage = st
    stats = run_stage(ExtractStage, cfg, s3_spark)
    fs, path = storage.filesystem(s3_server.uri("out", "candidates"), st)
    table = ds.dataset(path, filesystem=fs, format="parquet", partitioning="hive").to_table().to_pandas()
    local_ref = reference_uids([shared_data / "wat" / (CC2014_WAT + ".gz"),
                                shared_data / "warc" / "dolma-sample-0000.warc.gz"], cfg)
    assert set(table.uid) == local_ref
    assert stats.errors["wat_json"] >= 1
    assert storage.exists(s3_server.uri("out", "candidates_meta", "_stats.json"), st)
    assert table.source_file.str.startswith("s3://").all()


def test_http_input_streams_the_same_rows_as_the_local_file(spark, shared_data, lid_model, tmp_path):
    """An http(s):// input is streamed by the executor (a real loopback server stands in for the web)."""
    import functools
    import http.server
    import threading

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(shared_data / "warc"))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/dolma-sample-0000.warc.gz"
    try:
        cfg = make_cfg([url], tmp_path, lid_model)
        stats = run_stage(ExtractStage, cfg, spark)
    finally:
        server.shutdown()
    df = read_table(tmp_path / "candidates")
    assert set(df.uid) == reference_uids([shared_data / "warc" / "dolma-sample-0000.warc.gz"], cfg)
    assert set(df.source_file) == {url}
    assert not stats.errors
