"""Fixtures for the download tests: the loopback image server and a fast test config."""

from __future__ import annotations

from pathlib import Path

import pytest

from crawlpairs.config import DownloadConfig
from crawlpairs.udfs.download.optout import url_hashes
from support.download import ImageServer


@pytest.fixture(scope="session")
def image_server(shared_data: Path):
    server = ImageServer(shared_data).start()
    yield server
    server.stop()


@pytest.fixture
def lists(tmp_path: Path, image_server: ImageServer) -> dict[str, str]:
    """A Do-Not-Train list, a URL blocklist and an image hash blocklist, as files."""
    import hashlib

    dnt = tmp_path / "dnt.txt"
    dnt.write_text("# domains and url hashes\ndnt.test\n")
    urls = tmp_path / "url-blocklist.txt"
    urls.write_text(url_hashes("http://hostile.test/url-listed.jpg")["md5"] + "\n")
    hashes = tmp_path / "hash-blocklist.txt"
    hashes.write_text(hashlib.sha1(image_server.listed).hexdigest() + "\n")
    return {"do_not_train": str(dnt), "url_blocklist": str(urls), "hash_blocklist": str(hashes)}


@pytest.fixture
def dl_cfg(image_server: ImageServer, lists: dict[str, str]) -> DownloadConfig:
    """Small timeouts so hostile endpoints end fast; loopback opened for the server's port only."""
    return DownloadConfig(
        connect_timeout=2.0, read_timeout=1.0, total_timeout=2.0, max_retry_after=5.0, backoff_base=0.1,
        per_host_rps=0.0, per_host_concurrency=4, in_flight_per_task=32, max_body_bytes=2_000_000,
        min_image_bytes=0, allow_network=image_server.allow(), resolve_overrides=image_server.overrides(),
        **lists)
