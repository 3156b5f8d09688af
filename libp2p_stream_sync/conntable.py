"""The node's table of connections: open ones per peer, pending ones, and the counts
the connection limits apply to."""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future
from typing import TYPE_CHECKING, Callable

from .futures import complete
from .logthrottle import LogThrottle

if TYPE_CHECKING:
    from .connection import Connection
    from .identity import PeerId
    from .limits import Limits
    from .reactor import Reactor

#: The node's parts log under the node's name, as before the split (README "Logging").
log = logging.getLogger("libp2p_stream_sync.node")


class ConnectionTable:
    """Which connections the node has: open ones per peer (guarded by ``_lock``, read
    by any thread), and, on the reactor thread only, the connections still upgrading
    (``pending``) and the inbound/outbound counts the connection limits bound.

    The dialer and the listeners add connections (:meth:`add_pending`), the node's
    :class:`~.node_owner.NodeOwner` removes them (:meth:`connection_closed`).
    """

    def __init__(self, limits: "Limits", reactor: "Reactor") -> None:
        self._limits = limits
        self._reactor = reactor
        self._lock = threading.Lock()
        self._by_peer: dict[PeerId, list[Connection]] = {}
        #: Reactor only: connections still upgrading, and the counts the limits bound.
        self.pending: set[Connection] = set()
        self.inbound_count = 0
        self.outbound_count = 0
        self._refusals = LogThrottle()
        #: Called on the reactor thread with each connection once it is open.
        self.on_connection_ready: list[Callable[[Connection], None]] = []

    # -- any thread --------------------------------------------------------------------
    def snapshot(self, peer: "PeerId | None" = None) -> list[Connection]:
        """The open connections (to ``peer``, or all), oldest first."""
        with self._lock:
            if peer is not None:
                return list(self._by_peer.get(peer, ()))
            return [conn for conns in self._by_peer.values() for conn in conns]

    def counts(self, inbound_streams: int) -> dict[str, int]:
        """``Node.counts``: the table's sizes, read without stopping the reactor, and
        the given number of (peer, protocol) pairs with inbound streams open."""
        return {"connections": len(self.snapshot()), "pending": len(self.pending),
                "inbound": self.inbound_count, "outbound": self.outbound_count,
                "inbound_streams": inbound_streams}

    def peers(self) -> list[PeerId]:
        """The peers with at least one open connection."""
        with self._lock:
            return [peer for peer, conns in self._by_peer.items() if conns]

    def has_connection(self, peer: PeerId) -> bool:
        """True while ``peer`` has an open connection (one dict read, no lock)."""
        return bool(self._by_peer.get(peer))

    def usable(self, peer_id: PeerId, direct: bool = False) -> Connection | None:
        """An open connection to ``peer_id`` that takes new streams, or None: a direct
        one when there is one, else (unless ``direct``) a relayed one."""
        relayed = None
        with self._lock:
            for conn in self._by_peer.get(peer_id, ()):
                if conn.usable_for_new_streams():
                    if not getattr(conn, "relayed", False):
                        return conn
                    relayed = relayed or conn
        return None if direct else relayed

    # -- reactor side ------------------------------------------------------------------
    def add_pending(self, conn: Connection) -> None:
        """Count a connection that has started its upgrade."""
        if conn.initiator:
            self.outbound_count += 1
        else:
            self.inbound_count += 1
        self.pending.add(conn)

    def peer_full(self, peer: PeerId | None) -> bool:
        """``peer`` already holds ``Limits.max_connections_per_peer`` (logs, throttled)."""
        with self._lock:
            count = len(self._by_peer.get(peer, ())) if peer is not None else 0
        if count < self._limits.max_connections_per_peer:
            return False
        if self._refusals.ready(("connections", peer)):
            log.warning("refusing a connection from %s: it has %d open already", peer,
                        count)
        return True

    def connection_ready(self, conn: Connection) -> None:
        """``conn`` finished its upgrade: list it and run the connection-ready hooks."""
        with self._lock:
            self._by_peer.setdefault(conn.remote_peer_id, []).append(conn)
        log.debug("connected to %s via %s (%s)", conn.remote_peer_id, conn.remote_addr,
                  conn.muxer_protocol)
        for hook in list(self.on_connection_ready):
            try:
                hook(conn)
            except Exception:
                log.exception("connection-ready hook %r failed", hook)

    def connection_closed(self, conn: Connection, was_open: bool) -> None:
        """``conn`` is gone: uncount it, and unlist it if it was open."""
        self.pending.discard(conn)
        if conn.initiator:
            self.outbound_count -= 1
        else:
            self.inbound_count -= 1
        if not was_open:
            return
        with self._lock:
            conns = self._by_peer.get(conn.remote_peer_id)
            if conns and conn in conns:
                conns.remove(conn)
                if not conns:
                    del self._by_peer[conn.remote_peer_id]

    def close_all(self, done: Future, grace: float) -> None:
        """Close every connection gracefully; abort what is left after ``grace``
        seconds; resolve ``done`` once all are gone."""
        for conn in self.snapshot() + list(self.pending):
            conn.close()
        self._await_closed(done, time.monotonic() + grace)

    def _await_closed(self, done: Future, deadline: float) -> None:
        left = self.snapshot()
        if left and time.monotonic() < deadline:
            self._reactor.call_later(0.01, lambda: self._await_closed(done, deadline))
            return
        for conn in left:
            conn.abort(ConnectionAbortedError("the node closed"))
        complete(done, None)
