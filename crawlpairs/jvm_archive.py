"""A class-data archive (JDK AppCDS) for the driver JVM a local run launches.

Why: a CLI run in local mode starts a JVM that loads and verifies thousands of Spark classes
before any work; on one core that is most of a job's fixed cost. A dynamic CDS archive of
those classes, mapped at start, cut extract's fixed cost from 8.8 s to 5.8 s and the JVM's
CPU in a 3,000-image download from 14.6 s to ~8 s (docs/extract.md, docs/benchmarks.md).

How: `make install` writes it (`python -m crawlpairs.jvm_archive`); otherwise the first CLI
run in local mode that finds no archive for this java + Spark install takes a lock and asks
its JVM to write one at exit (`-XX:ArchiveClassesAtExit`, into a temp name); when
the stage is done, `finish()` closes the JVM's gateway pipe, waits for the dump and renames
the file into place. Every later run maps it (`-XX:SharedArchiveFile`). The archive is keyed
by the java binary, the Spark jars and the driver class path, so an upgrade builds a new
one; a JVM that cannot use an archive runs without it (-Xshare:auto). Under spark-submit
(EMR, Dataproc) the JVM already runs and nothing here applies. `[spark] class_archive =
false` turns it off; `CRAWLPAIRS_CACHE` moves the folder (default ~/.cache/crawlpairs/jvm).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

QUIET = "-Xlog:cds=off -Xlog:cds+dynamic=off"  # the JVM's own CDS warnings (skipped classes) go nowhere
LOCK_STALE_S = 900.0  # a lock older than this belongs to a run that died: take it over
DUMP_WAIT_S = 180.0  # longest finish() waits for the JVM to write the archive


@dataclass
class _Build:
    tmp: Path
    final: Path
    lock: Path


_PENDING: _Build | None = None
BUILD_AT_EXIT = False  # set by the CLI, whose exit_process calls finish(); other processes only map an archive


def folder() -> Path:
    root = Path(os.environ.get("CRAWLPAIRS_CACHE", Path.home() / ".cache" / "crawlpairs"))
    return root / "jvm"


def _java() -> str | None:
    """The java spark-submit runs: $JAVA_HOME/bin/java, else the one on PATH."""
    java_home = os.environ.get("JAVA_HOME")
    return str(Path(java_home) / "bin" / "java") if java_home else shutil.which("java")


def usable(path: Path) -> bool:
    """Whether a JVM starts with this archive mapped (a truncated one kills the JVM with SIGBUS)."""
    java = _java()
    if java is None:
        return False
    import tempfile

    try:
        with tempfile.TemporaryDirectory() as cwd:  # where a crashing JVM writes hs_err_pid*.log
            done = subprocess.run([java, f"-XX:SharedArchiveFile={path}", "-XX:-CreateCoredumpOnCrash",
                                   *QUIET.split(), "-version"], capture_output=True, timeout=120, cwd=cwd)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def key(extra_class_path: str = "") -> str | None:
    """What the archive depends on: the java binary, the Spark jars, the driver class path.
    None when java or Spark's jars cannot be found (then no archive is used)."""
    java = _java()
    try:
        import pyspark

        jars = Path(os.environ.get("SPARK_HOME") or Path(pyspark.__file__).parent) / "jars"
        java_real = os.path.realpath(java) if java else None
        if java_real is None or not jars.is_dir():
            return None
        st = os.stat(java_real)
        parts = [java_real, str(st.st_size), str(int(st.st_mtime)), pyspark.__version__, str(jars),
                 extra_class_path, *sorted(p.name for p in jars.iterdir())]
    except (ImportError, OSError):
        return None
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:20]


