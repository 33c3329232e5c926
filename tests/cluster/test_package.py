"""cluster/package.py: the artefacts EMR / Dataproc nodes and jobs use, built for real.

The spark-submit test runs the packaged code on a real standalone Spark cluster
(master + 2 workers on loopback). To prove the executors import crawlpairs from the
--py-files zip and not from the developer's editable install, the zip is built from
a copy of the tree whose version is changed to a marker, and the tiny job reports
the version and file every executor imported.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from cluster import package

REPO = Path(__file__).resolve().parents[2]

TINY_JOB = '''
"""A tiny stage: run through crawlpairs' own Stage framework, importing udfs on executors."""
from crawlpairs.stage import Stage, Context, main


def probe(rows):
    import crawlpairs
    from crawlpairs.stats import Stats
    from crawlpairs.udfs.extract import candidates
    stats = Stats()
    for r in rows:
        stats.incr("rows_in")
        yield (r, crawlpairs.__version__, crawlpairs.__file__, candidates.engine(), str(candidates._hot))


class ProbeStage(Stage):
    name = "probe"
    section = None
    output_dir = "probe"
    input_required = False

    def run(self, ctx: Context) -> None:
        rdd = ctx.spark.sparkContext.parallelize(range(40), 4).mapPartitions(probe)
        df = ctx.spark.createDataFrame(rdd, "n long, version string, file string, engine string, hot string")
        df.write.mode("overwrite").parquet(ctx.out)
        ctx.stats.incr("rows_out", df.count())


if __name__ == "__main__":
    raise SystemExit(main(ProbeStage))
