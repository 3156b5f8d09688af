"""The node's listening sockets and what happens to the connections they accept."""

from __future__ import annotations

import logging
import socket
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, Iterable

from multiaddr import Multiaddr

from .connection import Connection
from .futures import complete
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
            self._reactor.register(listener.sock, 1, listener)
        complete(ready, None)

    def close(self) -> None:
        """Reactor: stop listening."""
        for listener in self._listeners:
            self._reactor.unregister(listener.sock)
            listener.sock.close()

    def accepted(self, transport: Any, sock: socket.socket, addr: tuple) -> None:
        """Reactor: start the upgrade of an accepted socket, or close it."""
        table = self._table
        if table.inbound_count >= self._limits.max_inbound_connections:
            log.info("refusing a connection from %s: inbound limit (%d) reached", addr,
                     self._limits.max_inbound_connections)
            sock.close()
            return
        try:
            channel = transport.accepted(sock)
        except Exception as exc:  # e.g. setsockopt on a socket already reset
            log.info("dropping an inbound connection from %s: %s", addr, exc)
            sock.close()
            return

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

        conn = Connection(self._owner, channel, initiator=False, remote_addr=addr,
                          transport=transport, on_ready=on_ready)
        table.add_pending(conn)
        conn.start(self._limits.handshake_timeout)


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

    def on_writable(self) -> None:  # pragma: no cover - never registered for writing
        pass
