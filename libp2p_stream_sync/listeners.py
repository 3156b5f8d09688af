"""The node's listening sockets and what happens to the connections they accept."""

from __future__ import annotations

import logging
import socket
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, Iterable

from multiaddr import Multiaddr

from .connection import Connection
from .futures import complete
from .quic_connection import QuicConnection
from .transport import tcp

if TYPE_CHECKING:
    from .conntable import ConnectionTable
    from .node_owner import NodeOwner
    from .transport import Transports

#: The node's parts log under the node's name, as before the split (README "Logging").
log = logging.getLogger("libp2p_stream_sync.node")


class Listeners:
    """The node's listeners: binds the ``listen`` addresses, registers the sockets with
    the reactor, and starts an inbound :class:`Connection` for each accepted socket
    within ``Limits.max_inbound_connections`` and ``max_connections_per_peer``.
    Everything but the constructor and :attr:`multiaddrs` runs on the reactor."""

    def __init__(self, owner: "NodeOwner", table: "ConnectionTable",
                 transports: "Transports", addrs: Iterable[Any]) -> None:
        """Bind every address of ``addrs``; on an error close what was bound, raise."""
        self._owner = owner
        self._table = table
        self._reactor = owner.reactor
        self._limits = owner.limits
        listeners: list[_Listener] = []
        try:
            for addr in addrs:
                transport = transports.for_multiaddr(tcp.to_multiaddr(addr))
                if getattr(transport, "kind", None) == "muxed":  # QUIC: a UDP socket
                    listeners.append(_MuxedListener(self, transport, transport.listen(addr)))
                else:
                    listeners.append(_Listener(self, transport, transport.listen(addr)))
        except BaseException:
            for listener in listeners:
                listener.sock.close()
            raise
        self._listeners = listeners

    @property
    def multiaddrs(self) -> list[Multiaddr]:
        """The addresses we listen on, with the ports actually bound."""
        return [listener.multiaddr for listener in self._listeners]

    def start(self, ready: Future) -> None:
        """Reactor: watch every listening socket; then resolve ``ready``."""
        for listener in self._listeners:
            listener.start()
        complete(ready, None)

    def close(self) -> None:
        """Reactor: stop listening."""
        for listener in self._listeners:
            listener.close()

    def _inbound_allowed(self, addr: tuple) -> bool:
        if self._table.inbound_count < self._limits.max_inbound_connections:
            return True
        log.info("refusing a connection from %s: inbound limit (%d) reached", addr,
                 self._limits.max_inbound_connections)
        return False

    def _on_ready(self, addr: tuple) -> Any:
        table = self._table

        def on_ready(conn: Connection, error: BaseException | None) -> None:
            table.pending.discard(conn)
            if error is not None:
                log.debug("inbound connection from %s failed: %s", addr, error)
            elif table.peer_full(conn.remote_peer_id):
                # Closed from the next reactor turn: the caller is still using conn.
                self._reactor.call_soon(conn.abort, ConnectionRefusedError(
                    "too many connections from this peer"))
            else:
                table.connection_ready(conn)
        return on_ready

    def accepted(self, transport: Any, sock: socket.socket, addr: tuple) -> None:
        """Reactor: start the upgrade of an accepted socket, or close it."""
        if not self._inbound_allowed(addr):
            sock.close()
            return
        try:
            channel = transport.accepted(sock)
        except Exception as exc:  # e.g. setsockopt on a socket already reset
            log.info("dropping an inbound connection from %s: %s", addr, exc)
            sock.close()
            return
        conn = Connection(self._owner, channel, initiator=False, remote_addr=addr,
                          transport=transport, on_ready=self._on_ready(addr))
        self._table.add_pending(conn)
        conn.start(self._limits.handshake_timeout)

    def accepted_muxed(self, qsock: Any, muxer: Any, addr: tuple) -> Any:
        """Reactor: the connection for a new inbound QUIC connection (started), or
        None to refuse it (the inbound limit)."""
        if not self._inbound_allowed(addr):
            return None
        conn = QuicConnection(self._owner, qsock, muxer, initiator=False, remote_addr=addr,
                              transport=qsock.transport, on_ready=self._on_ready(addr))
        self._table.add_pending(conn)
        conn.start(self._limits.handshake_timeout)
        return conn


class _Listener:
    """A listening socket; accepts on the reactor thread."""

    _ACCEPTS_PER_WAKEUP = 64

    def __init__(self, listeners: Listeners, transport: Any, sock: socket.socket) -> None:
        self.listeners = listeners
        self.transport = transport
        self.sock = sock
        self.multiaddr = transport.bound_multiaddr(sock)

    def on_readable(self) -> None:
        for _ in range(self._ACCEPTS_PER_WAKEUP):
            try:
                sock, addr = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE and friends: log, try again later
                log.warning("accept failed on %s: %s", self.multiaddr, exc)
                return
            self.listeners.accepted(self.transport, sock, addr)

    def start(self) -> None:
        """Reactor: accept on the socket."""
        self.listeners._reactor.register(self.sock, 1, self)

    def close(self) -> None:
        """Reactor: stop listening."""
        self.listeners._reactor.unregister(self.sock)
        self.sock.close()

    def on_writable(self) -> None:  # pragma: no cover - never registered for writing
        pass


class _MuxedListener:
    """A muxed transport's listening socket (QUIC: ``transport.udp.QuicSocket``),
    which makes its connections through :meth:`Listeners.accepted_muxed`."""

    def __init__(self, listeners: Listeners, transport: Any, sock: Any) -> None:
        self.listeners = listeners
        self.sock = sock
        self.multiaddr = transport.bound_multiaddr(sock)

    def start(self) -> None:
        """Reactor: serve the socket."""
        self.sock.start(self.listeners.accepted_muxed)

    def close(self) -> None:
        """Reactor: accept no more (the socket closes once its connections are)."""
        self.sock.close()
