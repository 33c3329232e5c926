"""The SparkSession, built the same way for the CLI, spark-submit and tests.

Under spark-submit the master and resources come from spark-submit; from the CLI
they come from `[spark]` in the config, with local[*] as the default. S3A settings
are added only when an S3 endpoint is configured and Spark reaches S3 through
s3a:// (EMR's EMRFS and Dataproc's GCS connector need nothing).
"""

from __future__ import annotations

import dataclasses
import glob
import os
import sys
from pathlib import Path

from crawlpairs.config import Config, StorageConfig

# Hadoop 3.4+ defaults are duration strings ("60s") that the hadoop-aws 3.3 jar,
# the one available offline, cannot parse: plain numbers work with both (the
# connection timeouts come from `io_timeout`, in s3a_retries).
S3A_NUMERIC_DEFAULTS = {
    "fs.s3a.threads.keepalivetime": "60",
    "fs.s3a.connection.ttl": "300000",
    "fs.s3a.multipart.purge.age": "86400",
    "fs.s3a.assumed.role.session.duration": "1800",
}


# `fs.file.impl = RawLocalFileSystem` (below: no `.crc` beside local files) breaks S3A's default
# `disk` upload buffer, which asks Hadoop for the checksummed LocalFileSystem: every s3a:// write
# failed with a ClassCastException (tests/dedup/test_dedup_s3_faults.py). So upload blocks are
# buffered off-heap, in 16 MiB parts (a whole part is held per open file). Set whether or not an
# endpoint is configured: s3a:// on AWS itself needs it too.
S3A_UPLOAD_BUFFER = {
    "spark.hadoop.fs.s3a.fast.upload.buffer": "bytebuffer",
    "spark.hadoop.fs.s3a.multipart.size": str(16 << 20),
}


def s3a_retries(st: StorageConfig) -> dict[str, str]:
    """S3A's retries from the settings every other read and upload follows (`io_retries`,
    `io_backoff_base`, `io_timeout`), not Hadoop's defaults (5 SDK attempts inside each of 7,
    or 20 throttled, S3A retries: a persistent 503 took minutes to give up).

    Two layers retry, both `io_retries` times: the AWS SDK resends a failed request (the only
    layer that can resend an upload's body: S3A's own retry of a PUT finds its off-heap block
    already consumed and fails, tests/dedup/test_dedup_s3_faults.py), and S3A retries a failed
    operation (a copy, listing or delete) after `io_backoff_base`. `--conf spark.hadoop.fs.s3a.*`
    still wins."""
    h = "spark.hadoop.fs.s3a."
    interval = f"{max(1, round(st.io_backoff_base * 1000))}ms"
    timeout = str(max(1, round(st.io_timeout * 1000)))  # plain milliseconds: hadoop-aws 3.3 reads numbers only
    return {h + "attempts.maximum": str(st.io_retries), h + "retry.limit": str(st.io_retries),
            h + "retry.throttle.limit": str(st.io_retries), h + "retry.interval": interval,
            h + "retry.throttle.interval": interval, h + "connection.establish.timeout": timeout,
            h + "connection.timeout": timeout}


def s3a_jars() -> list[str]:
    """hadoop-aws + AWS SDK jars installed by `make jars` (or named by CRAWLPAIRS_JARS_DIR)."""
    dirs = [os.environ.get("CRAWLPAIRS_JARS_DIR", ""), str(Path(sys.prefix) / "share" / "crawlpairs" / "jars")]
    for d in dirs:
        if d:
            jars = sorted(glob.glob(os.path.join(d, "*.jar")))
            if jars:
                return jars
    return []


def _is_loopback(master: str) -> bool:
    return master.startswith("local") or "127.0.0.1" in master or "localhost" in master