'''


def test_requirements_per_role_leave_out_pyspark_and_torch_on_cpu():
    cpu, gpu, driver = (package.requirements(r) for r in ("cpu", "gpu", "driver"))
    names = {role: {package._req_name(s) for s in reqs} for role, reqs in
             (("cpu", cpu), ("gpu", gpu), ("driver", driver))}
    assert "pyspark" not in names["cpu"] | names["gpu"] | names["driver"]
    assert "torch" not in names["cpu"] and "faiss-cpu" not in names["cpu"]
    assert {"torch", "open-clip-torch"} <= names["gpu"]
    assert {"autofaiss", "torch"} <= names["driver"]
    assert {"pyarrow", "fastwarc", "aiohttp"} <= names["cpu"]
    with pytest.raises(ValueError):
        package.requirements("tpu")


def test_build_writes_reproducible_zip_laid_out_like_the_install(tmp_path):
    m1 = package.build(tmp_path / "a")
    m2 = package.build(tmp_path / "b")
    version = m1["version"]
    zip_name = f"crawlpairs-{version}.zip"
    assert m1["files"][zip_name] == m2["files"][zip_name]  # same tree, same bytes
    dest = tmp_path / "a" / version
    names = zipfile.ZipFile(dest / zip_name).namelist()
    assert "crawlpairs/__init__.py" in names and "crawlpairs/jobs/__init__.py" in names
    assert "crawlpairs/udfs/__init__.py" in names and "crawlpairs/stage.py" in names
    assert not any(n.startswith(("jobs/", "udfs/")) for n in names)
    assert "crawlpairs/udfs/extract/candidates.py" in names and "crawlpairs/udfs/download/task.py" in names
    assert any(n.startswith("crawlpairs/models/") and n.endswith(".json") for n in names)  # package data
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    assert f"crawlpairs/udfs/extract/_hotloop{suffix}" in names  # the compiled loop for this platform
    assert not any(n.startswith("crawlpairs/generate/") for n in names)  # a workstation tool
    for job in (REPO / "jobs").glob("*.py"):
        if job.name != "__init__.py":
            assert (dest / "jobs" / job.name).read_bytes() == job.read_bytes()
    assert os.access(dest / "node-setup.sh", os.X_OK)
    manifest = json.loads((dest / "manifest.json").read_text())
    assert set(manifest["files"]) >= {zip_name, "constraints.txt", "requirements-gpu.txt", "gpu-discovery.sh"}
    assert (dest / "constraints.txt").read_text() == (REPO / "constraints.txt").read_text()


def test_node_setup_dry_run_picks_role_and_venv(tmp_path):
    env = {**os.environ, "CRAWLPAIRS_SETUP_DRY_RUN": "1", "CRAWLPAIRS_PLATFORM": "other",
           "CRAWLPAIRS_PREFIX": str(tmp_path / "opt")}
    script = str(REPO / "cluster" / "node-setup.sh")
    out = subprocess.run(["bash", script, "s3://b/crawlpairs/0.1.0/", "gpu"], env=env, capture_output=True,
                         text=True, check=True)
    assert "aws s3 cp --only-show-errors s3://b/crawlpairs/0.1.0/requirements-gpu.txt" in out.stdout
    assert f"-r {tmp_path}/opt/requirements-gpu.txt -c {tmp_path}/opt/constraints.txt" in out.stdout
    out = subprocess.run(["bash", script, "gs://b/c/0.1.0"], env=env, capture_output=True, text=True, check=True)
    assert "role=cpu" in out.stderr and "gcloud storage cp gs://b/c/0.1.0/requirements-cpu.txt" in out.stdout
    bad = subprocess.run(["bash", script, "s3://b/x", "tpu"], env=env, capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown role" in bad.stderr
    none = subprocess.run(["bash", script], env=env, capture_output=True, text=True)
    assert none.returncode == 2 and "usage" in none.stderr


def test_gpu_discovery_script_prints_resource_json(tmp_path):
    """No nvidia-smi: no addresses. With one (a stand-in script: no GPU exists here), its indices,
    stray lines skipped."""
    script = str(REPO / "cluster" / "gpu-discovery.sh")
    bare = tmp_path / "bare"  # a PATH with no nvidia-smi, even where the machine has one
    bare.mkdir()
    out = subprocess.run([shutil.which("bash"), script], capture_output=True, text=True, check=True,
                         env={**os.environ, "PATH": str(bare)})
    assert json.loads(out.stdout) == {"name": "gpu", "addresses": []}
    fake = tmp_path / "bin" / "nvidia-smi"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\nprintf ' 0\\n1\\nNo devices were found\\n'\n")
    fake.chmod(0o755)
    out = subprocess.run(["bash", script], capture_output=True, text=True, check=True,
                         env={**os.environ, "PATH": f"{fake.parent}:/usr/bin:/bin"})
    assert json.loads(out.stdout) == {"name": "gpu", "addresses": ["0", "1"]}


@pytest.mark.integration
def test_upload_to_s3_compatible_store(tmp_path, s3_server):
    manifest = package.build(tmp_path)
    dest = tmp_path / manifest["version"]
    uri = s3_server.uri("artefacts", "crawlpairs", manifest["version"])
    written = package.upload(dest, uri, s3_server.storage)
    from crawlpairs import storage

    assert len(written) == len(manifest["files"]) + 1
    zip_uri = storage.join(uri, manifest["py_files"])
    assert storage.read_bytes(zip_uri, s3_server.storage) == (dest / manifest["py_files"]).read_bytes()


def _marked_tree(root: Path, marker: str) -> Path:
    """A copy of the project sources with a different version, so its code is recognisable."""
    root.mkdir(parents=True)
    for name in ("pyproject.toml", "constraints.txt", "setup.py"):
        shutil.copyfile(REPO / name, root / name)
    for d in ("crawlpairs", "jobs", "udfs"):  # without the built extension: package.py builds it
        shutil.copytree(REPO / d, root / d, ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    init = root / "crawlpairs" / "__init__.py"
    init.write_text(init.read_text().replace('__version__ = "0.1.0"', f'__version__ = "{marker}"'))
    assert marker in init.read_text()
    return root


@pytest.mark.integration
def test_spark_submit_py_files_runs_packaged_code_on_standalone_cluster(tmp_path, standalone_cluster):
    marker = "0.1.0+packaged"
    tree = _marked_tree(tmp_path / "tree", marker)
    (tree / "jobs" / "probe.py").write_text(TINY_JOB)
    manifest = package.build(tmp_path / "dist", repo=tree)
    dest = tmp_path / "dist" / manifest["version"]
    zip_path = dest / manifest["py_files"]
    out = tmp_path / "out"
    import pyspark

    spark_submit = Path(pyspark.__file__).parent / "bin" / "spark-submit"
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "PYSPARK_PYTHON": sys.executable,
           "PYSPARK_DRIVER_PYTHON": sys.executable, "SPARK_HOME": str(Path(pyspark.__file__).parent)}
    cmd = [str(spark_submit), "--master", standalone_cluster.master_url, "--py-files", str(zip_path),
           "--conf", "spark.ui.enabled=false", "--conf", "spark.executor.memory=512m",
           "--conf", "spark.cores.max=2", str(dest / "jobs" / "probe.py"), "--output", str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    import pyarrow.parquet as pq

    table = pq.read_table(out / "probe").to_pandas()
    assert sorted(table["n"]) == list(range(40))
    assert set(table["version"]) == {marker}, "executors imported crawlpairs from somewhere else"
    assert all(manifest["py_files"] in f for f in table["file"])
    # the compiled extract loop, built by package.py and loaded from the zip (not the editable install's)
    assert set(table["engine"]) == {"compiled"}
    assert all("crawlpairs-ext" in h and REPO.as_posix() not in h for h in table["hot"]), set(table["hot"])
    stats = json.loads((out / "probe" / "_stats.json").read_text())
    assert stats["version"] == marker and stats["counts"]["rows_out"] == 40  # the driver ran the zip too


@pytest.mark.integration
@pytest.mark.slow
def test_real_extract_job_from_the_artefact_on_standalone_cluster(tmp_path, standalone_cluster, shared_data):
    """The shipped jobs/extract.py + zip, as an EMR step would run them, on real crawl files."""
    manifest = package.build(tmp_path / "dist")
    dest = tmp_path / "dist" / manifest["version"]
    out = tmp_path / "out"
    import pyspark

    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "PYSPARK_PYTHON": sys.executable,
           "PYSPARK_DRIVER_PYTHON": sys.executable, "SPARK_HOME": str(Path(pyspark.__file__).parent)}
    cmd = [str(Path(pyspark.__file__).parent / "bin" / "spark-submit"), "--master", standalone_cluster.master_url,
           "--py-files", str(dest / manifest["py_files"]), "--conf", "spark.ui.enabled=false",
           "--conf", "spark.executor.memory=512m", str(dest / "jobs" / "extract.py"),
           "--input", str(shared_data / "wat" / "CC-MAIN-20140820021334-00006-ip-10-180-136-8.ec2.internal.warc.wat.gz"),
           str(shared_data / "warc" / "resiliparse-CC-MAIN-2020-34.warc.gz"), "--output", str(out),
           "--lid-model", str(shared_data / "models" / "lid.176.ftz"), "--shuffle-partitions", "2"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=500, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    stats = json.loads((out / "candidates_meta" / "_stats.json").read_text())
    assert stats["counts"]["files_read"] == 2 and stats["counts"]["rows_out"] > 0
    assert stats["extra"]["engine"] == "compiled"  # the C loop shipped in the zip, not the Python one
    import pyarrow.dataset as ds

    rows = ds.dataset(out / "candidates", format="parquet", partitioning="hive",
                      exclude_invalid_files=True).to_table().num_rows
    assert rows == stats["counts"]["rows_out"]


def _engine_from_zip(zip_path: Path, tmpdir: Path) -> str:
    """candidates.engine() in a fresh interpreter that imports crawlpairs from the zip only."""
    code = "from crawlpairs.udfs.extract import candidates as c; print(c.engine(), c._hot)"
    env = {**os.environ, "PYTHONPATH": str(zip_path), "TMPDIR": str(tmpdir)}
    env.pop("CRAWLPAIRS_EXTRACT_ENGINE", None)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120,
                         cwd=tmpdir, check=True).stdout.split()
    assert "crawlpairs-ext" in out[-1] or out[0] == "python", out
    return out[0]


def test_zip_extension_is_loaded_only_from_a_private_folder(tmp_path):
    """The extension is copied out of the zip into `$TMPDIR/crawlpairs-ext-<uid>` (mode 0700):
    a file planted under its name is overwritten before loading, and a folder others can write
    is refused (the Python loop runs instead of code someone else could have put there)."""
    zip_path = tmp_path / "cp.zip"
    names = package.build_zip(zip_path)
    member = next(n for n in names if n.startswith("crawlpairs/udfs/extract/_hotloop"))
    data = zipfile.ZipFile(zip_path).read(member)

    private = tmp_path / "t1"
    folder = private / f"crawlpairs-ext-{os.getuid()}"
    folder.mkdir(parents=True, mode=0o700)
    suffix = member[len("crawlpairs/udfs/extract/_hotloop"):]
    planted = folder / f"{hashlib.sha256(data).hexdigest()[:16]}-_hotloop{suffix}"
    planted.write_bytes(b"not the extension")
    assert _engine_from_zip(zip_path, private) == "compiled"
    assert planted.read_bytes() == data  # replaced by the zip's bytes before it was loaded

    shared = tmp_path / "t2"
    open_folder = shared / f"crawlpairs-ext-{os.getuid()}"
    open_folder.mkdir(parents=True)
    open_folder.chmod(0o777)
    assert _engine_from_zip(zip_path, shared) == "python"
    assert not any(open_folder.iterdir())  # nothing written into a folder others can write
