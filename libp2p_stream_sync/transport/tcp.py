"""TCP: multiaddr ⇄ socket address, listening sockets, name resolution, and the
:class:`TcpTransport` the node registers (its byte channel is the socket itself)."""

from __future__ import annotations

import dataclasses
import errno
import socket
from dataclasses import dataclass
from typing import Any

from multiaddr import Multiaddr

from ..errors import DialError
from ..identity import PeerId

_DNS_FAMILIES = {"dns": socket.AF_UNSPEC, "dns4": socket.AF_INET, "dns6": socket.AF_INET6}


@dataclass(frozen=True)
class TcpTarget:
    """What a dialable multiaddr says: where to connect, and whom we expect there."""

    family: int          # AF_INET, AF_INET6, or AF_UNSPEC for /dns
    host: str
    port: int
    peer_id: PeerId | None
    needs_resolution: bool
    #: The transport that dials it (set by the transport's ``parse``).
    transport: Any = dataclasses.field(default=None, compare=False, repr=False)


def to_multiaddr(addr: "str | bytes | Multiaddr") -> Multiaddr:
    """Accept a multiaddr as text, bytes or object; raise ValueError when it is invalid."""
    if isinstance(addr, Multiaddr):
        return addr
    if not isinstance(addr, (str, bytes)):
        raise TypeError(f"a multiaddr is a str, bytes or Multiaddr, not {type(addr).__name__}")
    if isinstance(addr, str) and not addr.startswith("/"):
        raise ValueError(f"invalid multiaddr {addr!r}: multiaddrs start with '/'")
    try:
        return Multiaddr(addr)
    except Exception as exc:  # the multiaddr package raises assorted types
        # Its messages quote the address two or three times; keep only the reason.
        reason = getattr(exc, "message", None) or type(exc).__name__
        raise ValueError(f"invalid multiaddr {addr!r}: {reason}") from exc


def peer_id_or_multiaddr(addr: "str | bytes | Multiaddr | PeerId") -> "PeerId | Multiaddr":
    """Read what a user passes as a peer: a :class:`PeerId`, a bare peer id string such
    as ``"12D3KooW..."``, or a multiaddr (text always starts with ``/``).

    Raises ``ValueError`` (naming ``addr`` once) when it is none of these.
    """
    if isinstance(addr, PeerId):
        return addr
    if isinstance(addr, str) and not addr.startswith("/"):
        try:
            return PeerId.from_string(addr.strip())
        except ValueError:
            raise ValueError(f"{addr!r} is neither a peer id nor a multiaddr "
                             f"(multiaddrs start with '/')") from None
    return to_multiaddr(addr)


def parse_tcp_multiaddr(addr: "str | bytes | Multiaddr", transport: Any = None) -> TcpTarget:
    """Split ``/ip4|ip6|dns|dns4|dns6/<host>/tcp/<port>[/p2p/<id>]`` into its parts
    (``transport``: what the target's ``transport`` field names)."""
    ma = to_multiaddr(addr)
    parts = [(proto.name, value) for proto, value in ma.items()]
    peer_id = None
    if parts and parts[-1][0] in ("p2p", "ipfs"):
        peer_id = PeerId.from_string(parts.pop()[1])
    if len(parts) != 2 or parts[1][0] != "tcp":
        raise ValueError(f"not a TCP multiaddr: {ma}")
    (kind, host), (_, port_text) = parts
    return host_target(kind, host, int(port_text), peer_id, transport, ma)


def host_target(kind: str, host: str, port: int, peer_id: "PeerId | None", transport: Any,
                ma: Multiaddr) -> TcpTarget:
    """The dial target for an address's first part (``/ip4``, ``/ip6``, ``/dns*``)
    and port; ValueError naming ``ma`` for another network protocol. Shared by the
    transports whose addresses start that way (TCP, QUIC)."""
    if kind == "ip4":
        return TcpTarget(socket.AF_INET, host, port, peer_id, False, transport)
    if kind == "ip6":
        return TcpTarget(socket.AF_INET6, host, port, peer_id, False, transport)
    if kind in _DNS_FAMILIES:
        return TcpTarget(_DNS_FAMILIES[kind], host, port, peer_id, True, transport)
    raise ValueError(f"unsupported network protocol /{kind} in {ma}")


def resolve(target: TcpTarget) -> list[tuple[int, tuple]]:
    """Return ``(family, sockaddr)`` pairs to try, resolving DNS names (blocking);
    :class:`DialError` when a name does not resolve."""
    if not target.needs_resolution:
        return [(target.family, (target.host, target.port))]
    try:
        infos = socket.getaddrinfo(target.host, target.port, target.family,
                                   socket.SOCK_STREAM, socket.IPPROTO_TCP)
    except socket.gaierror as exc:
        raise DialError(f"cannot resolve {target.host}: {exc}") from exc
    seen = []
    for family, _, _, _, sockaddr in infos:
        entry = (family, sockaddr[:2])
        if entry not in seen:
            seen.append(entry)
    return seen


