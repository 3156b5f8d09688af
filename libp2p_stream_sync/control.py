"""The application's handle on a node: :class:`Control` and :class:`IncomingStreams`."""

from __future__ import annotations

import logging
import queue
import threading
from typing import TYPE_CHECKING, Iterator, Protocol, Union

from multiaddr import Multiaddr


from .errors import OpenStreamError
from .identity import PeerId
from .logthrottle import LogThrottle
from .stream import Stream
from .timeouts import MAX_UNBOUNDED_WAIT, check_timeout, deadline_after

if TYPE_CHECKING:
    from .connection import Connection

log = logging.getLogger(__name__)

#: Default bound of the queue of accepted-but-not-yet-taken streams.
DEFAULT_ACCEPT_CAPACITY = 256
_CLOSED = object()


class StreamProtocol(str):
    """A protocol id such as ``"/echo/1.0.0"``; it must start with ``/``."""

    __slots__ = ()

    def __new__(cls, value: str) -> "StreamProtocol":
        if isinstance(value, StreamProtocol):
            return value
        if not isinstance(value, str):
            raise TypeError(f"protocol ids are str, not {type(value).__name__}")
        if not value.startswith("/"):
            raise ValueError(f"protocol id {value!r} must start with '/'")
        if len(value.encode()) > 1024 or "\n" in value:
            raise ValueError(f"protocol id {value!r} is too long or contains a newline")
        return super().__new__(cls, value)


PeerLike = Union[PeerId, str, Multiaddr]


class StreamHost(Protocol):
    """The node methods :class:`Control` and :class:`IncomingStreams` use (all public
    on :class:`~libp2p_stream_sync.node.Node`; control does not import the node)."""

    def register_acceptor(self, protocol: "StreamProtocol",
                          incoming: "IncomingStreams") -> None: ...

    def unregister_acceptor(self, protocol: str, incoming: "IncomingStreams") -> None: ...

    def peer_for_open(self, peer: PeerLike) -> PeerId: ...

    def connection_for(self, peer_id: PeerId, deadline: float,
                       direct: bool = False) -> "Connection": ...

    def open_on(self, conn: "Connection", protocol: "StreamProtocol", deadline: float,
                lazy: bool = False) -> Stream: ...