def options(extra_class_path: str = "") -> str:
    """JVM options for the driver this process is about to launch ('' when none apply).

    Maps the archive when there is one; otherwise, if no other run is building it, asks this
    JVM to write it at exit (finish() completes it)."""
    global _PENDING
    k = key(extra_class_path)
    if k is None:
        return ""
    base = folder()
    final = base / f"spark-{k}.jsa"
    if final.is_file():
        return f"-XX:SharedArchiveFile={final} {QUIET}"
    if not BUILD_AT_EXIT:
        return ""
    try:
        base.mkdir(parents=True, exist_ok=True)
        lock = base / f"spark-{k}.lock"
        if lock.exists() and time.time() - lock.stat().st_mtime > LOCK_STALE_S:
            lock.unlink(missing_ok=True)
            for old in base.glob(f"spark-{k}.*.tmp"):
                old.unlink(missing_ok=True)
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
    except OSError:  # another run builds it, or the cache folder is not writable: run without
        return ""
    _PENDING = _Build(base / f"spark-{k}.{os.getpid()}.tmp", final, lock)
    return f"-XX:ArchiveClassesAtExit={_PENDING.tmp} {QUIET}"


def finish() -> None:
    """End a run that is building the archive: let its JVM exit, wait for the dump, put the
    file in place. A no-op for every other run (and never raises: it is an optimisation)."""
    global _PENDING
    build, _PENDING = _PENDING, None
    if build is None:
        return
    try:
        from pyspark import SparkContext

        gateway = SparkContext._gateway
        proc: subprocess.Popen | None = getattr(gateway, "proc", None) if gateway is not None else None
        if proc is not None:
            active = SparkContext._active_spark_context
            if active is not None:
                active.stop()  # first: its accumulator server would report the JVM's exit as an error
            print("crawlpairs: saving the Spark JVM's class archive (once per machine; later runs start faster)",
                  file=sys.stderr, flush=True)
            with contextlib.suppress(Exception):
                proc.stdin.close()  # the gateway exits on EOF, and the JVM writes the archive as it exits
            rc = proc.wait(timeout=DUMP_WAIT_S)
            if rc == 0 and build.tmp.is_file() and build.tmp.stat().st_size > 0 and usable(build.tmp):
                os.replace(build.tmp, build.final)
    except Exception as exc:  # noqa: BLE001 - a missing archive only means slower starts
        log.debug("class archive not saved: %s", exc)
    finally:
        with contextlib.suppress(OSError):
            build.tmp.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            build.lock.unlink(missing_ok=True)


def build() -> Path | None:
    """Write the archive now (`make install` does; `python -m crawlpairs.jvm_archive`): a
    small job that touches what the stages use (Parquet, Arrow UDFs, shuffles, windows)."""
    import tempfile

    from crawlpairs.config import Config
    from crawlpairs.spark import get_spark

    k = key()
    if k is None:
        print("crawlpairs: no java or Spark jars found; no class archive", file=sys.stderr)
        return None
    global BUILD_AT_EXIT
    BUILD_AT_EXIT = True
    (folder() / f"spark-{k}.jsa").unlink(missing_ok=True)
    cfg = Config()
    cfg.spark.master = "local[1]"
    cfg.spark.conf["spark.ui.enabled"] = "false"
    spark = get_spark(cfg)
    if _PENDING is None:
        print("crawlpairs: another run is writing the class archive", file=sys.stderr)
        return None
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    with tempfile.TemporaryDirectory() as tmp:
        df = spark.range(1000).withColumn("host", (F.col("id") % 7).cast("string"))
        df = df.mapInArrow(lambda batches: batches, df.schema).repartition(2, "host")
        df = df.withColumn("rank", F.row_number().over(Window.partitionBy("host").orderBy("id")))
        df.sortWithinPartitions("host").write.parquet(f"{tmp}/p")
        back = spark.read.parquet(f"{tmp}/p")
        back.groupBy("host").agg(F.count("*"), F.max("rank")).collect()
        back.toPandas()
    final = _PENDING.final
    finish()
    return final if final.is_file() else None


if __name__ == "__main__":
    from crawlpairs.jvm_archive import build as build_in_module  # the module get_spark sees, not __main__

    done = build_in_module()
    print(f"crawlpairs: class archive {done}" if done else "crawlpairs: no class archive written", file=sys.stderr)