def sockaddr_to_multiaddr(family: int, sockaddr: tuple) -> Multiaddr:
    kind = "ip6" if family == socket.AF_INET6 else "ip4"
    return Multiaddr(f"/{kind}/{sockaddr[0]}/tcp/{sockaddr[1]}")


def open_listener(addr: "str | Multiaddr", backlog: int = 512) -> socket.socket:
    """Bind and listen on a TCP multiaddr (``/ip4`` or ``/ip6``); non-blocking socket."""
    target = parse_tcp_multiaddr(addr)
    if target.needs_resolution or target.peer_id is not None:
        raise ValueError(f"listen addresses must be /ip4 or /ip6 without /p2p/: {addr}")
    try:
        return _bound_listener(target, backlog)
    except OSError as exc:
        # "Address already in use" alone does not say which of several addresses.
        if exc.errno is None:
            raise OSError(f"cannot listen on {addr}: {exc}") from exc
        raise type(exc)(exc.errno, f"cannot listen on {addr}: {exc.strerror}") from exc


def _bound_listener(target: TcpTarget, backlog: int) -> socket.socket:
    sock = socket.socket(target.family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if target.family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((target.host, target.port))
        # After the bind, so that a second listener on the port still fails
        # (EADDRINUSE): hole-punch dials bind this port too (DCUtR, protocols/dcutr.py).
        if hasattr(socket, "SO_REUSEPORT"):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def configure_stream_socket(sock: socket.socket) -> None:
    """Settings for every connection socket: non-blocking, no Nagle delay."""
    sock.setblocking(False)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class TcpTransport:
    """``/ip4|ip6|dns|dns4|dns6/<host>/tcp/<port>``: plain TCP sockets as byte channels.

    The transport seam's byte-stream shape (docs/ARCHITECTURE.md): ``parse`` and
    ``resolve`` run on the caller's thread (resolving may block), ``connect``,
    ``accepted`` and the listener's accepts on the reactor thread.
    """

    name = "tcp"

    def handles(self, ma: Multiaddr) -> bool:
        """Whether ``ma`` is a TCP multiaddr (with or without ``/p2p/``)."""
        try:
            parse_tcp_multiaddr(ma)
        except ValueError:
            return False
        return True

    def parse(self, ma: Multiaddr) -> TcpTarget:
        """Where to connect and whom we expect there; ValueError when malformed."""
        return parse_tcp_multiaddr(ma, self)

    def resolve(self, target: TcpTarget) -> list[tuple[int, tuple]]:
        """``(family, sockaddr)`` pairs to try (blocking DNS for ``/dns*``)."""
        return resolve(target)

    def connect(self, family: int, sockaddr: tuple, source: tuple | None = None
                ) -> socket.socket:
        """Reactor: a socket whose non-blocking connect is under way. Raises
        ``OSError`` when it fails at once (``ConnectionRefusedError`` for a refusal).

        ``source``: the local ``(ip, port)`` to dial from, shared with our listener
        on that port (a hole punch: the NAT then maps the dial as it maps the port).
        """
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            configure_stream_socket(sock)
            if source is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if hasattr(socket, "SO_REUSEPORT"):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                sock.bind(source)
            err = sock.connect_ex(sockaddr)
        except OSError:
            sock.close()
            raise
        if err not in (0, errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EAGAIN):
            sock.close()
            raise ConnectionRefusedError(err, f"connect to {sockaddr}: "
                                         f"{errno.errorcode.get(err, err)}")
        return sock

    def listen(self, ma: "str | Multiaddr") -> socket.socket:
        """A bound, listening, non-blocking socket (see :func:`open_listener`)."""
        return open_listener(ma)

    def bound_multiaddr(self, listener: socket.socket) -> Multiaddr:
        """The multiaddr a listening socket is bound to (the real port for port 0)."""
        return sockaddr_to_multiaddr(listener.family, listener.getsockname())

    def remote_multiaddr(self, channel: socket.socket, sockaddr: tuple) -> Multiaddr:
        """The multiaddr of the peer at ``sockaddr`` on ``channel`` (identify's
        observed address); OSError once the socket is gone."""
        return sockaddr_to_multiaddr(channel.family, sockaddr)

    def accepted(self, sock: socket.socket) -> socket.socket:
        """Reactor: the byte channel for an accepted connection socket."""
        configure_stream_socket(sock)
        return sock
