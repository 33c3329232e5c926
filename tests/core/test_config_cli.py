"""Config layering, flag derivation and input resolution (no Spark)."""

from __future__ import annotations

import gzip
import http.server
import threading
from functools import partial

import pytest

from crawlpairs import config, inputs
from crawlpairs.config import Config, ConfigError, ExtractConfig
from crawlpairs.jobs.extract import ExtractStage
from crawlpairs.spark import S3A_UPLOAD_BUFFER, s3a_retries, session_conf
from crawlpairs.stage import build_parser, config_from_args


def parse(*argv: str):
    stage = ExtractStage()
    return config_from_args(build_parser(stage).parse_args(list(argv)), stage)


def test_flags_override_toml_which_overrides_defaults(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text('output = "from-toml"\n[extract]\nmin_text_length = 3\nmax_url_length = 100\n'
                    '[spark]\nmaster = "local[1]"\n')
    cfg = parse("--input", "a", "b", "--config", str(toml), "--min-text-length", "7",
                "--drop-extensions", "svg,gif,bmp", "--no-exact-dedup", "--conf", "spark.x=1")
    assert cfg.input == ["a", "b"]
    assert cfg.output == "from-toml"
    assert cfg.extract.min_text_length == 7  # flag wins
    assert cfg.extract.max_url_length == 100  # toml wins over default
    assert cfg.extract.drop_extensions == ["svg", "gif", "bmp"]
    assert cfg.extract.exact_dedup is False
    assert cfg.spark.master == "local[1]" and cfg.spark.conf == {"spark.x": "1"}


def test_bad_values_name_the_setting():
    with pytest.raises(ConfigError, match="extract.min_text_length"):
        parse("--input", "a", "--output", "o", "--min-text-length", "many")
    with pytest.raises(ConfigError, match="unknown setting 'nope'"):
        config.load(overrides={"extract": {"nope": 1}})
    with pytest.raises(ConfigError, match="--conf"):
        parse("--input", "a", "--output", "o", "--conf", "novalue")


def test_s3a_settings_only_with_an_endpoint(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    cfg = config.Config()
    always = set(S3A_UPLOAD_BUFFER) | set(s3a_retries(cfg.storage))  # s3a:// on AWS needs no endpoint
    assert {k for k in session_conf(cfg) if "s3a" in k} == always  # no endpoint, no endpoint keys
    cfg.storage.s3_endpoint = "http://127.0.0.1:9000"
    conf = session_conf(cfg)
    assert conf["spark.hadoop.fs.s3a.endpoint"] == "http://127.0.0.1:9000"
    assert conf["spark.hadoop.fs.s3a.path.style.access"] == "true"
    assert conf["spark.hadoop.fs.s3a.threads.keepalivetime"] == "60"  # numeric, for hadoop-aws 3.3
    cfg.storage.spark_s3_scheme = "s3"  # EMR: EMRFS handles s3:// itself
    assert {k for k in session_conf(cfg) if "s3a" in k} == always


def test_s3a_retries_follow_io_retries_and_conf_still_wins():
    cfg = config.load(overrides={"storage": {"io_retries": 2, "io_backoff_base": 0.25, "io_timeout": 7.5},
                                 "spark": {"conf": {"spark.hadoop.fs.s3a.retry.limit": "9"}}})
    conf = session_conf(cfg)
    h = "spark.hadoop.fs.s3a."
    assert conf[h + "attempts.maximum"] == conf[h + "retry.throttle.limit"] == "2"  # SDK and S3A layers
    assert conf[h + "retry.throttle.limit"] == "2" and conf[h + "retry.interval"] == "250ms"
    assert conf[h + "connection.timeout"] == conf[h + "connection.establish.timeout"] == "7500"
    assert conf[h + "retry.limit"] == "9"  # an explicit --conf is the user's word


def test_crawl_id_resolves_to_its_wat_listing():
    cfg = ExtractConfig()
    assert inputs.crawl_listing_uri("CC-MAIN-2024-33", cfg) == (
        "https://data.commoncrawl.org/crawl-data/CC-MAIN-2024-33/wat.paths.gz")
    assert inputs.CRAWL_ID.match("CC-MAIN-2024-33") and not inputs.CRAWL_ID.match("CC-MAIN-20240812")
    assert inputs.crawl_from_path("s3://commoncrawl/crawl-data/CC-MAIN-2024-33/segments/x.wat.gz") == (
        "CC-MAIN-2024-33")


def test_listing_file_relative_lines_join_prefix_and_crawl_is_kept(tmp_path):
    rel = ["crawl-data/CC-MAIN-2024-33/segments/1/wat/a.warc.wat.gz",
           "crawl-data/CC-MAIN-2024-33/segments/1/wat/b.warc.wat.gz"]
    listing = tmp_path / "wat.paths.gz"
    listing.write_bytes(gzip.compress(("\n".join(rel) + "\n").encode()))
    cfg = ExtractConfig(prefix="s3://commoncrawl/")
    res = inputs.resolve([f"@{listing}"], cfg)
    assert [f.uri for f in res.files] == ["s3://commoncrawl/" + r for r in rel]
    assert {f.crawl for f in res.files} == {"CC-MAIN-2024-33"}
    plain = tmp_path / "list.txt"
    plain.write_text("/abs/x.warc.gz\nrel/y.warc.gz\n# comment\n\n")
    res = inputs.resolve([f"@{plain}"], ExtractConfig(prefix="/data"))
    assert [f.uri for f in res.files] == ["/abs/x.warc.gz", "/data/rel/y.warc.gz"]


def test_crawl_id_listing_over_loopback_http(tmp_path):
    """The crawl-id path end to end against a real HTTP server standing in for data.commoncrawl.org."""
    (tmp_path / "crawl-data" / "CC-MAIN-2024-33").mkdir(parents=True)
    (tmp_path / "crawl-data" / "CC-MAIN-2024-33" / "wat.paths.gz").write_bytes(
        gzip.compress(b"crawl-data/CC-MAIN-2024-33/segments/1/wat/a.warc.wat.gz\n"))
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}/"
    try:
        cfg = ExtractConfig(prefix=base, crawl_index_url=base + "crawl-data/{crawl}/wat.paths.gz")
        res = inputs.resolve(["CC-MAIN-2024-33", "CC-MAIN-1999-01"], cfg)
    finally:
        server.shutdown()
    assert [f.uri for f in res.files] == [base + "crawl-data/CC-MAIN-2024-33/segments/1/wat/a.warc.wat.gz"]
    assert res.files[0].crawl == "CC-MAIN-2024-33"
    assert [e[0] for e in res.errors] == ["unknown_crawl"]


def test_local_globs_folders_and_missing(tmp_path):
    (tmp_path / "d" / "sub").mkdir(parents=True)
    for name in ("d/a.wat.gz", "d/sub/b.warc.gz", "d/_hidden/c.gz", "d/.x.gz"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    res = inputs.resolve([str(tmp_path / "d"), str(tmp_path / "d" / "*.gz"), str(tmp_path / "none.gz")],
                         ExtractConfig())
    assert [f.uri for f in res.files] == [str(tmp_path / "d" / "a.wat.gz"), str(tmp_path / "d" / "sub" / "b.warc.gz")]
    assert res.errors == [("missing_input", str(tmp_path / "none.gz"), "no such file")]


def test_configuration_doc_is_current():
    """docs/configuration.md is generated from the dataclasses; regenerate it when they change."""
    from pathlib import Path

    doc = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"
    assert doc.read_text() == config.markdown() + "\n", "run: python -m crawlpairs.config > docs/configuration.md"


def test_help_shows_each_settings_description_and_default(capsys):
    """`--help` reads the same one-line description as docs/configuration.md, with the default."""
    from crawlpairs import config
    from crawlpairs.jobs.extract import ExtractStage
    from crawlpairs.stage import build_parser

    with pytest.raises(SystemExit):
        build_parser(ExtractStage()).parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    about = config.describe("extract")["max_text_length"]
    assert about and f"{about} (default: 4000)" in text
    assert "(default: svg,gif)" in text
    assert "--s3-endpoint S3_ENDPOINT" in text  # common sections too


def test_choices_are_literal_types_refused_at_load_and_listed_in_help(capsys):
    """A choice is written once, as the field's Literal type: TOML/flags, --help and the docs use it."""
    from crawlpairs.jobs.dedup import DedupStage

    with pytest.raises(ConfigError, match="dedup.url_keep: 'newest' is not one of earliest, longest_text"):
        config.load(overrides={"dedup": {"url_keep": "newest"}})
    with pytest.raises(ConfigError, match="index.kinds: 'both'"):
        config.load(overrides={"index": {"kinds": "img_emb,both"}})
    assert config.load(overrides={"download": {"resize_mode": "center_crop"}}).download.resize_mode == "center_crop"
    with pytest.raises(SystemExit):
        build_parser(DedupStage()).parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--url-keep {earliest,longest_text}" in text and "one of: image_domain, global;" in text
    assert "(one of: no, keep_ratio, center_crop, border)" in config.markdown()


def test_validate_checks_every_rule_of_the_sections_named():
    """Rules across fields and ranges live in each section's validate(); errors name the flag."""
    cfg = config.Config()
    config.validate(cfg)  # the defaults are valid
    cfg.dedup.bands = 20
    with pytest.raises(ConfigError, match=r"^--bands 20: x --rows-per-band 5 > --num-perm 50$"):
        config.validate(cfg, ["dedup"])
    config.validate(cfg, ["extract", "download"])  # other sections are not this stage's business
    cfg = config.Config()
    cfg.score.device = "gpu"  # set in code, past coerce(): validate still sees the choice rule
    with pytest.raises(ConfigError, match="--device gpu: expected auto, cpu, cuda or cuda:N"):
        config.validate(cfg, ["score"])
    cfg = config.Config()
    cfg.score.embedding_dtype = "int8"
    with pytest.raises(ConfigError, match="--embedding-dtype int8: expected one of float32, float16"):
        config.validate(cfg, ["score"])
    cfg = config.Config()
    cfg.recrawl.since = "2024-33"
    with pytest.raises(ConfigError, match="--since 2024-33: expected a crawl id"):
        config.validate(cfg, ["recrawl"])


def test_a_broken_rule_stops_the_cli_before_spark_with_one_line(tmp_path, capsys):
    """main() validates the stage's sections before its session starts: exit 2, one line naming the flag."""
    from crawlpairs.jobs.download import DownloadStage
    from crawlpairs.stage import main

    rc = main(DownloadStage, ["--input", str(tmp_path), "--output", str(tmp_path / "o"), "--quality", "0",
                              "--master", "spark://127.0.0.1:1"])  # a session would hang on this master
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err == ["crawlpairs download: error: --quality 0: expected 1..100"]


def test_light_driver_for_stages_whose_jvm_only_plans():
    """extract and download start their driver JVM with C1-only JIT and the serial GC (their
    work is in Python workers; measured in bench/extract/startup.py and docs/download.md); a
    user's own driver options win, and dedup (JVM-heavy shuffles) keeps Spark's defaults."""
    from crawlpairs.jobs.dedup import DedupStage
    from crawlpairs.jobs.download import DownloadStage
    from crawlpairs.spark import LIGHT_DRIVER_JVM_OPTIONS, light_driver, session_conf

    cfg = Config()
    assert session_conf(light_driver(cfg))["spark.driver.extraJavaOptions"] == LIGHT_DRIVER_JVM_OPTIONS
    assert "spark.driver.extraJavaOptions" not in cfg.spark.conf  # the caller's config is not changed
    cfg.spark.conf["spark.driver.extraJavaOptions"] = "-Xss4m"
    assert session_conf(light_driver(cfg))["spark.driver.extraJavaOptions"] == "-Xss4m"
    assert DownloadStage.light_jvm and not DedupStage.light_jvm


def test_the_process_exit_keeps_its_code_and_every_line_written():
    """exit_process skips interpreter teardown (native threads that abort there, see its docstring):
    the exit code still comes through, and buffered stdout and logging output are not lost."""
    import subprocess
    import sys

    code = ("import logging, sys; from crawlpairs.stage import exit_process; "
            "logging.basicConfig(); print('x' * 100000, end=''); logging.getLogger('t').warning('last line'); "
            "exit_process(3)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 3 and len(proc.stdout) == 100000 and "last line" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "crawlpairs.cli", "nope"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "unknown command 'nope'" in proc.stderr
