"""Build (and optionally upload) what EMR and Dataproc nodes need to run crawlpairs jobs.

Choice: dependencies are installed once per node by the bootstrap / init action
(`node-setup.sh`), and the project's own code travels with every job as a
`--py-files` zip. Why not one packed venv (venv-pack + `--archives`)?

* the nodes are not alike: CPU nodes (extract, dedup, download) need no torch,
  GPU nodes (score) need the CUDA torch build (~2.5 GB). A packed venv is one
  archive per job, shipped to every executor at every job start; a per-role
  install happens once, when the node joins.
* a packed venv carries a CPython that must match the nodes' glibc and paths;
  building it for Amazon Linux / Debian images from a developer laptop is a trap.
* the code changes far more often than the dependencies: a new zip (~150 KB) per
  release, no cluster rebuild, and every executor runs exactly the driver's code.

pyspark is left out of every requirements file: the cluster's own Spark provides
it, and a PyPI pyspark would not match the cluster's JVM side.

Artefacts, written to `<out>/<version>/` (default `dist/cluster/`):
  crawlpairs-<version>.zip      --py-files: crawlpairs, crawlpairs.jobs, crawlpairs.udfs (not the generator),
                                with the compiled extract loop built here (same Python and platform
                                as the nodes: package on the master node or the nodes' image)
  jobs/<stage>.py               spark-submit entry points
  crawlpairs-<version>-py3-none-any.whl   optional (--wheel): gives nodes the `crawlpairs` CLI
  requirements-{cpu,gpu,driver}.txt, constraints.txt   per-role dependencies
  node-setup.sh, gpu-discovery.sh                      bootstrap / init action, GPU discovery
  manifest.json                 version, sha256 of every file

The zip is reproducible (sorted entries, fixed timestamps): the same tree gives the
same sha256, so a step can name the exact code it ran.

Usage:
  python cluster/package.py [--out dist/cluster] [--wheel] [--upload s3://bucket/crawlpairs]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CLUSTER = Path(__file__).resolve().parent

# Which extras each kind of node installs (see docs/cluster.md):
#   cpu:    extract, dedup and download executors
#   gpu:    score executors (CUDA torch from the `score` extra)
#   driver: the master node, which runs every stage's driver and the index stage
ROLES: dict[str, list[str]] = {
    "cpu": ["download"],
    "gpu": ["download", "score"],
    "driver": ["download", "score", "index"],
}
PROVIDED_BY_CLUSTER = {"pyspark"}  # never pip-installed on a cluster node
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


def _req_name(spec: str) -> str:
    name = spec.split(";")[0]
    for sep in "<>=!~[ @":
        name = name.split(sep)[0]
    return name.strip().lower().replace("_", "-")


def read_project(repo: Path = REPO) -> dict:
    return tomllib.loads((repo / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def requirements(role: str, repo: Path = REPO) -> list[str]:
    """Requirement lines for one node role: core dependencies plus the role's extras."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r} (one of {', '.join(ROLES)})")
    project = read_project(repo)
    extras = project.get("optional-dependencies", {})
    lines: list[str] = []
    for spec in list(project.get("dependencies", [])) + [s for e in ROLES[role] for s in extras.get(e, [])]:
        if _req_name(spec) in PROVIDED_BY_CLUSTER or spec.startswith("crawlpairs"):
            continue
        if spec not in lines:
            lines.append(spec)
    return lines


def package_map(repo: Path = REPO) -> dict[str, Path]:
    """Import package -> source folder, from pyproject's setuptools mapping (jobs/ is crawlpairs.jobs)."""
    tool = tomllib.loads((repo / "pyproject.toml").read_text(encoding="utf-8")).get("tool", {})
    setup = tool.get("setuptools", {})
    dirs = setup.get("package-dir", {})
    return {pkg: repo / _package_dir(pkg, dirs) for pkg in setup.get("packages", [])}


def _package_dir(pkg: str, dirs: dict[str, str]) -> str:
    """As setuptools resolves it: the nearest mapped parent plus the rest (crawlpairs.udfs.extract -> udfs/extract)."""
    parts = pkg.split(".")
    for n in range(len(parts), 0, -1):
        parent = ".".join(parts[:n])
        if parent in dirs:
            return "/".join([dirs[parent], *parts[n:]])
    return pkg.replace(".", "/")


# Not shipped to cluster nodes: the synthetic-crawl generator is for the demo, tests and
# benchmarks (its word lists alone are ~1 MB); `crawlpairs generate` runs on a workstation.
NOT_ON_NODES = {"crawlpairs.generate"}


def package_data(repo: Path = REPO) -> dict[str, list[str]]:
    """Package -> glob patterns of its data files (pyproject's [tool.setuptools.package-data])."""
    tool = tomllib.loads((repo / "pyproject.toml").read_text(encoding="utf-8")).get("tool", {})
    return tool.get("setuptools", {}).get("package-data", {})


EXTENSIONS = {"crawlpairs.udfs.extract._hotloop": "udfs/extract/_hotloop.c"}  # as setup.py declares them


