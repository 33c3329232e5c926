"""The driver JVM's class archive (crawlpairs/jvm_archive.py), with real CLI runs on a real WAT.

The first CLI run with an empty cache writes the archive at exit; the next run's JVM maps it
(seen in /proc/<pid>/maps) and gives the same rows; a run that finds another run's lock
neither waits nor builds; a stale lock is taken over; a truncated archive is never put in place.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pyarrow.parquet as pq
import pytest

from crawlpairs import jvm_archive

pytestmark = pytest.mark.integration

WAT = "wat/CC-MAIN-20140820021334-00006-ip-10-180-136-8.ec2.internal.warc.wat.gz"


def _extract(shared_data: Path, out: Path, cache: Path) -> tuple[subprocess.CompletedProcess, bool]:
    """One CLI run; whether its JVM had an archive of `cache` mapped while it ran."""
    env = dict(os.environ, CRAWLPAIRS_CACHE=str(cache))
    cmd = [sys.executable, "-m", "crawlpairs.cli", "extract", "--input", str(shared_data / WAT),
           "--output", str(out), "--master", "local[1]", "--conf", "spark.ui.enabled=false"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    mapped = False
    while proc.poll() is None:
        if not mapped:
            mapped = _maps_archive(proc.pid, cache)
        time.sleep(0.2)
    stdout, stderr = proc.communicate()
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr), mapped


def _maps_archive(pid: int, cache: Path) -> bool:
    try:
        kids = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return False
    for p in kids:
        try:
            if p.name() == "java":
                maps = Path(f"/proc/{p.pid}/maps").read_text().splitlines()
                if any(line.endswith(".jsa") and str(cache) in line for line in maps):
                    return True
        except (psutil.Error, OSError):
            pass
    return False


def _rows(out: Path) -> list[tuple]:
    table = pq.read_table(out / "candidates")
    return sorted(zip(table.column("uid").to_pylist(), table.column("url").to_pylist(), strict=True))


def test_the_first_run_writes_the_archive_and_the_next_maps_it(shared_data: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first, mapped = _extract(shared_data, tmp_path / "a", cache)
    assert first.returncode == 0, first.stderr[-2000:]
    assert not mapped
    assert "saving the Spark JVM's class archive" in first.stderr
    files = sorted(p.name for p in (cache / "jvm").iterdir())
    assert len(files) == 1 and files[0].endswith(".jsa"), files  # no temp file, no lock left
    second, mapped = _extract(shared_data, tmp_path / "b", cache)
    assert second.returncode == 0, second.stderr[-2000:]
    assert mapped, "the second run's JVM did not map the archive"
    assert "class archive" not in second.stderr
    assert _rows(tmp_path / "a") == _rows(tmp_path / "b") and _rows(tmp_path / "a")

    # a truncated archive crashes a JVM that maps it: finish() never puts one in place
    archive = cache / "jvm" / files[0]
    broken = tmp_path / "broken.jsa"
    with archive.open("rb") as src, broken.open("wb") as dst:
        dst.write(src.read(archive.stat().st_size // 3))
    assert jvm_archive.usable(archive) and not jvm_archive.usable(broken)


def test_a_run_that_finds_another_runs_lock_neither_waits_nor_builds(shared_data: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    k = jvm_archive.key()
    assert k is not None
    (cache / "jvm").mkdir(parents=True)
    lock = cache / "jvm" / f"spark-{k}.lock"
    lock.write_text("12345")
    done, mapped = _extract(shared_data, tmp_path / "a", cache)
    assert done.returncode == 0, done.stderr[-2000:]
    assert not mapped and "class archive" not in done.stderr
    assert sorted(p.name for p in (cache / "jvm").iterdir()) == [lock.name]

    # a lock older than LOCK_STALE_S belongs to a run that died: the next run takes it over
    old = time.time() - jvm_archive.LOCK_STALE_S - 60
    os.utime(lock, (old, old))
    shutil.rmtree(tmp_path / "a")
    done, _ = _extract(shared_data, tmp_path / "a", cache)
    assert done.returncode == 0, done.stderr[-2000:]
    assert [p.suffix for p in (cache / "jvm").iterdir()] == [".jsa"]
