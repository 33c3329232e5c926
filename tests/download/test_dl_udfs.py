"""Unit tests of the download udfs: guard, opt-out parsing, robots rules, image processing."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import pytest
from PIL import Image

from crawlpairs.config import DownloadConfig
from crawlpairs.udfs.download.images import ImageReject, phash, process
from crawlpairs.udfs.download.optout import DoNotTrain, HashList, header_optout, url_hashes, x_robots_optout
from crawlpairs.udfs.download.robots import Robots
from crawlpairs.udfs.download.ssrf import GuardedResolver, NetPolicy, SSRFBlocked, forbidden_reason
from support.download import png_bomb

UA = "crawlpairs/0.1 (+https://example.org)"


@pytest.mark.parametrize("ip", [
    "127.0.0.1", "127.8.9.10", "10.0.0.1", "172.16.5.4", "192.168.1.1", "169.254.169.254", "100.64.0.1",
    "0.0.0.0", "224.0.0.1", "240.0.0.1", "255.255.255.255", "198.18.0.1", "::1", "::", "fe80::1", "fc00::1",
    "fd00:ec2::254", "ff02::1", "::ffff:127.0.0.1", "::ffff:169.254.169.254", "2002:a9fe:a9fe::1",
    "64:ff9b::a9fe:a9fe",
])
def test_guard_refuses_non_public(ip: str) -> None:
    assert forbidden_reason(__import__("ipaddress").ip_address(ip)) is not None
    with pytest.raises(SSRFBlocked):
        NetPolicy().check(ip, 80)


@pytest.mark.parametrize("ip", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111"])
def test_guard_allows_public(ip: str) -> None:
    NetPolicy().check(ip, 443)


def test_allow_list_is_exact_on_port() -> None:
    p = NetPolicy(allow=["127.0.0.1:8080", "[::1]:9000", "127.0.0.0/8:7000"])
    p.check("127.0.0.1", 8080)
    p.check("::1", 9000)
    p.check("127.0.0.5", 7000)
    for ip, port in [("127.0.0.1", 8081), ("::1", 8080), ("169.254.169.254", 8080), ("10.0.0.1", 7000)]:
        with pytest.raises(SSRFBlocked):
            p.check(ip, port)


def test_resolver_vets_every_answer_including_changed_ones() -> None:
    """A name that answers an allowed address first and the metadata address next is refused then."""

    class Flipping:
        def __init__(self) -> None:
            self.calls = 0

        async def resolve(self, host, port=0, family=0):
            self.calls += 1
            ip = "127.0.0.1" if self.calls == 1 else "169.254.169.254"
            return [{"hostname": host, "host": ip, "port": port, "family": 2, "proto": 0, "flags": 0}]

    r = GuardedResolver(NetPolicy(allow=["127.0.0.1:80"]), base=Flipping())
    assert asyncio.run(r.resolve("rebind.test", 80))[0]["host"] == "127.0.0.1"
    with pytest.raises(SSRFBlocked):
        asyncio.run(r.resolve("rebind.test", 80))

    class Mixed:
        async def resolve(self, host, port=0, family=0):
            return [{"hostname": host, "host": ip, "port": port, "family": 2, "proto": 0, "flags": 0}
                    for ip in ("93.184.216.34", "10.0.0.1")]

    with pytest.raises(SSRFBlocked):  # one private answer refuses the name
        asyncio.run(GuardedResolver(NetPolicy(), base=Mixed()).resolve("mixed.test", 80))


def test_x_robots_tag_forms() -> None:
    assert x_robots_optout(["noai"], UA) == "noai"
    assert x_robots_optout(["noindex, noimageai"], UA) == "noimageai"
    assert x_robots_optout(["crawlpairs: noai"], UA) == "noai"
    assert x_robots_optout(["googlebot: noindex, crawlpairs: noimageai"], UA) == "noimageai"
    assert x_robots_optout(["otherbot: noai"], UA) is None
    assert x_robots_optout(["noindex"], UA) is None
    assert x_robots_optout(["noindex"], UA, respect_noindex=True) == "noindex"
    assert x_robots_optout(["unavailable_after: 25 Jun 2010 15:00:00 PST"], UA) is None
    assert header_optout([("TDM-Reservation", "1")], UA).startswith("tdm")
    assert header_optout([("tdm-reservation", "0")], UA) is None


def test_lists() -> None:
    url = "http://a.example/x.jpg"
    assert HashList([url_hashes(url)["sha256"]]).match_url(url) == "sha256"
    assert HashList([url_hashes(url)["md5"].upper()]).match_url(url) == "md5"
    assert HashList(["nothex"]).match_url(url) is None
    dnt = DoNotTrain(["example.org", url_hashes(url)["sha1"]])
    assert dnt.match("https://img.example.org/a.png") == "domain example.org"
    assert dnt.match("https://notexample.org/a.png") is None
    assert dnt.match(url) == "url sha1"
    idn = DoNotTrain(["Bücher.de", "*.ＥＸＡＭＰＬＥ.net"])  # compared as requested: IDNA, lower case
    assert idn.match("http://xn--bcher-kva.de/a.jpg") == "domain xn--bcher-kva.de"
    assert idn.match("http://img.example.net/a.jpg") == "domain example.net"


def test_robots_crawl_delay_of_our_group() -> None:
    txt = "User-agent: *\nCrawl-delay: 1\n\nUser-agent: crawlpairs\nCrawl-delay: 2.5\nDisallow: /x/\n"
    assert Robots(txt, UA).crawl_delay == 2.5
    assert Robots(txt, "other/1.0").crawl_delay == 1.0
    assert Robots("User-agent: *\nCrawl-delay: soon\n", UA).crawl_delay is None
    assert Robots("", UA).crawl_delay is None


def test_robots_rfc9309_longest_match_and_own_group() -> None:
    txt = ("User-agent: *\nDisallow: /\n\nUser-agent: crawlpairs\nUser-agent: other\n"
           "Disallow: /private/\nAllow: /private/ok*.jpg$\n")
    r = Robots(txt, UA)
    assert r.allowed("http://h/public/a.jpg")
    assert not r.allowed("http://h/private/a.jpg")
    assert r.allowed("http://h/private/ok-1.jpg")
    assert not r.allowed("http://h/private/ok-1.jpg?x=1")
    assert not Robots(txt, "someone-else/1.0").allowed("http://h/public/a.jpg")
    assert Robots("", UA).allowed("http://h/x")


def _png(w: int, h: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), (200, 30, 40)).save(buf, "PNG")
    return buf.getvalue()


@pytest.mark.parametrize("mode,size", [("no", (300, 200)), ("keep_ratio", (96, 64)),
                                       ("center_crop", (64, 64)), ("border", (64, 64))])
def test_resize_modes(mode: str, size: tuple[int, int]) -> None:
    p = process(_png(300, 200), DownloadConfig(image_size=64, resize_mode=mode, min_image_bytes=0))
    assert (p.width, p.height) == size
    assert (p.original_width, p.original_height) == (300, 200)
    assert Image.open(io.BytesIO(p.data)).size == size
    assert len(p.sha256) == 64 and len(p.phash) == 16


def test_image_rejections(shared_data: Path) -> None:
    o = DownloadConfig(min_image_bytes=0)
    with pytest.raises(ImageReject) as e:
        process(png_bomb(), o)
    assert e.value.kind == "bomb"
    with pytest.raises(ImageReject) as e:
        process(b"<html>" + b"x" * 6000, o)
    assert e.value.kind == "not_image"
    jpg = (shared_data / "images" / "sklearn" / "china.jpg").read_bytes()
    with pytest.raises(ImageReject) as e:
        process(jpg[: len(jpg) // 3], o)
    assert e.value.kind == "decode"
    with pytest.raises(ImageReject) as e:
        process(jpg, DownloadConfig(min_image_bytes=len(jpg) + 1))
    assert e.value.kind == "too_small"
    with pytest.raises(ImageReject) as e:
        process(jpg, DownloadConfig(min_side=1000))
    assert e.value.kind == "too_small"
    ok = process(jpg, DownloadConfig())
    assert (ok.original_width, ok.original_height) == (640, 427)


@pytest.mark.parametrize("name,expected", [  # imagehash 4.3.2: str(imagehash.phash(Image.open(path)))
    ("sklearn/china.jpg", "9db8c2c7445dbb24"), ("skimage/astronaut.png", "c2924c5532bddfc8"),
    ("skimage/coffee.png", "bb8320376c0f3637")])
def test_phash_is_imagehash_phash(shared_data: Path, name: str, expected: str) -> None:
    assert phash(Image.open(shared_data / "images" / name)) == expected
