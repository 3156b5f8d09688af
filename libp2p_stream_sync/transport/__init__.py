"""Transports: a transport dials and listens for the multiaddrs it handles.

The node keeps a :class:`Transports` table and picks a transport by multiaddr; adding
``/ws`` or ``/quic-v1`` is one :meth:`Transports.register` call (see
docs/ARCHITECTURE.md, "The transport seam"). Two shapes:

* **byte-stream transports** (TCP; WebSocket next) implement :class:`ByteStreamTransport`:
  they produce a socket-like byte channel (``interfaces.ByteChannel``) that the
  connection upgrades (security, then muxer) exactly as it upgrades a TCP socket;
* **muxed transports** (``transport.quic.QuicTransport``) bring their own security and
  streams; they have ``kind = "muxed"`` and :class:`MuxedTransport`'s methods: the
  transport makes the (already secure) connections itself, a
  ``quic_connection.QuicConnection`` whose engine implements ``interfaces.Muxer``
  plus datagram input and output. The dialer and the listeners count and start them
  as they do byte-channel connections.
"""

from __future__ import annotations

from typing import Any, Protocol

from multiaddr import Multiaddr


class ByteStreamTransport(Protocol):
    """A transport whose connections are byte channels (``transport.tcp.TcpTransport``)."""

    #: A short name for messages and logs ("tcp", "ws").
    name: str

    def handles(self, ma: Multiaddr) -> bool:
        """Whether this transport dials and listens on ``ma``."""

    def parse(self, ma: Multiaddr) -> Any:
        """A dial target with ``peer_id`` and ``transport`` (``tcp.TcpTarget``)."""

    def resolve(self, target: Any) -> list[tuple[int, tuple]]:
        """``(family, sockaddr)`` pairs to try; may block (DNS): caller's thread."""

    def connect(self, family: int, sockaddr: tuple) -> Any:
        """Reactor: a byte channel whose non-blocking connect is under way."""

    def listen(self, ma: Multiaddr) -> Any:
        """A listening socket for ``ma`` (the reactor accepts on it)."""

    def bound_multiaddr(self, listener: Any) -> Multiaddr:
        """The address ``listener`` is bound to."""

    def accepted(self, sock: Any) -> Any:
        """Reactor: the byte channel for a socket the listener accepted."""

    def remote_multiaddr(self, channel: Any, sockaddr: tuple) -> Multiaddr:
        """The peer's address as a multiaddr (identify's observed address)."""


class MuxedTransport(Protocol):
    """A transport with its own security and streams (``transport.quic.QuicTransport``).

    ``handles``, ``parse``, ``resolve``, ``bound_multiaddr`` and ``remote_multiaddr``
    are as for :class:`ByteStreamTransport`.
    """

    name: str
    #: ``"muxed"`` (a byte-stream transport has no ``kind``).
    kind: str

    def handles(self, ma: Multiaddr) -> bool:
        """Whether this transport dials and listens on ``ma``."""

    def parse(self, ma: Multiaddr) -> Any:
        """A dial target with ``peer_id`` and ``transport``."""

    def resolve(self, target: Any) -> list[tuple[int, tuple]]:
        """``(family, sockaddr)`` pairs to try; may block (DNS): caller's thread."""

    def new_connection(self, family: int, sockaddr: tuple, expected: Any,
                       on_ready: Any) -> Any:
        """Reactor: a connection dialing ``sockaddr`` (not started: the dialer counts
        it and calls ``start(handshake_timeout)``); ``on_ready(conn, error)`` once open
        or failed."""

    def listen(self, ma: Multiaddr) -> Any:
        """A bound listener for ``ma``; on the reactor ``listener.start(on_inbound)``
        serves it, ``on_inbound(listener, engine, addr)`` making each inbound
        connection (None refuses it), and ``listener.close()`` ends it."""

    def bound_multiaddr(self, listener: Any) -> Multiaddr:
        """The address ``listener`` is bound to."""

    def remote_multiaddr(self, channel: Any, sockaddr: tuple) -> Multiaddr:
        """The peer's address as a multiaddr (identify's observed address)."""

    def close(self) -> None:
        """Reactor: the node is closing (release sockets once their connections are
        gone)."""


class Transports:
    """The node's transports. The first one given (TCP) is the fallback: the others,
    more specific (``/tcp/.../ws`` is a TCP address plus a suffix TCP rejects), are
    asked first, newest first; an address none of them handles goes to the fallback,
    whose ``parse`` accepts it or explains why it is unsupported. With TCP alone,
    picking costs nothing: the address is parsed once."""

    def __init__(self, *transports: ByteStreamTransport) -> None:
        self._transports: list[Any] = list(transports)

    def register(self, transport: "ByteStreamTransport | MuxedTransport") -> None:
        """Add a transport (asked before those registered earlier)."""
        self._transports.insert(1, transport)

    def for_multiaddr(self, ma: Multiaddr) -> "ByteStreamTransport | MuxedTransport":
        """The transport for ``ma``: the first specific one that handles it, else the
        fallback (whose ``parse``/``listen`` raise ValueError if it does not)."""
        for transport in self._transports[1:]:
            if transport.handles(ma):
                return transport
        return self._transports[0]

    def parse(self, ma: Multiaddr) -> Any:
        """The dial target for ``ma``, parsed by its transport; ValueError when no
        transport takes it."""
        return self.for_multiaddr(ma).parse(ma)

    def close(self) -> None:
        """Reactor: the node is closing; transports with a ``close`` release what they
        hold once their connections are gone."""
        for transport in self._transports:
            close = getattr(transport, "close", None)
            if close is not None:
                close()