def session_conf(cfg: Config) -> dict[str, str]:
    """Every setting the builder applies, as a plain dict (tested without a JVM)."""
    conf: dict[str, str] = {
        "spark.app.name": cfg.spark.app_name,
        "spark.sql.sources.partitionOverwriteMode": "dynamic",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.parquet.compression.codec": "zstd",
        "spark.ui.showConsoleProgress": "false",
        # data folders hold data only: no `_SUCCESS` marker (our commits are manifests and stats
        # in `<folder>_meta/`) and no `.crc` sidecars beside local files (DuckDB's `**`, HF datasets
        # and img2dataset glob them); S3/HDFS outputs are not affected by the second.
        "spark.hadoop.mapreduce.fileoutputcommitter.marksuccessfuljobs": "false",
        "spark.hadoop.fs.file.impl": "org.apache.hadoop.fs.RawLocalFileSystem",
        **S3A_UPLOAD_BUFFER,
        **s3a_retries(cfg.storage),
    }
    if cfg.spark.shuffle_partitions:
        conf["spark.sql.shuffle.partitions"] = str(cfg.spark.shuffle_partitions)
    if cfg.spark.local_dir:
        conf["spark.local.dir"] = cfg.spark.local_dir
    jars = list(cfg.spark.jars)
    st = cfg.storage
    if st.s3_endpoint and st.spark_s3_scheme == "s3a":
        jars = jars or s3a_jars()
        h = "spark.hadoop."
        conf[h + "fs.s3a.endpoint"] = st.s3_endpoint
        conf[h + "fs.s3a.path.style.access"] = "true"
        conf[h + "fs.s3a.connection.ssl.enabled"] = str(st.s3_endpoint.startswith("https")).lower()
        if st.s3_region:
            conf[h + "fs.s3a.endpoint.region"] = st.s3_region
        if os.environ.get("AWS_ACCESS_KEY_ID"):
            conf[h + "fs.s3a.aws.credentials.provider"] = "org.apache.hadoop.fs.s3a.SimpleAWSCredentialsProvider"
            conf[h + "fs.s3a.access.key"] = os.environ["AWS_ACCESS_KEY_ID"]
            conf[h + "fs.s3a.secret.key"] = os.environ.get("AWS_SECRET_ACCESS_KEY", "")
        for key, value in S3A_NUMERIC_DEFAULTS.items():
            conf[h + key] = value
    if jars:
        conf["spark.jars"] = ",".join(jars)
    conf.update(cfg.spark.conf)
    return conf


LIGHT_DRIVER_JVM_OPTIONS = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"


def light_driver(cfg: Config) -> Config:
    """The config for a session whose driver JVM only plans, schedules and collects small rows.

    extract and download keep the work in Python workers (records, images), so C1-only JIT and
    the serial GC cost nothing later and save JIT/GC threads at start (extract: see
    bench/extract/startup.py; download of 3,000 images on one pinned core, one A/B run with
    event logs: 74 s instead of 99, docs/benchmarks.md). Only a JVM this process launches takes
    it (local mode: the driver is the executor); under spark-submit the JVM already runs. A
    user's own setting wins.
    """
    key = "spark.driver.extraJavaOptions"
    if key in cfg.spark.conf:
        return cfg
    spark = dataclasses.replace(cfg.spark, conf={**cfg.spark.conf, key: LIGHT_DRIVER_JVM_OPTIONS})
    return dataclasses.replace(cfg, spark=spark)


def get_spark(cfg: Config):
    """The active session if spark-submit made one, else a new one from the config."""
    from pyspark import SparkContext
    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    master = cfg.spark.master or os.environ.get("MASTER")
    if master and _is_loopback(master):
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    builder = SparkSession.builder
    if master:
        builder = builder.master(master)
    elif not under_spark_submit():
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        builder = builder.master("local[*]")
    conf = session_conf(cfg)
    if cfg.spark.class_archive and not under_spark_submit() and SparkContext._active_spark_context is None:
        from crawlpairs import jvm_archive  # the JVM this process launches maps (or writes) a class archive

        extra = jvm_archive.options(conf.get("spark.driver.extraClassPath", ""))
        if extra:
            key = "spark.driver.extraJavaOptions"
            conf[key] = f"{conf.get(key, '')} {extra}".strip()
    for key, value in conf.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(os.environ.get("CRAWLPAIRS_SPARK_LOG_LEVEL", "WARN"))
    return spark


def under_spark_submit() -> bool:
    """spark-submit starts the Python driver from its JVM and hands it the gateway port."""
    return "PYSPARK_GATEWAY_PORT" in os.environ