class IncomingStreams:
    """Streams that remote peers opened for one protocol, in arrival order.

    Iterate for ``(peer_id, stream)`` pairs; iteration ends when this object or the
    node is closed. The queue holds at most ``capacity`` streams. Once it is half
    full, a peer with ``max_per_peer`` streams queued (default: :func:`default_share`)
    gets no more, so one peer cannot fill it for everyone (an honest burst into an
    emptier queue still fits). A stream beyond these bounds is reset on the wire and
    counted in :attr:`dropped` (and logged at WARNING, at most once per protocol
    every few seconds).
    """

    def __init__(self, node: StreamHost, protocol: StreamProtocol, capacity: int,
                 max_per_peer: int | None = None) -> None:
        """Made by :meth:`Control.accept`, which registers it with ``node``."""
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        if max_per_peer is None:
            max_per_peer = default_share(capacity)
        if max_per_peer < 1:
            raise ValueError("max_per_peer must be at least 1")
        self.protocol = protocol
        self.max_per_peer = max_per_peer
        self.dropped = 0
        self._node = node
        self._queue: queue.Queue = queue.Queue(capacity)
        self._half = capacity // 2
        self._queued_per_peer: dict[PeerId, int] = {}
        self._drop_log = LogThrottle()  # WARNING lines about drops: a few per minute
        self._lock = threading.Lock()
        self._closed = False

    def __repr__(self) -> str:
        return f"<IncomingStreams {self.protocol} queued={self._queue.qsize()}>"

    @property
    def closed(self) -> bool:
        """True once :meth:`close` ran or the node closed."""
        return self._closed

    def get(self, timeout: float | None = None) -> tuple[PeerId, Stream]:
        """Wait for the next stream; raise ``TimeoutError`` or, once closed, ``EOFError``.

        ``timeout`` as for ``queue.Queue.get``: seconds, ``0`` or ``None`` (``inf`` is
        ``None``; ``nan`` and negative values raise ``ValueError``).
        """
        timeout = check_timeout(timeout)  # queue.get would hang on nan
        if self._closed:
            raise EOFError(f"incoming streams for {self.protocol} are closed")
        try:
            item = self._queue.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"no stream for {self.protocol} within {timeout} s") from None
        if item is _CLOSED:
            self._requeue_sentinel()
            raise EOFError(f"incoming streams for {self.protocol} are closed")
        self._taken(item[0])
        return item

    def _taken(self, peer: PeerId) -> None:
        with self._lock:
            left = self._queued_per_peer.get(peer, 0) - 1
            if left > 0:
                self._queued_per_peer[peer] = left
            else:
                self._queued_per_peer.pop(peer, None)

    def __iter__(self) -> Iterator[tuple[PeerId, Stream]]:
        return self

    def __next__(self) -> tuple[PeerId, Stream]:
        try:
            return self.get()
        except EOFError:
            raise StopIteration from None

    def close(self) -> None:
        """De-register the protocol now and reset the streams still queued."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            leftovers = []
            while True:
                try:
                    leftovers.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            self._queued_per_peer.clear()
            self._requeue_sentinel()
        self._node.unregister_acceptor(self.protocol, self)
        for item in leftovers:
            if item is not _CLOSED:
                item[1].reset()

    def _requeue_sentinel(self) -> None:
        try:
            self._queue.put_nowait(_CLOSED)
        except queue.Full:
            pass  # a sentinel or a stream is there; get() checks _closed first

    def __enter__(self) -> "IncomingStreams":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def offer(self, peer: PeerId, stream: Stream) -> bool:
        """Reactor side (the node's protocol registry calls it): queue a negotiated
        stream; False when closed or full (the stream is then reset)."""
        with self._lock:
            if self._closed:
                return False
            queued = self._queued_per_peer.get(peer, 0)
            # A full queue is named first: with a share as big as the queue, both hold.
            queue_full = self._queue.full()
            over_share = queued >= self.max_per_peer and self._queue.qsize() >= self._half
            if not (queue_full or over_share):
                try:
                    self._queue.put_nowait((peer, stream))
                    self._queued_per_peer[peer] = queued + 1
                    return True
                except queue.Full:
                    queue_full = True
            self.dropped += 1
            dropped = self.dropped
        why = "the queue" if queue_full else "its share"
        if self._drop_log.ready(None):
            log.warning("accept queue for %s: %s is full, dropped a stream from %s "
                        "(%d dropped so far)", self.protocol, why, peer, dropped)
        else:
            log.debug("accept queue for %s: %s is full, dropped a stream from %s "
                      "(%d dropped so far)", self.protocol, why, peer, dropped)
        return False


#: Queues and pools up to this size are not shared out between peers by default.
MIN_DEFAULT_SHARE = 16


def default_share(capacity: int) -> int:
    """One peer's default share of a queue or pool of ``capacity``: a quarter of it,
    but at least :data:`MIN_DEFAULT_SHARE` (or all of a smaller one)."""
    return min(capacity, max(MIN_DEFAULT_SHARE, capacity // 4))


class Control:
    """Opens and accepts streams on a node. Cheap to clone, safe from many threads."""

    __slots__ = ("_node",)

    def __init__(self, node: StreamHost) -> None:
        """A control for ``node``; applications get one from :meth:`Node.new_control`."""
        self._node = node

    def clone(self) -> "Control":
        """Another control for the same node (``copy.copy`` does the same)."""
        return Control(self._node)

    __copy__ = clone

    def accept(self, protocol: str, *, capacity: int = DEFAULT_ACCEPT_CAPACITY,
               max_per_peer: int | None = None) -> IncomingStreams:
        """Start accepting streams for ``protocol``.

        At most ``capacity`` streams wait to be taken; once half of them wait, at
        most ``max_per_peer`` from one peer (default: a quarter of ``capacity``, at
        least 16). Raises
        :class:`AlreadyRegistered` while another :class:`IncomingStreams` for the same
        protocol is open.
        """
        proto = StreamProtocol(protocol)
        incoming = IncomingStreams(self._node, proto, capacity, max_per_peer)
        self._node.register_acceptor(proto, incoming)
        return incoming

    def open_stream(self, peer: PeerLike, protocol: str, *, timeout: float | None = 10.0,
                    lazy: bool = False, require_direct: bool = False) -> Stream:
        """Open a stream to ``peer`` and negotiate ``protocol``.

        ``peer`` is a :class:`PeerId` or a peer id string such as ``"12D3KooW..."`` (an
        open connection is used, else its known addresses are dialed), or a multiaddr
        ending in ``/p2p/<id>`` (the remote must prove that id). A multiaddr without
        ``/p2p/`` raises ``ValueError``: use :meth:`Node.dial` to learn who is there.

        ``timeout`` is seconds, ``0`` (fails at once: an open needs a round trip) or
        ``None`` (no deadline of yours; each connection attempt is still bounded by
        ``Limits.handshake_timeout`` and the whole call by
        :data:`~libp2p_stream_sync.timeouts.MAX_UNBOUNDED_WAIT`, so it never hangs).
        ``inf`` means ``None``; ``nan`` and negative values raise ``ValueError``.

        Raises ``ValueError`` for caller mistakes (a malformed or unsupported address),
        :class:`UnsupportedProtocol` when the peer answers ``na`` and
        :class:`OpenStreamError` for every other failure; never waits past ``timeout``.
        When the call fails after the stream was started, that stream is reset.

        ``lazy=True`` saves a round trip (multistream-select's 0-RTT mode, which
        go-libp2p uses too): the stream is returned as soon as the request is sent,
        writes may follow at once, and a refusal surfaces as ``UnsupportedProtocol``
        from the stream's next read or write instead of from this call.

        A direct connection is preferred to a relayed one (``/p2p-circuit``: limited in
        time and bytes by the relay). ``require_direct=True`` never opens on a relayed
        one: :class:`OpenStreamError` (``kind`` ``"relayed"``) when the peer is
        reachable only through a relay (hole punching, README, may change that).
        """
        proto = StreamProtocol(protocol)
        seconds = check_timeout(timeout)
        peer_id = self._node.peer_for_open(peer)
        if seconds == 0:
            raise OpenStreamError(f"opening {proto} to {peer_id} timed out at once: "
                                  f"the timeout is 0", "timeout")
        deadline = deadline_after(seconds, cap=MAX_UNBOUNDED_WAIT)
        conn = self._node.connection_for(peer_id, deadline, require_direct)
        return self._node.open_on(conn, proto, deadline, lazy)
