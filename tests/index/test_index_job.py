"""`crawlpairs index` / `crawlpairs query` through the framework, on the shared local Spark session."""

from __future__ import annotations

import json

import numpy as np
import pytest

from crawlpairs import storage
from crawlpairs.config import Config, IndexConfig
from crawlpairs.jobs.index import IndexStage
from crawlpairs.jobs.query import QueryStage
from crawlpairs.stage import main, run_stage
from crawlpairs.udfs.index import knn


def test_cli_index_then_query_returns_the_row_itself(tmp_path, make_embeddings, spark, capsys):
    vecs = make_embeddings(tmp_path / "emb", [120, 80], dim=16)  # both kinds: --kinds defaults to both
    out = tmp_path / "out" / "index"
    rc = main(IndexStage, ["--input", str(tmp_path / "emb"), "--output", str(out),
                           "--index-key", "HNSW16", "--index-param", "efSearch=64", "--max-index-memory-usage", "1G"])
    assert rc == 0
    stats = json.loads((out / "_stats.json").read_text())
    assert stats["counts"]["rows_out"] == 200 and stats["counts"]["parts_used"] == 2
    assert stats["config"]["index"]["max_index_memory_usage"] == "1G"
    assert (out / "image.index").is_file() and (out / "text.index").is_file()
    np.save(tmp_path / "q.npy", vecs["img_emb"][150:151])
    capsys.readouterr()
    assert main(QueryStage, ["--index", str(out), "--vector", str(tmp_path / "q.npy"), "-k", "5"]) == 0
    hits = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(hits) == 5 and hits[0]["id"] == 150 and hits[0]["text"] == "caption 150"
    assert hits[0]["url"] == "https://img.example/150.jpg" and hits[0]["score"] == pytest.approx(1.0, abs=1e-4)


def test_cli_errors_are_one_line(tmp_path, make_embeddings, capsys):
    assert main(QueryStage, ["--index", str(tmp_path / "missing"), "--vector", "1,2"]) == 2
    assert "--index" in capsys.readouterr().err
    make_embeddings(tmp_path / "emb", [20], dim=4, kinds=("img_emb",))
    knn.build(str(tmp_path / "emb"), str(tmp_path / "index"), IndexConfig(kinds=["img_emb"], index_key="Flat"))
    assert main(QueryStage, ["--index", str(tmp_path / "index")]) == 2
    assert "give exactly one" in capsys.readouterr().err
    assert main(QueryStage, ["--index", str(tmp_path / "index"), "--vector", "1,2,x"]) == 2
    err = capsys.readouterr().err
    assert "--vector" in err and len(err.strip().splitlines()) == 1
    assert main(QueryStage, ["--index", str(tmp_path / "index"), "--vector", "1,0,0,0", "--table", "-k", "2"]) == 0
    assert "caption" in capsys.readouterr().out


def test_distributed_autofaiss_keeps_several_indices(tmp_path, make_embeddings, spark):
    """autofaiss's pyspark mode on the session: 2 indices, ids global, every row finds itself."""
    vecs = make_embeddings(tmp_path / "emb", [150, 150, 100], dim=16, kinds=("img_emb",))
    cfg = Config(input=[str(tmp_path / "emb")], output=str(tmp_path / "index"))
    cfg.index = IndexConfig(kinds=["img_emb"], distributed=True, nb_indices_to_keep=2, index_key="IVF4,Flat",
                            index_param="nprobe=4", tmp_dir=str(tmp_path / "scratch"))
    stats = run_stage(IndexStage, cfg, spark=spark)
    assert stats.counts["shards_img_emb"] == 2
    info = json.loads((tmp_path / "index" / knn.INFO_NAME).read_text())
    files = sorted(s["file"] for s in info["kinds"]["img_emb"]["shards"])
    assert files == ["image.index0", "image.index1"] and not info["clip_back_loadable"]
    assert json.loads((tmp_path / "index" / "image.json1").read_text())["index_path"] == "image.index1"
    idx = knn.KnnIndex(str(tmp_path / "index"))
    assert sum(index.ntotal for index, _ in idx.shards) == 400
    _, ids = idx.search(vecs["img_emb"], k=3)
    assert (ids[:, 0] == np.arange(400)).all()


def test_partition_shards_built_as_spark_tasks(tmp_path, make_embeddings, spark):
    vecs = make_embeddings(tmp_path / "emb", [90, 60, 50], dim=16, kinds=("img_emb", "text_emb"))
    cfg = Config(input=[str(tmp_path / "emb")], output=str(tmp_path / "index"))
    cfg.index = IndexConfig(kinds=["img_emb", "text_emb"], distributed=True, shard_by="partition",
                            index_key="HNSW16", index_param="efSearch=64")
    run_stage(IndexStage, cfg, spark=spark)
    for kind in ("img_emb", "text_emb"):
        idx = knn.KnnIndex(str(tmp_path / "index"), kind=kind)
        assert [off for _, off in idx.shards] == [0, 90, 150]
        _, ids = idx.search(vecs[kind], k=1)
        assert (ids[:, 0] == np.arange(200)).all()


@pytest.mark.integration
def test_index_on_s3_in_and_out(tmp_path, make_embeddings, s3_server):
    """Embeddings read from and index written to a real S3 server (SeaweedFS); query fetches it once."""
    local = tmp_path / "emb"
    vecs = make_embeddings(local, [70, 50], dim=16, kinds=("img_emb",))
    fs, _ = storage.filesystem(s3_server.uri("x"), s3_server.storage)
    src = s3_server.uri("knn-test", "embeddings")
    fs.put(str(local) + "/", src.replace("s3://", "") + "/", recursive=True)
    out = s3_server.uri("knn-test", "index")
    cfg = IndexConfig(kinds=["img_emb"], index_key="HNSW16", index_param="efSearch=64")
    info = knn.build(src, out, cfg, storage=s3_server.storage)
    assert info["count"] == 120
    assert storage.exists(out + "/image.index", s3_server.storage)
    assert storage.read_json(out + "/image.json", s3_server.storage)["index_path"] == "image.index"
    assert storage.exists(out + "/metadata/part-00001.parquet", s3_server.storage)
    idx = knn.KnnIndex(out, storage=s3_server.storage, cache_dir=str(tmp_path / "cache"))
    assert idx.local.startswith(str(tmp_path / "cache"))
    hits = idx.query_vectors(vecs["img_emb"][[3, 100]], k=2)
    assert [h[0]["id"] for h in hits] == [3, 100] and hits[1][0]["text"] == "caption 100"


def test_input_may_be_the_run_root_and_query_is_importable_from_the_job(tmp_path, make_embeddings, spark):
    vecs = make_embeddings(tmp_path / "out" / "embeddings", [40], dim=8)
    cfg = Config(input=[str(tmp_path / "out")], output=str(tmp_path / "out" / "index"))
    cfg.index = IndexConfig(index_key="Flat")
    stats = run_stage(IndexStage, cfg, spark=spark)
    assert stats.counts["rows_out"] == 40
    from crawlpairs.jobs.query import query  # what the pipeline's demo and notebooks call

    assert query(str(tmp_path / "out" / "index"), vector=vecs["img_emb"][9], k=1)[0]["text"] == "caption 9"
