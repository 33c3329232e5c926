"""img2dataset 1.47 itself, in its own venv, resumes and extends on a folder our download stage wrote.

The venv lives in a cache dir (CRAWLPAIRS_PEERS_DIR, default ~/.cache/crawlpairs-peers) and is made
once per machine by the session fixture; the test is skipped only when it cannot be created.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from crawlpairs.config import Config, DownloadConfig
from crawlpairs.jobs.download import DownloadStage
from crawlpairs.stage import run_stage
from support.download import Origin

pytestmark = pytest.mark.integration
VERSION = "1.47.0"

RUN = """
import sys, img2dataset
img2dataset.download(url_list=sys.argv[1], input_format="parquet", url_col="url", caption_col="text",
    output_format="webdataset", output_folder=sys.argv[2], processes_count=1, thread_count=4,
    number_sample_per_shard=int(sys.argv[4]), incremental_mode=sys.argv[3], distributor="multiprocessing",
    retries=0, timeout=5, image_size=64, resize_mode="border", compute_hash="sha256")
"""


@pytest.fixture(scope="session")
def img2dataset_python() -> str:
    from support.peers import peer_python

    return str(peer_python("img2dataset", [f"img2dataset=={VERSION}"]))


def _img2dataset(py: str, urls: Path, folder: Path, mode: str, per_shard: int) -> subprocess.CompletedProcess:
    env = dict(os.environ, NO_ALBUMENTATIONS_UPDATE="1")
    return subprocess.run([py, "-c", RUN, str(urls), str(folder), mode, str(per_shard)], env=env,
                          capture_output=True, text=True, timeout=300)


def test_img2dataset_resumes_and_extends_our_folder(spark, tmp_path: Path, shared_data: Path,
                                                    img2dataset_python: str) -> None:
    with Origin(shared_data, delay=0.0) as origin:
        base = f"http://127.0.0.1:{origin.port}/img"
        df = pd.DataFrame({"uid": [f"{i:032x}" for i in range(30)], "url": [f"{base}/{i}.jpg" for i in range(30)],
                           "text": [f"caption {i}" for i in range(30)]})
        (tmp_path / "in").mkdir()
        df.to_parquet(tmp_path / "in" / "urls.parquet")
        cfg = Config(input=[str(tmp_path / "in")], output=str(tmp_path / "out"))
        cfg.download = DownloadConfig(per_host_rps=0.0, min_image_bytes=0, shard_size=10, partitions=1,
                                      allow_network=[f"127.0.0.1:{origin.port}"])
        run_stage(DownloadStage, cfg, spark=spark)
        images = tmp_path / "out" / "images"
        ours = sorted(p.name for p in images.iterdir())
        assert ours == [f"0000{i}{s}" for i in range(3) for s in (".parquet", ".tar", "_stats.json")]
        served = origin.images()

        # incremental: img2dataset reads our stats files as its own, finds shards 0-2 done, fetches nothing
        res = _img2dataset(img2dataset_python, tmp_path / "in" / "urls.parquet", images, "incremental", 10)
        assert res.returncode == 0, res.stderr[-3000:]
        assert "failed to parse stats file" not in res.stdout + res.stderr
        assert origin.images() == served
        assert sorted(p.name for p in images.iterdir()) == ours

        # extend: new URLs go to the next shard number after ours, in the same folder
        more = pd.DataFrame({"url": [f"{base}/{i}.jpg" for i in range(30, 40)],
                             "text": [f"caption {i}" for i in range(30, 40)]})
        more.to_parquet(tmp_path / "more.parquet")
        res = _img2dataset(img2dataset_python, tmp_path / "more.parquet", images, "extend", 10)
        assert res.returncode == 0, res.stderr[-3000:]
        assert "failed to parse stats file" not in res.stdout + res.stderr
        assert origin.images() == served + 10
        stats = json.loads((images / "00003_stats.json").read_text())
        assert stats["successes"] == 10
