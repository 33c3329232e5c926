"""SSRF: no spelling of a forbidden address may reach it, for images, redirects and robots.txt.

A canary listens on one loopback port (IPv4 and IPv6) that is not on the allow-list; the
allowed test server is on another. Every spelling of 127.0.0.1 / ::1 / 0.0.0.0 a browser,
yarl or the OS would accept (Unicode digits, IDNA, every IPv4 number form, IPv6 forms,
trailing dots, userinfo, percent-encoding, `localhost.`) plus seeded random mixes of them is
fetched five ways: as the image with robots.txt on (the robots.txt request comes first), as
the image with robots.txt off, as the target of a redirect from the allowed server, and as
the target of an allowed host's robots.txt or ai.txt redirect. The canary must see zero
connections.
"""

from __future__ import annotations

import random
import select
import socket
import threading
import unicodedata
from urllib.parse import quote

import ada_url
import pandas as pd
import pytest

from crawlpairs.udfs.download.fetch import error_kind
from crawlpairs.udfs.download.task import download_frames
from support.download import ImageServer

pytestmark = pytest.mark.integration


class Canary:
    """Counts TCP connections on 127.0.0.1:P and [::1]:P (one port for both)."""

    def __init__(self) -> None:
        self.connections = 0
        self.socks: list[socket.socket] = []
        for _ in range(20):  # find a port free on both families
            v4 = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            v4.bind(("127.0.0.1", 0))
            self.port = v4.getsockname()[1]
            v6 = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
            v6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                v6.bind(("::1", self.port))
            except OSError:
                v4.close()
                v6.close()
                continue
            self.socks = [v4, v6]
            break
        for s in self.socks:
            s.listen(64)
        self.stopped = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopped:
            ready, _, _ = select.select(self.socks, [], [], 0.1)
            for s in ready:
                conn, _ = s.accept()
                self.connections += 1
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nSECRET")
                conn.close()

    def close(self) -> None:
        self.stopped = True
        self.thread.join(5)
        for s in self.socks:
            s.close()


def _digit_forms() -> dict[str, list[str]]:
    """ASCII digit -> every other code point that NFKC (and so IDNA) maps to it."""
    forms: dict[str, list[str]] = {str(d): [] for d in range(10)}
    for cp in range(0x80, 0x30000):
        n = unicodedata.normalize("NFKC", chr(cp))
        if len(n) == 1 and n in forms:
            forms[n].append(chr(cp))
    return forms


DOTS = [".", "\u3002", "\uff0e", "\uff61", "\ufe52", "\u2024"]  # ideographic / fullwidth / small stops


def host_spellings(seed: int = 7, random_count: int = 120) -> list[str]:
    """Hosts that denote (or may be taken for) a loopback / unspecified address."""
    digits = _digit_forms()
    fixed = [
        "127.0.0.1", "127.1", "127.0.1", "2130706433", "0x7f000001", "0x7f.1", "0x7f.0.0.1", "0X7F.0x0.0X0.0x1",
        "0177.0.0.1", "0177.1", "017700000001", "00000177.0.0.01", "0x7f.0.0.01", "127.0x0.000.1",
        "127.0.0.1.", "127.1.", "0x7f.1.", "localhost", "localhost.", "LOCALHOST", "LocalHost.",
        "\uff4c\uff4f\uff43\uff41\uff4c\uff48\uff4f\uff53\uff54",  # fullwidth "localhost"
        "0", "0.0.0.0", "0x0", "00", "0.0", "0.0.0.0.",
        "[::1]", "[0:0::1]", "[0000:0000:0000:0000:0000:0000:0000:0001]", "[::0:1]", "[0::01]",
        "[::ffff:127.0.0.1]", "[::ffff:7f00:1]", "[0:0:0:0:0:ffff:127.0.0.1]", "[::FFFF:7F00:0001]",
        "[::ffff:0.0.0.0]", "[::]", "[::127.0.0.1]", "[64:ff9b::127.0.0.1]", "[2002:7f00:1::]",
        "%31%32%37.0.0.1", "%31%32%37%2e%30%2e%30%2e%31", "127%2E0%2E0%2E1", "%6c%6f%63%61%6c%68%6f%73%74",
        quote("\uff11\uff12\uff17.\uff10.\uff10.\uff11"),  # percent-encoded fullwidth digits
        "\uff11\uff12\uff17.\uff10.\uff10.\uff11", "\u2460\u2461\u2466.0.0.1", "\u2460\u2461\u2466\u3002\u24ea\u3002\u24ea\u3002\u2460",
        "\u246b\u2466.0.0.1",  # circled twelve + circled seven
        "\u0661\u0662\u0667.\u0660.\u0660.\u0661", "\u0967\u0968\u096d.0.0.1",  # Arabic-Indic, Devanagari (not mapped)
        "xn--127-0.0.0.1", "xn--0.0.0.1", "127.0.0.1\u00ad", "1\u200b27.0.0.1", "127.0.0.1\u3002",
    ]
    out = list(fixed)
    for i in range(len(digits["7"])):  # every Unicode digit form, one whole address each
        out.append(".".join("".join(digits[c][i] for c in part) for part in ("127", "0", "0", "1")))
    rng = random.Random(seed)

    def number(value: int) -> str:
        form = rng.choice(["dec", "hex", "oct"])
        s = str(value) if form == "dec" else (rng.choice(["0x", "0X"]) + format(value, "x")) if form == "hex" \
            else "0" + format(value, "o")
        return "".join(rng.choice(digits[c]) if c.isdigit() and rng.random() < 0.4 else c for c in s)

    for _ in range(random_count):
        parts = rng.choice([[127, 0, 0, 1], [127, 1], [127, 0, 1], [2130706433], [0], [0, 0, 0, 0]])
        host = "".join(number(p) + (rng.choice(DOTS) if k < len(parts) - 1 else "") for k, p in enumerate(parts))
        if rng.random() < 0.2:
            host += rng.choice(DOTS)
        if rng.random() < 0.2:
            host = "".join(f"%{ord(c):02X}" if c.isascii() and rng.random() < 0.5 else c for c in host)
        out.append(host)
    return list(dict.fromkeys(out))