def compiled_extensions(repo: Path = REPO) -> dict[str, Path]:
    """Zip member -> built extension file, for this machine's Python and platform.

    The one `pip install -e .` built in the source tree is taken when it is newer than its
    source; otherwise setup.py builds it into a temp folder. No compiler: none, with a warning
    (the nodes then run the Python loop; `_stats.json` `extra.engine` says so)."""
    import importlib.machinery
    import tempfile

    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]  # e.g. .cpython-311-x86_64-linux-gnu.so
    found: dict[str, Path] = {}
    missing = []
    for module, source in EXTENSIONS.items():
        built = (repo / source).with_name(module.rsplit(".", 1)[1] + suffix)
        if built.exists() and built.stat().st_mtime >= (repo / source).stat().st_mtime:
            found[module.replace(".", "/") + suffix] = built
        else:
            missing.append(module)
    if missing:
        out = Path(tempfile.mkdtemp(prefix="crawlpairs-ext-"))
        cmd = [sys.executable, "setup.py", "-q", "build_ext", "--build-lib", str(out / "lib"),
               "--build-temp", str(out / "tmp")]
        proc = subprocess.run(cmd, cwd=repo, capture_output=True, text=True)
        for module in missing:
            built = out / "lib" / (module.replace(".", "/") + suffix)
            if proc.returncode == 0 and built.exists():
                found[module.replace(".", "/") + suffix] = built
            else:
                print(f"package.py: warning: {module} not built (no C compiler?); nodes will run the "
                      f"pure-Python loop", file=sys.stderr)
    return found


def build_zip(target: Path, repo: Path = REPO) -> list[str]:
    """The --py-files zip, laid out as the installed package (code, package data and the compiled
    extract loop for this machine's platform, which candidates.py loads from the zip); returns its
    member names."""
    members: dict[str, Path] = dict(compiled_extensions(repo))
    data = package_data(repo)
    for pkg, src in package_map(repo).items():
        if pkg in NOT_ON_NODES:
            continue
        prefix = pkg.replace(".", "/")
        for path in sorted(src.glob("*.py")):
            members[f"{prefix}/{path.name}"] = path
        for pattern in data.get(pkg, []):
            for path in sorted(src.glob(pattern)):
                members[f"{prefix}/{path.relative_to(src).as_posix()}"] = path
    if "crawlpairs/__init__.py" not in members:
        raise SystemExit(f"package.py: no crawlpairs/__init__.py under {repo}")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".zip.tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name in sorted(members):
            info = zipfile.ZipInfo(name, date_time=ZIP_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, members[name].read_bytes())
    tmp.replace(target)
    return sorted(members)


def build_wheel(out: Path, repo: Path = REPO) -> Path:
    """The project wheel (no dependencies), for the `crawlpairs` console script on nodes."""
    out.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(repo)]
    subprocess.run(cmd, check=True, cwd=repo)
    wheels = sorted(out.glob("crawlpairs-*.whl"))
    if not wheels:
        raise SystemExit("package.py: pip wheel wrote no crawlpairs wheel")
    return wheels[-1]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build(out: Path, repo: Path = REPO, wheel: bool = False) -> dict:
    """Write every artefact under `out/<version>/`; returns the manifest."""
    version = read_project(repo)["version"]
    dest = out / version
    if dest.exists():
        shutil.rmtree(dest)
    (dest / "jobs").mkdir(parents=True)
    build_zip(dest / f"crawlpairs-{version}.zip", repo)
    for path in sorted((repo / "jobs").glob("*.py")):
        if path.name != "__init__.py":
            shutil.copyfile(path, dest / "jobs" / path.name)
    for role in ROLES:
        (dest / f"requirements-{role}.txt").write_text("\n".join(requirements(role, repo)) + "\n")
    shutil.copyfile(repo / "constraints.txt", dest / "constraints.txt")
    for script in ("node-setup.sh", "gpu-discovery.sh"):
        shutil.copyfile(CLUSTER / script, dest / script)
        (dest / script).chmod(0o755)
    if wheel:
        build_wheel(dest, repo)
    files = sorted(p for p in dest.rglob("*") if p.is_file() and p.name != "manifest.json")
    manifest = {
        "name": "crawlpairs",
        "version": version,
        "py_files": f"crawlpairs-{version}.zip",
        "roles": ROLES,
        "files": {str(p.relative_to(dest)): sha256(p) for p in files},
    }
    (dest / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def upload(local: Path, uri: str, storage=None) -> list[str]:
    """Copy an artefact folder to s3:// / gs:// / a path (crawlpairs.storage, so endpoints apply)."""
    from crawlpairs.storage import join, write_bytes

    written = []
    for path in sorted(p for p in local.rglob("*") if p.is_file()):
        target = join(uri, str(path.relative_to(local)))
        write_bytes(target, path.read_bytes(), storage)
        written.append(target)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cluster/package.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(REPO / "dist" / "cluster"), help="local folder (default dist/cluster)")
    parser.add_argument("--wheel", action="store_true", help="also build the project wheel (pip wheel --no-deps)")
    parser.add_argument("--upload", metavar="URI", help="copy <out>/<version>/ to URI/<version>/ (s3://, gs://)")
    parser.add_argument("--s3-endpoint", help="S3-compatible endpoint for --upload (default: AWS)")
    args = parser.parse_args(argv)
    manifest = build(Path(args.out), wheel=args.wheel)
    dest = Path(args.out) / manifest["version"]
    print(f"built {dest} ({len(manifest['files'])} files, py-files sha256 "
          f"{manifest['files'][manifest['py_files']][:12]})")
    if args.upload:
        from crawlpairs.config import StorageConfig

        from_uri = args.upload.rstrip("/") + "/" + manifest["version"]
        written = upload(dest, from_uri, StorageConfig(s3_endpoint=args.s3_endpoint))
        print(f"uploaded {len(written)} files to {from_uri}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
