"""The protocol table: which protocols a node accepts and who takes their streams.

Two kinds of entries: an application's accept queue (an object with
``offer(peer, stream) -> bool``, :class:`~libp2p_stream_sync.control.IncomingStreams`)
and an internal handler ``handler(conn, stream)`` that runs on the reactor thread
(the built-in protocols). Inbound streams are counted per (peer, protocol) here, so
the ``Limits.max_inbound_streams_per_protocol_per_peer`` bound lives in one place.

Threading: changes (:meth:`add`, :meth:`add_internal`, :meth:`remove`) are made under
the owner's lock (the node's ``_lock``); lookups (:meth:`supports`, :meth:`protocols`,
:meth:`deliver`) run on the reactor without a lock (a dict read is atomic). The
inbound-stream counts are reactor-thread only.
"""

from __future__ import annotations

import functools
import logging
from typing import Any, Callable, Protocol

from .errors import AlreadyRegistered

#: The node's logger: these lines were the node's before the table moved here.
log = logging.getLogger("libp2p_stream_sync.node")


class Acceptor(Protocol):
    """An application's queue of inbound streams for one protocol."""

    def offer(self, peer: Any, stream: Any) -> bool:
        """Queue ``stream``; False when closed or full."""


InternalHandler = Callable[[Any, Any], None]


class ProtocolRegistry:
    """Protocol id -> acceptor or internal handler, plus the inbound-stream counts."""

    def __init__(self, max_streams_per_peer: int) -> None:
        self._entries: dict[str, Acceptor | InternalHandler] = {}
        self._max_per_peer = max_streams_per_peer
        #: (peer, protocol) -> inbound streams open; reactor thread only.
        self._inbound: dict[tuple[Any, str], int] = {}

    def add(self, protocol: str, acceptor: Acceptor) -> None:
        """Accept ``protocol`` into ``acceptor``; AlreadyRegistered if it is taken."""
        if protocol in self._entries:
            raise AlreadyRegistered(protocol)
        self._entries[protocol] = acceptor

    def add_internal(self, protocol: str, handler: InternalHandler) -> None:
        """Serve ``protocol`` with ``handler(conn, stream)`` on the reactor thread."""
        self._entries[protocol] = handler

    def remove(self, protocol: str, acceptor: Acceptor) -> bool:
        """Stop accepting ``protocol`` if ``acceptor`` still holds it; True if it did."""
        if self._entries.get(protocol) is not acceptor:
            return False
        del self._entries[protocol]
        return True

    def discard(self, protocol: str) -> None:
        """Forget ``protocol`` whoever serves it (tests simulate peers without it)."""
        self._entries.pop(protocol, None)

    def inbound_counts(self) -> dict[tuple[Any, str], int]:
        """A copy of the open inbound streams per (peer, protocol)."""
        return dict(self._inbound)

    def acceptors(self) -> list[Acceptor]:
        """The application queues registered now."""
        return [v for v in self._entries.values() if hasattr(v, "offer")]

    def supports(self, protocol: str) -> bool:
        """Whether ``protocol`` is registered."""
        return protocol in self._entries

    def protocols(self) -> tuple[str, ...]:
        """Our protocols, sorted. The reactor calls this for every ``ls`` a peer sends,
        so it takes no lock and sorts only when the table changed (the answer is
        cached by content: registering or unregistering a protocol invalidates it)."""
        return _sorted_protocols(tuple(self._entries))  # tuple(dict) is atomic

    def deliver(self, conn: Any, stream: Any) -> bool:
        """Reactor: hand a negotiated inbound stream to its taker; False: refused.

        A taken stream counts toward its peer's bound until :meth:`finished`."""
        taker = self._entries.get(stream.protocol)
        if taker is None:
            return False
        key = (stream.peer_id, stream.protocol)
        count = self._inbound.get(key, 0)
        if count >= self._max_per_peer:
            log.info("resetting a %s stream from %s: %d are open already", stream.protocol,
                     stream.peer_id, count)
            return False
        offer = getattr(taker, "offer", None)
        if offer is not None:
            if not offer(stream.peer_id, stream):
                return False
        else:
            taker(conn, stream)
        self._inbound[key] = count + 1
        return True

    def finished(self, stream: Any) -> None:
        """Reactor: an inbound stream counted by :meth:`deliver` is gone."""
        key = (stream.peer_id, stream.protocol)
        count = self._inbound.get(key, 0) - 1
        if count > 0:
            self._inbound[key] = count
        else:
            self._inbound.pop(key, None)


@functools.lru_cache(maxsize=16)
def _sorted_protocols(protocols: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(sorted(protocols))
