"""The publish stage on the real crawl files: dataset/ with data, laion and open configs and a card.

The root is built by the real stages (extract on every real WARC/WAT in ../shared/data,
then dedup). The peer clients (DuckDB, HF `datasets`) run in their own venvs.
"""

from __future__ import annotations

import math
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from crawlpairs.config import Config
from crawlpairs.jobs.publish import PublishStage
from crawlpairs.stage import UsageError, run_stage
from crawlpairs.udfs.publish import tables as publish
from support.publish import publish_cfg


def files_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def test_data_holds_every_deduped_row_in_files_of_bounded_count(published, root, spark):
    ds, stats = published
    n = spark.read.parquet(str(root / "deduped")).count()
    assert n > 500 and stats.counts["rows_data"] == n
    parts = files_in(ds / "data")
    assert len(parts) == math.ceil(n / 300)  # cut by rows, never one file per tiny partition
    assert all(p.name.startswith("part-") and p.suffix == ".parquet" for p in parts)
    tables = [pq.read_table(p) for p in parts]
    assert sum(t.num_rows for t in tables) == n
    for t in tables:  # every filter column inside each file, not in a folder name
        assert {"language", "url", "text", "uid", "license", "crawl"} <= set(t.schema.names)
    uids = [u for t in tables for u in t.column("uid").to_pylist()]
    assert len(set(uids)) == n and uids == sorted(uids)  # sorted by uid across parts: re-runs are stable


def test_no_bookkeeping_or_litter_inside_the_dataset(published):
    ds, _ = published
    names = {p.relative_to(ds).as_posix() for p in files_in(ds)}
    assert "README.md" in names
    assert all(n == "README.md" or (n.split("/")[0] in ("data", "laion", "open") and n.endswith(".parquet")
                                    and "/" in n and n.count("/") == 1) for n in names), names
    assert not any(n.endswith((".crc", "_SUCCESS", ".json")) for n in names)
    assert (ds.parent / "dataset_meta" / "_stats.json").exists()


def test_laion_folder_has_laions_names_and_types(published, root, spark):
    ds, stats = published
    table = pq.read_table(ds / "laion")  # flat folder of files: what img2dataset globs
    assert table.schema.equals(publish.LAION_SCHEMA)
    assert table.num_rows == stats.counts["rows_data"]
    rows = spark.read.parquet(str(root / "deduped")).select("uid", "url", "text", "language").toPandas()
    got = table.to_pandas().set_index("URL")
    want = rows.set_index("url")
    assert got.index.is_unique and set(got.index) == set(want.index)
    sample = want.index[:50]
    assert (got.loc[sample, "TEXT"] == want.loc[sample, "text"]).all()
    assert got.SAMPLE_ID.is_unique and (got.hash == got.SAMPLE_ID).all()
    assert str(got.WIDTH.dtype).startswith("Int") or got.WIDTH.dtype.kind in "if"


def test_open_subset_is_empty_by_default_on_these_pages_but_still_loads(published):
    ds, stats = published
    # the real pages are CC-BY-SA (the 2014 crawl's wiki pages) or unlicensed: no CC0/PDM row
    assert stats.counts["rows_open"] == 0
    table = pq.read_table(ds / "open")
    assert table.num_rows == 0 and {"license", "page_url", "source_file", "source_offset"} <= set(table.schema.names)


def test_open_subset_with_configured_licenses_carries_provenance(spark, root, tmp_path):
    stats = run_stage(PublishStage, publish_cfg(root, open_licenses=["cc-by-sa"]), spark=spark)
    deduped = spark.read.parquet(str(root / "deduped")).toPandas()
    want = int((deduped.license == "cc-by-sa").sum())
    assert want > 100 and stats.counts["rows_open"] == want
    table = pq.read_table(root / "dataset" / "open").to_pandas()
    assert set(table.license) == {"cc-by-sa"} and len(table) == want
    for col in ("page_url", "crawl", "source_file", "source_offset", "license_url", "fetch_time"):
        assert table[col].notna().all(), col
    assert table.fetch_time.str.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$").all()  # ISO-8601 strings
    run_stage(PublishStage, publish_cfg(root, rows_per_file=300), spark=spark)  # back for the other tests


def test_card_header_is_a_hugging_face_card_with_three_configs(published):
    ds, stats = published
    text = (ds / "README.md").read_text()
    head = yaml.safe_load(text.split("---")[1])
    assert [c["config_name"] for c in head["configs"]] == ["default", "laion", "open"]
    assert head["configs"][0]["default"] is True
    assert head["configs"][1]["data_files"][0]["path"] == "laion/*.parquet"
    assert head["size_categories"] == ["n<1K"] and "en" in head["language"]
    assert "und" not in head["language"]
    body = text.split("---", 2)[2]
    # counted facts, not prose: the funnel numbers of extract and the per-crawl rows
    assert f"{stats.counts['rows_data']:,} image-text pairs" in body
    assert "CC-MAIN-2014-35" in body and "min_text_length" in body
    assert "Herfindahl" in body and "top 10 image domains" in body


def test_missing_source_is_a_one_line_usage_error(spark, tmp_path):
    with pytest.raises(UsageError, match="neither scored/ nor deduped/"):
        run_stage(PublishStage, Config(output=str(tmp_path)), spark=spark)


