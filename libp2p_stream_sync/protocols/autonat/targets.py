"""What an AutoNAT server (v1 and v2) may dial back, and the cleanup of a dial-back
that completed after its dialer gave up.

:func:`dialable` is the filter both servers share: a requested address is dialed only
when it names an IP (no DNS name, no relay), no other peer, a transport we can dial
(TCP, or ``/ws`` when ``wsproto`` is installed), and an IP we have a route to. Each
server then adds its own rule on the IP (v1: the observed one; v2: a public one).
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from typing import TYPE_CHECKING, Any, Protocol

from multiaddr import Multiaddr

from ...identity import PeerId
from ...ipscope import ip_of

if TYPE_CHECKING:
    from ...connection import Connection

log = logging.getLogger(__name__)

#: Seconds after a timed-out dial-back by which its connection, had it completed
#: anyway, is found and closed (its handshake timer ends it by then otherwise).
LATE_DIAL_GRACE = 1.0
_P2P = 421


def dialable(raw: bytes, peer: PeerId, transports: Any) -> Multiaddr | None:
    """The requested address ``raw`` (multiaddr bytes) without its ``/p2p/`` suffix
    when we can dial it back to ``peer`` with one of ``transports`` (the node's
    ``transport.Transports``; module docstring), else None."""
    try:
        ma = Multiaddr(bytes(raw))
        parts = [(proto.name, value) for proto, value in ma.items()]
    except Exception:  # the multiaddr package raises assorted types
        return None
    if any(name == "p2p-circuit" for name, _ in parts):
        return None
    if parts and parts[-1][0] in ("p2p", "ipfs"):
        if parts[-1][1] != str(peer):
            return None
        ma = ma.decapsulate_code(_P2P)
    ip = ip_of(ma)
    if ip is None:
        return None
    try:
        transports.parse(ma)
    except (ValueError, ImportError) as exc:  # a shape or a transport we do not have
        log.debug("AutoNAT: not dialing %s: %s", ma, exc)
        return None
    return ma if has_route(ip) else None


def has_route(ip: str) -> bool:
    """Whether this host can send to ``ip`` at all (an IPv6 address on an IPv4-only
    host cannot be dialed: asking would only report it unreachable). Connecting a UDP
    socket sends nothing; it asks the kernel for a route."""
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(ip).version == 6 else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.connect((ip, 9))
    except (OSError, ValueError):
        return False
    return True


class _Table(Protocol):
    """What :func:`close_late_dial` needs of the node."""

    @property
    def reactor(self) -> Any: ...

    def connections(self, peer: PeerId | None = None) -> list["Connection"]: ...


def close_late_dial(host: _Table, peer: PeerId, target: Multiaddr,
                    before: list["Connection"]) -> None:
    """A dial-back to ``peer`` at ``target`` timed out: close, after
    :data:`LATE_DIAL_GRACE`, the outbound connection it made had it completed after
    all (a new one to that address, not among ``before``), instead of leaving it open
    until the idle timeout."""
    where = (ipaddress.ip_address(ip_of(target) or ""), int(target.value_for_protocol(6)))

    def sweep() -> None:
        for conn in host.connections(peer):
            if not conn.initiator or any(conn is old for old in before):
                continue
            try:
                at = (ipaddress.ip_address(conn.remote_addr[0]), conn.remote_addr[1])
            except (ValueError, TypeError, IndexError):  # not an IP socket address
                continue
            if at == where:
                log.debug("AutoNAT: closing the late dial-back to %s", target)
                conn.close()
    reactor = host.reactor
    reactor.call_soon(lambda: reactor.call_later(LATE_DIAL_GRACE, sweep))
