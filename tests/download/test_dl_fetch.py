"""End-to-end fetch tests (no Spark) against the real loopback server and the canary."""

from __future__ import annotations

import hashlib

import pandas as pd
import pytest

from crawlpairs.udfs.download.fetch import error_kind, is_transient, user_agent
from crawlpairs.udfs.download.task import download_frames
from support.download import HOSTILE, ImageServer, canary_urls

pytestmark = pytest.mark.integration


def _run(urls: list[str], cfg) -> pd.DataFrame:
    df = pd.DataFrame({"uid": [f"u{i}" for i in range(len(urls))], "url": urls, "text": ["t"] * len(urls)})
    out = pd.concat(list(download_frames(iter([df[:7], df[7:]]), cfg)), ignore_index=True)
    assert len(out) == len(urls) and set(out.uid) == set(df.uid)
    return out.set_index("url")


def test_warc_images_photos_and_hostile_endpoints(image_server: ImageServer, dl_cfg) -> None:
    expected = dict(HOSTILE) | canary_urls(image_server.canary.port)
    warc = sorted(image_server.warc)
    photos = [f"http://photos.test{p}" for p in image_server.photos]
    before = set(image_server.requests)
    hits_before = dict(image_server.hits)
    out = _run(warc + photos + list(expected), dl_cfg)

    for url in warc + photos:
        assert out.loc[url, "status"] == "success", (url, out.loc[url, "error_message"])
        assert out.loc[url, "width"] == 256 and out.loc[url, "original_width"] > 0
    for url, (status, kind) in expected.items():
        row = out.loc[url]
        assert (row.status, error_kind(row.error_message)) == (status, kind), (url, row.error_message)

    # Nothing refused is stored, and nothing opted-out or listed was even requested.
    bad = out[out.status != "success"]
    assert bad.image.isna().all()
    secret = hashlib.sha256(image_server.secret).hexdigest()
    listed = hashlib.sha256(image_server.listed).hexdigest()
    assert not {secret, listed} & set(out.sha256.dropna())
    requested = set(image_server.requests) - before
    assert ("hostile.test", "/url-listed.jpg") not in requested
    assert not any(h.endswith("dnt.test") for h, _ in requested)
    assert ("norobots.test", "/private/a.jpg") not in requested
    assert image_server.hits["hostile.test/retry-once.jpg"] - hits_before.get("hostile.test/retry-once.jpg", 0) == 2
    robots = {k: v - hits_before.get(k, 0) for k, v in image_server.hits.items() if k.endswith("/robots.txt")}
    assert robots["hostile.test/robots.txt"] == 1  # once per host for ~25 URLs, not per URL
    assert set(robots.values()) == {1}
    assert image_server.user_agents == {user_agent(dl_cfg)}
    assert image_server.canary.connections == 0

    transient = {u for u in expected if is_transient(out.loc[u, "status"], out.loc[u, "error_message"])}
    assert transient == {"http://hostile.test/always-429.jpg", "http://hostile.test/slow.jpg",
                         "http://hostile.test/500.jpg", "http://robots503.test/a.jpg"}


def test_guard_off_only_by_allow_list(image_server: ImageServer, dl_cfg) -> None:
    """Without the allow-list entry even the test server itself is refused."""
    dl_cfg.allow_network = []
    out = _run(["http://photos.test/sklearn/china.jpg", f"http://127.0.0.1:{image_server.port}/x"], dl_cfg)
    assert (out.status == "blocked").all()
    assert out.error_message.str.startswith("ssrf").all()
    assert image_server.canary.connections == 0


def test_per_host_rate_limit_spaces_requests(image_server: ImageServer, dl_cfg) -> None:
    """3 requests/s on one host: 4 image requests + robots.txt + ai.txt need at least 5 gaps of 1/3 s."""
    import time

    dl_cfg.per_host_rps = 3.0
    dl_cfg.per_host_concurrency = 8
    urls = [f"http://photos.test{p}" for p in list(image_server.photos)[:4]]
    t0 = time.monotonic()
    out = _run(urls, dl_cfg)
    assert (out.status == "success").all()
    assert time.monotonic() - t0 >= 5 / 3 - 0.05


def test_dns_rebinding_between_robots_and_image_is_refused(image_server: ImageServer, dl_cfg) -> None:
    """The name answers the allowed server for robots.txt, then the canary: the second answer is refused."""

    class Rebinding:
        def __init__(self) -> None:
            self.calls = 0

        async def resolve(self, host, port=0, family=0):
            self.calls += 1
            target = image_server.port if self.calls == 1 else image_server.canary.port
            return [{"hostname": host, "host": "127.0.0.1", "port": target, "family": 2, "proto": 0, "flags": 0}]

    resolver = Rebinding()
    df = pd.DataFrame({"uid": ["r"], "url": ["http://rebind.example/a.jpg"], "text": ["t"]})
    out = pd.concat(list(download_frames(iter([df]), dl_cfg, base_resolver=resolver)))
    assert resolver.calls == 2
    assert image_server.hits["rebind.example/robots.txt"] == 1
    assert out.status.iloc[0] == "blocked" and out.error_message.iloc[0].startswith("ssrf")
    assert image_server.canary.connections == 0