def authorities(port: int, allowed_port: int) -> list[str]:
    """`host:port` spellings of the canary, plus userinfo / backslash tricks around an allowed host."""
    out = [f"{h}:{port}" for h in host_spellings()]
    out += [f"photos.test:{allowed_port}@127.0.0.1:{port}", f"user:pw@[::1]:{port}", f"@127.0.0.1:{port}",
            f"127.0.0.1:{port}\\@photos.test", f"127.0.0.1:{port}#@photos.test", f"127.0.0.1:{port}?@photos.test",
            f"127.0.0.1:0{port}", f"127.0.0.1:{port}.", f"\uff11\uff12\uff17.0.0.1:{port}@photos.test"]
    return out


def _literal_host(url: str) -> bool:
    """True if the WHATWG parser (ada, alone) makes the URL's host an IP address."""
    try:
        return ada_url.URL(url).host_type != ada_url.HostType.DEFAULT
    except ValueError:
        return False


@pytest.fixture
def canary():
    c = Canary()
    yield c
    c.close()


def _run(urls: list[str], cfg) -> pd.DataFrame:
    df = pd.DataFrame({"uid": [f"u{i}" for i in range(len(urls))], "url": urls, "text": ["t"] * len(urls)})
    out = pd.concat(list(download_frames(iter([df]), cfg)), ignore_index=True)
    assert sorted(out.uid) == sorted(df.uid)
    return out.set_index("uid").loc[df.uid]


@pytest.mark.parametrize("mode", ["robots", "image", "redirect", "robots_redirect", "ai_txt_redirect"])
def test_no_spelling_reaches_the_canary(image_server: ImageServer, dl_cfg, canary: Canary, mode: str) -> None:
    auths = authorities(canary.port, image_server.port)
    assert len(auths) > 150
    targets = [f"http://{a}/a.jpg" for a in auths]
    dl_cfg.connect_timeout, dl_cfg.total_timeout = 1.0, 10.0  # the allowed hops must not time out under load
    dl_cfg.respect_robots = mode in ("robots", "robots_redirect")
    dl_cfg.respect_ai_txt = mode == "ai_txt_redirect"
    if mode in ("robots", "image"):
        urls = targets
    elif mode == "redirect":
        urls = [f"http://hostile.test/redirect-to?to={quote(t, safe='')}" for t in targets]
    else:
        urls = []
        for i, a in enumerate(auths):
            host = f"{mode[:2]}{i}.test"
            dl_cfg.resolve_overrides[host] = f"127.0.0.1:{image_server.port}"
            if mode == "robots_redirect":
                image_server.robots_redirects[host] = f"http://{a}/robots.txt"
            else:
                image_server.ai_txt_redirects[host] = f"http://{a}/ai.txt"
            urls.append(f"http://{host}/a.jpg")
    out = _run(urls, dl_cfg)
    assert canary.connections == 0
    assert image_server.canary.connections == 0
    assert not (out.status == "success").any()
    for target, (_, row) in zip(targets, out.iterrows(), strict=True):
        kind = error_kind(row.error_message)
        if _literal_host(target):
            # an address in any spelling is refused by the guard, never tried
            assert (row.status, kind) == ("blocked", "ssrf"), (target, row.error_message)
        else:  # a name (looked up, vetted) or not a URL at all
            assert row.status in ("blocked", "error", "bad_url"), (target, row.error_message)


def test_socket_factory_vets_the_address_connected_to(image_server: ImageServer, dl_cfg, canary: Canary) -> None:
    """The last check sits on the socket: an override that skips the literal check (a hosts
    entry named like an address) still cannot reach the canary, and allowed addresses pass."""
    from crawlpairs.udfs.download.fetch import Fetcher
    from crawlpairs.udfs.download.ssrf import SSRFBlocked

    f = Fetcher(dl_cfg)
    tcp = (socket.SOCK_STREAM, socket.IPPROTO_TCP, "")
    for family, addr in ((socket.AF_INET, ("127.0.0.1", canary.port)),
                         (socket.AF_INET6, ("::1", canary.port, 0, 0)),
                         (socket.AF_INET6, ("::ffff:127.0.0.1", image_server.port, 0, 0)),
                         (socket.AF_INET, ("169.254.169.254", 80))):
        with pytest.raises(SSRFBlocked):
            f.guarded_socket((family, *tcp, addr))
    f.guarded_socket((socket.AF_INET, *tcp, ("127.0.0.1", image_server.port))).close()

    dl_cfg.resolve_overrides["127.0.0.1"] = f"127.0.0.1:{image_server.port}"
    dl_cfg.respect_robots = False
    out = _run([f"http://127.0.0.1:{canary.port}/a.jpg"], dl_cfg)
    assert (out.status.iloc[0], error_kind(out.error_message.iloc[0])) == ("blocked", "ssrf")
    assert canary.connections == 0
