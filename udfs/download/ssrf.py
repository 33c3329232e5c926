"""SSRF guard for the download stage.

URLs come from a crawl, so anyone can make us fetch `http://169.254.169.254/...`
(cloud instance metadata), `http://10.0.0.5/admin` or a hostname whose DNS answer
points at one of those. The fetcher (dl_fetch) normalises each URL once
(urls.normalize_url, WHATWG: the spelling the HTTP client will use) and then the
guard checks it where it matters:
  - `check_literal`: an IP-literal host of the normalised URL, before any request
    (aiohttp does not call resolvers for literals);
  - `GuardedResolver`: every DNS answer for a name; the connector connects to exactly
    the addresses that were vetted (no second lookup, no DNS cache), so an answer that
    changes between two lookups (DNS rebinding) is vetted again;
  - `NetPolicy.check` in the connector's socket factory: the address each socket is
    about to connect to, whatever led there (the last word: no spelling can differ).
Redirect targets go through all of it on every hop.

Only an explicit allow-list opens the guard (tests and benchmarks need loopback):
entries are `IP`, `CIDR`, `IP:PORT`, `CIDR:PORT` or `[IPv6]:PORT`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Ranges that `is_global` treats as global but that must never be fetched.
_EXTRA_FORBIDDEN = [
    ipaddress.ip_network("100.64.0.0/10"),  # carrier-grade NAT (is_global is False already, kept explicit)
    ipaddress.ip_network("192.0.0.0/24"),  # IETF protocol assignments
    ipaddress.ip_network("198.18.0.0/15"),  # benchmarking
    ipaddress.ip_network("fd00:ec2::/32"),  # AWS IMDS over IPv6 (inside fc00::/7, explicit for clarity)
]


class SSRFBlocked(OSError):
    """A resolved address (or IP literal) the guard refuses; carries the reason."""


@dataclass(frozen=True)
class _AllowEntry:
    network: ipaddress.IPv4Network | ipaddress.IPv6Network
    port: int | None


def parse_allow_entry(text: str) -> _AllowEntry:
    """`127.0.0.1:8080`, `127.0.0.0/8:8080`, `[::1]:8080`, `10.0.0.0/8` -> entry."""
    s = text.strip()
    port: int | None = None
    if s.startswith("["):
        host, _, rest = s[1:].partition("]")
        if rest.startswith(":"):
            port = int(rest[1:])
    elif s.count(":") == 1:
        host, p = s.split(":")
        port = int(p) if p not in ("", "*") else None
    else:
        host = s
    return _AllowEntry(ipaddress.ip_network(host, strict=False), port)


def _embedded_v4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address hidden inside mapped, 6to4, Teredo or NAT64 IPv6 forms."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if ip in ipaddress.ip_network("64:ff9b::/96"):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def forbidden_reason(ip: IPAddress) -> str | None:
    """Why an address may not be fetched (None: it is a public unicast address)."""
    if isinstance(ip, ipaddress.IPv6Address):
        inner = _embedded_v4(ip)
        if inner is not None:
            why = forbidden_reason(inner)
            return f"embeds {inner} ({why})" if why else None
    for attr in ("is_loopback", "is_link_local", "is_multicast", "is_private", "is_reserved",
                 "is_unspecified"):
        if getattr(ip, attr):
            return attr[3:]
    if any(ip in net for net in _EXTRA_FORBIDDEN if net.version == ip.version):
        return "special-purpose"
    if not ip.is_global:
        return "not global"
    return None


class NetPolicy:
    """Decides whether one (address, port) may be connected to."""

    def __init__(self, enabled: bool = True, allow: Iterable[str] = ()) -> None:
        self.enabled = enabled
        self.allow = [parse_allow_entry(a) for a in allow if a.strip()]

    def allowed_explicitly(self, ip: IPAddress, port: int) -> bool:
        return any(
            ip.version == e.network.version and ip in e.network and (e.port is None or e.port == port)
            for e in self.allow
        )

    def check(self, ip_text: str, port: int, host: str | None = None) -> None:
        """Raise SSRFBlocked unless the address is public or on the allow-list."""
        try:
            ip = ipaddress.ip_address(ip_text.split("%", 1)[0])
        except ValueError:
            raise SSRFBlocked(f"unparseable address {ip_text!r}") from None
        if self.allowed_explicitly(ip, port):
            return
        why = forbidden_reason(ip)
        if why and self.enabled:
            name = f"{host} -> " if host and host != ip_text else ""
            raise SSRFBlocked(f"{name}{ip}:{port} is {why}")


def is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
        return True
    except ValueError:
        return False


def parse_override(value: str) -> tuple[str, int | None]:
    """`127.0.0.1` or `127.0.0.1:8080` or `[::1]:8080` -> (ip, port or None)."""
    v = value.strip()
    if v.startswith("["):
        ip, _, rest = v[1:].partition("]")
        return ip, int(rest[1:]) if rest.startswith(":") else None
    if v.count(":") == 1:
        ip, p = v.split(":")
        return ip, int(p)
    return v, None


class GuardedResolver:
    """aiohttp resolver that vets every answer before the connector may use it.

    `overrides` maps a hostname to `IP[:PORT]` (config `resolve_overrides`): a static
    hosts file for tests and benchmarks that serve many hostnames from one loopback
    server. Overridden answers are vetted like real ones, so they open nothing that
    the allow-list does not. `base` is any object with aiohttp's `resolve` signature
    (tests inject one whose answers change between calls).
    """

    def __init__(self, policy: NetPolicy, overrides: Mapping[str, str] | None = None,
                 base: Any = None) -> None:
        self.policy = policy
        self.overrides = {k.lower().rstrip("."): parse_override(v) for k, v in (overrides or {}).items()}
        self._base = base

    async def _base_resolve(self, host: str, port: int, family: int) -> list[dict[str, Any]]:
        if self._base is not None:
            return list(await self._base.resolve(host, port, family))
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, family=family,
                                       flags=socket.AI_ADDRCONFIG)
        out = []
        for fam, _, proto, _, addr in infos:
            out.append({"hostname": host, "host": addr[0], "port": addr[1], "family": fam,
                        "proto": proto, "flags": socket.AI_NUMERICHOST | socket.AI_NUMERICSERV})
        return out

    async def resolve(self, host: str, port: int = 0, family: int = socket.AF_INET) -> list[dict[str, Any]]:
        key = host.lower().rstrip(".")
        if key in self.overrides:
            ip, oport = self.overrides[key]
            fam = socket.AF_INET6 if ":" in ip else socket.AF_INET
            answers = [{"hostname": host, "host": ip, "port": oport or port, "family": fam,
                        "proto": 0, "flags": socket.AI_NUMERICHOST | socket.AI_NUMERICSERV}]
        elif is_ip_literal(host):
            ip = host.strip("[]")
            fam = socket.AF_INET6 if ":" in ip else socket.AF_INET
            answers = [{"hostname": host, "host": ip, "port": port, "family": fam,
                        "proto": 0, "flags": socket.AI_NUMERICHOST | socket.AI_NUMERICSERV}]
        else:
            answers = await self._base_resolve(host, port, family)
        if not answers:
            raise OSError(f"no address for {host}")
        # One forbidden answer refuses the host: a name that mixes public and private
        # answers is either misconfigured or an attack, and round-robin would reach both.
        for a in answers:
            self.policy.check(a["host"], int(a["port"]), host)
        return answers

    async def close(self) -> None:
        if self._base is not None and hasattr(self._base, "close"):
            await self._base.close()

    def check_literal(self, host: str, port: int) -> None:
        """Vet an IP-literal URL host (aiohttp does not call resolvers for those)."""
        key = host.lower().rstrip(".")
        if key in self.overrides:
            return  # vetted at connect time: by `resolve` for names, by the socket factory always
        if is_ip_literal(host):
            self.policy.check(host.strip("[]"), port, host)


def ssrf_cause(exc: BaseException) -> SSRFBlocked | None:
    """The SSRFBlocked inside an aiohttp connector error, if that is what it was."""
    seen = 0
    e: BaseException | None = exc
    while e is not None and seen < 8:
        if isinstance(e, SSRFBlocked):
            return e
        inner = getattr(e, "os_error", None)
        if isinstance(inner, SSRFBlocked):
            return inner
        e = e.__cause__ or e.__context__
        seen += 1
    return None
