"""Which IP addresses count as public: the one policy AutoNAT (and, later, relay and
hole punching) use to decide what is worth asking about and what may be dialed back.

Every special-use range of the IANA registries (RFC 6890 and successors: private,
loopback, link-local, shared CGN space, documentation, benchmarking, multicast,
reserved) is *not* public. Tests that build their "internet" out of such ranges
(network namespaces use 198.18.0.0/15, the benchmarking range) say so with
``IpScope(public_networks=["198.18.0.0/15"])``; js-libp2p treats these ranges as
private too, so a js peer needs the same exception on its side.
"""

from __future__ import annotations

import ipaddress
from typing import Iterable

from multiaddr import Multiaddr

#: Ranges that are never reachable from the internet at large (IPv4 and IPv6).
SPECIAL_USE_NETWORKS: tuple[str, ...] = (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
    "172.16.0.0/12", "192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16",
    "198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4",
    "::/128", "::1/128", "::ffff:0:0/96", "64:ff9b:1::/48", "100::/64", "2001::/23",
    "2001:db8::/32", "fc00::/7", "fe80::/10", "ff00::/8",
)


class IpScope:
    """Tells public IP addresses from the rest.

    ``public_networks`` (CIDR strings) count as public even inside a special-use
    range: the benchmarking range of a network-namespace test, or ``127.0.0.0/8`` to
    let AutoNAT work on one machine. Raises ``ValueError`` for a malformed network.
    """

    def __init__(self, public_networks: Iterable[str] = ()) -> None:
        self.public_networks = tuple(ipaddress.ip_network(n, strict=False)
                                     for n in public_networks)
        self._special = tuple(ipaddress.ip_network(n) for n in SPECIAL_USE_NETWORKS)

    def __repr__(self) -> str:
        return f"IpScope(public_networks={[str(n) for n in self.public_networks]})"

    def is_public(self, ip: "str | ipaddress.IPv4Address | ipaddress.IPv6Address") -> bool:
        """True when ``ip`` is reachable from the internet, as far as we can tell
        (an unparsable string is not public)."""
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return False
        if any(addr.version == n.version and addr in n for n in self.public_networks):
            return True
        return not any(addr.version == n.version and addr in n for n in self._special)


def ip_of(ma: Multiaddr) -> str | None:
    """The IP address a multiaddr starts with (``/ip4`` or ``/ip6``), else None."""
    try:
        first = next(iter(ma.items()))
    except (StopIteration, Exception):  # the multiaddr package raises assorted types
        return None
    proto, value = first
    return str(value) if proto.name in ("ip4", "ip6") else None


def with_ip(ma: Multiaddr, ip: str) -> Multiaddr:
    """``ma`` with its leading ``/ip4``/``/ip6`` replaced by ``ip`` (ValueError when
    ``ma`` does not start with an IP)."""
    parts = [(proto.name, value) for proto, value in ma.items()]
    if not parts or parts[0][0] not in ("ip4", "ip6"):
        raise ValueError(f"{ma} does not start with an IP address")
    kind = "ip6" if ipaddress.ip_address(ip).version == 6 else "ip4"
    rest = "".join(f"/{name}" if value is None else f"/{name}/{value}"
                   for name, value in parts[1:])
    return Multiaddr(f"/{kind}/{ip}{rest}")
