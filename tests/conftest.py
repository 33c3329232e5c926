"""Fixtures shared by every test area: real data, real Spark, real S3, a real cluster."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ.setdefault("CRAWLPAIRS_SHARED_DATA", str(REPO.parent / "shared" / "data"))
# The loopback SeaweedFS server's credentials, set before any Spark JVM starts so that
# executors inherit them (on EMR/Dataproc the instance role does this).
from support.servers import ACCESS_KEY, SECRET_KEY  # noqa: E402

os.environ["AWS_ACCESS_KEY_ID"] = ACCESS_KEY
os.environ["AWS_SECRET_ACCESS_KEY"] = SECRET_KEY
os.environ["AWS_DEFAULT_REGION"] = "us-east-1"
os.environ.pop("AWS_PROFILE", None)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Real crawl files, captions, images and models (read-only; see ../shared/data/README.md)."""
    path = Path(os.environ["CRAWLPAIRS_SHARED_DATA"])
    if not (path / "README.md").exists():
        pytest.fail(f"shared test data not found at {path}: set CRAWLPAIRS_SHARED_DATA")
    return path


@pytest.fixture(scope="session")
def lid_model(shared_data: Path) -> str:
    return str(shared_data / "models" / "lid.176.ftz")


@pytest.fixture(scope="session")
def spark(tmp_path_factory):
    """One embedded local[2] session for the whole run (starting one costs ~4 s)."""
    from crawlpairs.config import Config
    from crawlpairs.spark import get_spark

    cfg = Config()
    cfg.spark.master = "local[2]"
    cfg.spark.shuffle_partitions = 4
    cfg.spark.local_dir = str(tmp_path_factory.mktemp("spark-local"))
    cfg.spark.conf.update({"spark.ui.enabled": "false", "spark.driver.memory": "2g"})
    from crawlpairs.spark import s3a_jars

    cfg.spark.jars = s3a_jars()  # on the classpath from the start, so S3 tests can use s3a://
    session = get_spark(cfg)
    yield session
    session.stop()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A real SeaweedFS S3 server on a free loopback port, credentials put in the environment."""
    from support.servers import SeaweedFS

    server = SeaweedFS(tmp_path_factory.mktemp("seaweedfs")).start()
    saved = {k: os.environ.get(k) for k in server.env}
    os.environ.update(server.env)
    yield server
    server.stop()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def standalone_cluster(tmp_path_factory):
    """A real Spark standalone master + 2 workers on 127.0.0.1, stopped by pid."""
    from support.servers import StandaloneSpark

    cluster = StandaloneSpark(tmp_path_factory.mktemp("standalone")).start()
    yield cluster
    cluster.stop()


@pytest.fixture
def s3_spark(spark, s3_server):
    """The shared session pointed at the SeaweedFS server (Hadoop S3A settings set at run time)."""
    from crawlpairs.config import Config
    from crawlpairs.spark import s3a_jars, session_conf

    if not s3a_jars():
        pytest.fail("hadoop-aws jars missing: run `make jars`")
    cfg = Config()
    cfg.storage = s3_server.storage
    hconf = spark.sparkContext._jsc.hadoopConfiguration()
    for key, value in session_conf(cfg).items():
        if key.startswith("spark.hadoop."):
            hconf.set(key[len("spark.hadoop."):], value)
    return spark