def test_concentration_of_a_one_domain_dataset_and_of_an_even_one():
    assert publish.concentration({"a": 10}) == {"top10": 1.0, "top100": 1.0, "hhi": 1.0}
    even = publish.concentration({f"d{i}": 1 for i in range(200)})
    assert even["top10"] == pytest.approx(0.05) and even["top100"] == pytest.approx(0.5)
    assert even["hhi"] == pytest.approx(1 / 200)


@pytest.mark.integration
def test_duckdb_and_hf_datasets_read_the_dataset(published):
    from support.peers import peer_python, run_peer

    ds, stats = published
    n = stats.counts["rows_data"]
    duck = peer_python("duckdb", ["duckdb==2.0.1"])
    out = run_peer(duck, "import duckdb,sys; print(duckdb.sql(\"select count(*), count(language), "
                   "count(distinct language) from read_parquet('\" + sys.argv[1] + \"/data/**')\").fetchall()[0])",
                   str(ds))
    count, with_lang, langs = eval(out)  # a tuple printed by the peer
    assert count == n and with_lang > 0 and langs > 1
    hf = peer_python("hf-datasets", ["datasets==5.2.0"])
    code = ("import datasets,sys; d=datasets.load_dataset(sys.argv[1]); l=datasets.load_dataset(sys.argv[1],'laion');"
            "print(d['train'].num_rows, 'language' in d['train'].column_names, l['train'].num_rows,"
            " 'URL' in l['train'].column_names)")
    assert run_peer(hf, code, str(ds)).split() == [str(n), "True", str(n), "True"]


@pytest.mark.integration
def test_img2dataset_downloads_the_laion_folder(spark, shared_data, tmp_path):
    """img2dataset 1.47, in its own venv, reads dataset/laion as LAION's files and fetches every row (loopback)."""
    import pandas as pd

    from crawlpairs.jobs.pipeline import serve_folder
    from crawlpairs.udfs.extract.candidates import make_uid
    from support.peers import peer_python, run_peer

    pictures = sorted(p.name for p in (shared_data / "images" / "skimage").iterdir() if p.suffix in (".png", ".jpg"))
    with serve_folder(shared_data / "images" / "skimage") as base:
        rows = pd.DataFrame({"url": [f"{base}/{name}" for name in pictures],
                             "text": [f"a photo: {name.split('.')[0]}" for name in pictures]})
        rows["uid"] = [make_uid(u, t) for u, t in zip(rows.url, rows.text, strict=True)]
        rows["language"] = "en"
        (tmp_path / "deduped").mkdir()
        rows.to_parquet(tmp_path / "deduped" / "part-0.parquet")
        run_stage(PublishStage, publish_cfg(tmp_path), spark=spark)
        python = peer_python("img2dataset", ["img2dataset==1.47.0"])
        code = ("import sys, img2dataset; img2dataset.download(url_list=sys.argv[1], input_format='parquet', "
                "url_col='URL', caption_col='TEXT', output_format='webdataset', output_folder=sys.argv[2], "
                "processes_count=1, thread_count=4, image_size=64, retries=0, timeout=10, "
                "distributor='multiprocessing', number_sample_per_shard=100)")
        run_peer(python, code, str(tmp_path / "dataset" / "laion"), str(tmp_path / "i2d"),
                 env={"NO_ALBUMENTATIONS_UPDATE": "1"})
    stats = [p for p in (tmp_path / "i2d").glob("*_stats.json")]
    import json

    done = [json.loads(p.read_text()) for p in stats]
    assert sum(d["count"] for d in done) == len(pictures)
    assert sum(d["successes"] for d in done) == len(pictures)
    got = pd.concat([pd.read_parquet(p) for p in (tmp_path / "i2d").glob("*.parquet")])
    assert set(got.caption) == set(rows.text) and (got.status == "success").all()


@pytest.mark.integration
def test_duckdb_and_hf_datasets_read_the_stage_folders(root):
    """candidates/ and deduped/ hold data only: DuckDB's `**` and HF `datasets` read every row and
    nothing else (before the data-only layout, DuckDB failed on the manifests and HF picked its JSON
    builder for candidates/)."""
    import json

    from support.peers import peer_python, run_peer

    expected = {}
    for folder in ("candidates", "deduped"):
        expected[folder] = json.loads((root / f"{folder}_meta" / "_stats.json").read_text())["counts"]["rows_out"]
        names = {p.name for p in (root / folder).rglob("*") if p.is_file()}
        assert names and all(n.endswith(".parquet") and not n.startswith((".", "_")) for n in names), names
    duck = peer_python("duckdb", ["duckdb==2.0.1"])
    code = ("import duckdb,sys; print([duckdb.sql(\"select count(*), count(distinct url) from read_parquet('\""
            " + sys.argv[1] + '/' + f + \"/**', hive_partitioning=true)\").fetchall()[0] for f in ('candidates','deduped')])")
    (cand, cand_urls), (ded, ded_urls) = eval(run_peer(duck, code, str(root)))  # a list printed by the peer
    assert cand == expected["candidates"] and ded == ded_urls == expected["deduped"] and cand_urls <= cand
    hf = peer_python("hf-datasets", ["datasets==5.2.0"])
    code = ("import datasets,sys; d=datasets.load_dataset(sys.argv[1])['train'];"
            "print(d.num_rows, 'url' in d.column_names, 'language' in d.column_names)")
    assert run_peer(hf, code, str(root / "candidates")).split() == [str(expected["candidates"]), "True", "True"]
