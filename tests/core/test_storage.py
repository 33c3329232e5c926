"""crawlpairs.storage against the local disk and a real SeaweedFS S3 server."""

from __future__ import annotations

from pathlib import Path

import pytest

from crawlpairs import storage
from crawlpairs.config import StorageConfig


def test_local_atomic_write_leaves_no_temp_files(tmp_path):
    target = tmp_path / "a" / "b.json"
    storage.write_json(str(target), {"x": 1})
    storage.write_json(str(target), {"x": 2})
    assert storage.read_json(str(target)) == {"x": 2}
    assert [p.name for p in target.parent.iterdir()] == ["b.json"]


def test_join_and_spark_uri():
    assert storage.join("s3://b/root/", "candidates", "_stats.json") == "s3://b/root/candidates/_stats.json"
    assert storage.join("/tmp/x", "") == "/tmp/x"
    assert storage.spark_uri("s3://b/k", StorageConfig()) == "s3a://b/k"
    assert storage.spark_uri("s3://b/k", StorageConfig(spark_s3_scheme="s3")) == "s3://b/k"
    assert storage.spark_uri("/local/p") == "/local/p"


def test_local_copy_of_missing_path_fails_clearly(tmp_path):
    with pytest.raises(FileNotFoundError):
        storage.local_copy(str(tmp_path / "nope.bin"))


@pytest.mark.integration
def test_s3_round_trip_glob_and_local_copy(s3_server, tmp_path):
    st = s3_server.storage
    base = s3_server.uri("storage-test")
    storage.write_bytes(storage.join(base, "x/1.bin"), b"one", st)
    storage.write_bytes(storage.join(base, "x/2.bin"), b"two", st)
    assert storage.exists(storage.join(base, "x/1.bin"), st)
    assert storage.glob(storage.join(base, "x/*.bin"), st) == [
        storage.join(base, "x/1.bin"), storage.join(base, "x/2.bin")]
    with storage.open_uri(storage.join(base, "x/2.bin"), "rb", st) as fh:
        assert fh.read() == b"two"
    local = storage.local_copy(storage.join(base, "x/1.bin"), st, cache_dir=str(tmp_path))
    assert Path(local).read_bytes() == b"one"
    storage.rm(storage.join(base, "x"), st)
    assert storage.glob(storage.join(base, "x/*.bin"), st) == []
