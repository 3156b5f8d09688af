"""QUIC (``/ip4|ip6|dns*/<host>/udp/<port>/quic-v1``): the node's *muxed* transport.

A muxed transport brings its own security and streams (docs/ARCHITECTURE.md, "The
transport seam"): it has ``kind = "muxed"`` and, instead of a byte channel, makes
connections itself (:meth:`QuicTransport.new_connection` for a dial, the listener's
``on_inbound`` for an accepted one), each a :class:`~..quic_connection.QuicConnection`
over one :class:`~..engines.quic.QuicMuxer`.

UDP sockets (:class:`~.udp.QuicSocket`): one per ``listen`` address, served by a
:class:`~..engines.quic_endpoint.QuicEndpoint`; a dial goes out from the listening
socket of the same family when there is one (as go-libp2p does: the peer sees our
listening port, which hole punching needs), else from one node-wide dial-only socket
per family. Without aioquic, ``parse`` and ``listen`` raise
:class:`~..engines.quic.QuicUnavailable`, whose message names the ``[quic]`` extra.
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING, Any, Callable

from multiaddr import Multiaddr

from ..engines.quic import QuicIdentity, require_aioquic
from ..errors import DialError
from ..identity import PeerId
from .tcp import TcpTarget, host_target, to_multiaddr
from .udp import QuicSocket, bind_udp

if TYPE_CHECKING:
    from ..interfaces import ConnectionOwner
    from ..quic_connection import QuicConnection

__all__ = ["QuicTransport", "is_quic_multiaddr", "parse_quic_multiaddr",
           "quic_multiaddr"]


def is_quic_multiaddr(addr: "str | bytes | Multiaddr") -> bool:
    """True for ``.../udp/<port>/quic-v1`` (optionally followed by ``/p2p/<id>``)."""
    names = [proto.name for proto in to_multiaddr(addr).protocols()]
    if names and names[-1] in ("p2p", "ipfs"):
        names.pop()
    return len(names) == 3 and names[1:] == ["udp", "quic-v1"]


def parse_quic_multiaddr(addr: "str | bytes | Multiaddr", transport: Any = None) -> TcpTarget:
    """Split ``/ip4|ip6|dns|dns4|dns6/<host>/udp/<port>/quic-v1[/p2p/<id>]`` into a dial
    target (the same shape as TCP's); ValueError for anything else."""
    ma = to_multiaddr(addr)
    parts = [(proto.name, value) for proto, value in ma.items()]
    peer_id = None
    if parts and parts[-1][0] in ("p2p", "ipfs"):
        peer_id = PeerId.from_string(parts.pop()[1])
    if len(parts) != 3 or parts[1][0] != "udp" or parts[2][0] != "quic-v1":
        raise ValueError(f"not a QUIC v1 multiaddr (.../udp/<port>/quic-v1): {ma}")
    (kind, host), (_, port_text) = parts[0], parts[1]
    return host_target(kind, host, int(port_text), peer_id, transport, ma)


def quic_multiaddr(family: int, sockaddr: tuple) -> Multiaddr:
    """``/ip4|ip6/<host>/udp/<port>/quic-v1`` for a UDP socket address."""
    kind = "ip6" if family == socket.AF_INET6 else "ip4"
    return Multiaddr(f"/{kind}/{sockaddr[0]}/udp/{sockaddr[1]}/quic-v1")


class QuicTransport:
    """``/udp/<port>/quic-v1``: QUIC v1 connections from a node's UDP sockets.

    ``parse`` and ``resolve`` run on the caller's thread; ``new_connection``, the
    sockets and their connections on the reactor thread.
    """

    name = "quic-v1"
    kind = "muxed"

    def __init__(self, owner: "ConnectionOwner") -> None:
        """``owner``: what every QUIC connection calls up (the node's NodeOwner)."""
        self._owner = owner
        self._identity: QuicIdentity | None = None
        self._listening: list[QuicSocket] = []
        self._dialing: dict[int, QuicSocket] = {}  # family -> node-wide dial socket

    def handles(self, ma: Multiaddr) -> bool:
        """Whether ``ma`` is a QUIC v1 multiaddr (aioquic installed or not)."""
        return is_quic_multiaddr(ma)

    def parse(self, ma: Multiaddr) -> TcpTarget:
        """Where to dial and whom we expect there (QuicUnavailable without aioquic)."""
        require_aioquic()
        return parse_quic_multiaddr(ma, self)

    def resolve(self, target: TcpTarget) -> list[tuple[int, tuple]]:
        """``(family, sockaddr)`` pairs to try (blocking DNS for ``/dns*``)."""
        if not target.needs_resolution:
            return [(target.family, (target.host, target.port))]
        try:
            infos = socket.getaddrinfo(target.host, target.port, target.family,
                                       socket.SOCK_DGRAM, socket.IPPROTO_UDP)
        except socket.gaierror as exc:
            raise DialError(f"cannot resolve {target.host}: {exc}") from exc
        seen: list[tuple[int, tuple]] = []
        for family, _, _, _, sockaddr in infos:
            if (family, sockaddr[:2]) not in seen:
                seen.append((family, sockaddr[:2]))
        return seen

    def listen(self, ma: "str | Multiaddr") -> QuicSocket:
        """A bound UDP socket for ``ma`` with its endpoint (the listener starts it on
        the reactor with its ``on_inbound``)."""
        require_aioquic()
        target = parse_quic_multiaddr(ma)
        if target.needs_resolution or target.peer_id is not None:
            raise ValueError(f"listen addresses must be /ip4 or /ip6 without /p2p/: {ma}")
        qsock = QuicSocket(bind_udp(target.family, (target.host, target.port), ma),
                           self._owner, self, accept=True)
        self._listening.append(qsock)
        return qsock

    @property
    def identity(self) -> QuicIdentity:
        """The node's QUIC certificate (``engines.quic.QuicIdentity``), made once."""
        if self._identity is None:
            self._identity = QuicIdentity(self._owner.keypair)
        return self._identity

    def bound_multiaddr(self, listener: QuicSocket) -> Multiaddr:
        """The multiaddr a QUIC socket is bound to (the real port for port 0)."""
        return quic_multiaddr(listener.family, listener.sockname)

    def remote_multiaddr(self, channel: QuicSocket, sockaddr: tuple) -> Multiaddr:
        """The peer's ``/quic-v1`` multiaddr (identify's observed address)."""
        return quic_multiaddr(channel.family, sockaddr)

    def new_connection(self, family: int, sockaddr: tuple, expected: PeerId | None,
                       on_ready: Callable[["QuicConnection", BaseException | None], None]
                       ) -> "QuicConnection":
        """Reactor: a client connection to ``sockaddr`` (the dialer counts and starts
        it). Raises ``OSError`` when no socket can be had."""
        return self._socket_for(family, sockaddr[0]).connect(sockaddr, expected, on_ready)

    def _socket_for(self, family: int, host: str) -> QuicSocket:
        for qsock in self._listening:
            if qsock.family == family and not qsock.closing and qsock.can_reach(host):
                return qsock
        qsock = self._dialing.get(family)
        if qsock is None or qsock.closing:
            wildcard = ("::", 0) if family == socket.AF_INET6 else ("0.0.0.0", 0)
            qsock = QuicSocket(bind_udp(family, wildcard, "a dial socket"), self._owner,
                               self, accept=False)
            qsock.start(None)
            self._dialing[family] = qsock
        return qsock

    def close(self) -> None:
        """Reactor: close the dial sockets once their connections are gone (the
        listening ones are closed by their listener)."""
        for qsock in self._dialing.values():
            qsock.close()
        self._dialing.clear()
