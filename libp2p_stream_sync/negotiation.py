"""Opening one muxer session's streams and negotiating their protocols (multistream).

:class:`Negotiations` opens our streams (behind the yamux ACK backlog) and runs one
multistream engine per stream still negotiating: a listener for each inbound stream
(bounded in time by ``Limits.negotiation_timeout``), a dialer for each stream we
open. It bounds what they make us hold: the bytes their
engines buffer (``Limits.max_negotiation_buffer`` per connection) and the answers one
reactor turn may produce (:data:`ANSWERS_PER_TURN`). Reactor thread only; used by
:class:`~.muxed.MuxedSession`, which turns an agreed negotiation into a stream.
"""

from __future__ import annotations

import collections
import logging
import time
import weakref
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from .engines import muxer_events as mev
from .engines.multistream import MultistreamDialer, MultistreamListener, NegotiationFailed
from .errors import ProtocolError, UnsupportedProtocol
from .futures import complete, fail

if TYPE_CHECKING:
    from .muxed import MuxedSession
    from .stream import Stream

log = logging.getLogger("libp2p_stream_sync.connection")

#: Negotiation answers (``ls``, ``na``) one connection may produce per reactor turn;
#: the rest of its input waits for the next turn, so a peer cannot monopolise the
#: reactor with cheap requests that cause expensive work.
ANSWERS_PER_TURN = 64 * 1024
#: Largest batch of answers one listener engine queues before we send them.
_ANSWER_STEP = 16 * 1024
#: The yamux spec's ACK backlog: at most this many of our new streams may wait for
#: the remote's ACK; further opens wait their turn (peers reset streams beyond it).
MAX_UNACKED_OUTBOUND = 256


class Negotiation:
    """A muxed stream whose protocol is still being negotiated."""

    __slots__ = ("engine", "future", "protocol", "remote_ended", "stream", "held")

    def __init__(self, engine: Any, future: Future | None = None,
                 protocol: str | None = None) -> None:
        self.engine = engine
        self.future = future  # outbound opens only
        self.protocol = protocol
        self.remote_ended = False
        #: Lazy opens: the stream already handed to the opener.
        self.stream: Stream | None = None
        #: Bytes the engine buffers, as last counted in the connection's total.
        self.held = 0


class ContinueNegotiation:
    """Backlog entry: an ``ls`` flood's answers were cut at the turn's budget."""

    __slots__ = ("stream_id",)

    def __init__(self, stream_id: int) -> None:
        self.stream_id = stream_id


class Negotiations:
    """One session's streams on their way to the application: opens waiting for the
    ACK backlog, and negotiations (their engines, the bytes they hold, the inbound
    ones' deadlines, the turn's answer budget)."""

    __slots__ = ("answer_budget", "_deadlines", "deferred", "held", "_limits", "_session", "table",
                 "_timer")

    def __init__(self, session: "MuxedSession") -> None:
        self._session = weakref.proxy(session)  # the session owns us: no cycle
        self._limits = session.owner.limits
        #: Stream id -> its negotiation (the session reads it on every data event).
        self.table: dict[int, Negotiation] = {}
        #: Bytes all engines buffer (partial multistream messages).
        self.held = 0
        #: Answer bytes this reactor turn may still produce.
        self.answer_budget = ANSWERS_PER_TURN
        #: Inbound negotiations in order of arrival -> when they time out.
        self._deadlines: dict[int, float] = {}
        self._timer: Any = None
        #: Opens waiting behind a full ACK backlog: (protocol, future, lazy).
        #: (An empty tuple while none waits: an empty deque costs ~600 bytes.)
        self.deferred: collections.deque[tuple[str, Future, bool]] | tuple[()] = ()

    def new_turn(self) -> None:
        """A new reactor turn: a fresh answer budget."""
        self.answer_budget = ANSWERS_PER_TURN

    def start_inbound(self, sid: int) -> None:
        """The remote opened stream ``sid``: answer as a multistream listener."""
        owner = self._session.owner
        engine = MultistreamListener(owner.protocol_supported,
                                     list_protocols=owner.supported_protocols,
                                     max_output=_ANSWER_STEP)
        self.table[sid] = Negotiation(engine)
        self._deadlines[sid] = time.monotonic() + self._limits.negotiation_timeout
        if self._timer is None:
            self._arm_timer()
        self._send(sid, engine.data_to_send())

    def open(self, protocol: str, future: Future, lazy: bool = False) -> None:
        """Open a stream and negotiate ``protocol``; resolve ``future`` (see
        ``Connection.open_stream``). Waits behind a full ACK backlog."""
        if future.cancelled():
            return
        session = self._session
        if not session.usable_for_new_streams():
            fail(future, ConnectionResetError(f"connection to {session.peer} "
                                              f"is closing: {session.closed_reason}"))
            return
        if self.deferred or self._ack_backlog_full():
            if type(self.deferred) is tuple:
                self.deferred = collections.deque()
            self.deferred.append((protocol, future, lazy))
            return
        self._start_open(protocol, future, lazy)

    def _ack_backlog_full(self) -> bool:
        return self._session.muxer.outbound_unacked >= MAX_UNACKED_OUTBOUND

    def start_deferred(self) -> None:
        """Start the deferred opens the ACK backlog has room for now."""
        deferred = self.deferred
        while deferred and not self._ack_backlog_full():
            protocol, future, lazy = deferred.popleft()
            if not future.cancelled():
                self._start_open(protocol, future, lazy)
        if not self.deferred:
            self.deferred = ()

    def _start_open(self, protocol: str, future: Future, lazy: bool) -> None:
        session = self._session
        try:
            sid = session.muxer.open_stream()
        except mev.StreamLimitError as exc:
            fail(future, ConnectionRefusedError(f"cannot open a stream: {exc}"))
            return
        engine = MultistreamDialer([protocol], lazy=lazy)
        neg = self.table[sid] = Negotiation(engine, future, protocol)
        self._send(sid, engine.data_to_send())
        session.request_flush()
        if lazy:
            neg.stream = stream = session.table.add(sid, protocol)[0]
            if not complete(future, stream):
                session.table.reset(stream)

    def resume(self, sid: int) -> bool:
        """Go on answering a negotiation cut at the last turn's budget (see feed)."""
        neg = self.table.get(sid)
        return self.feed(sid, neg, b"") if neg is not None else True

    def feed(self, sid: int, neg: Negotiation, data: Any) -> bool:
        """Feed a negotiation; False when its answers used up the turn's budget (the
        rest of its input waits in its engine for a :class:`ContinueNegotiation`)."""
        session = self._session
        engine = neg.engine
        while True:
            try:
                result = engine.receive_data(data)
            except ProtocolError as exc:
                session.consume(sid, len(data) + neg.held)
                if isinstance(exc, NegotiationFailed):
                    error: OSError = UnsupportedProtocol(neg.protocol, session.peer)
                else:
                    error = ConnectionAbortedError(f"stream negotiation failed: {exc}")
                self.fail(sid, neg, error)
                return True
            # Consumed: what the engine took as messages. Bytes it still buffers, and
            # the leftover that goes on to the stream, keep their window for now.
            leftover = len(result.leftover) if result is not None else 0
            session.consume(sid, len(data) + neg.held - engine.buffered - leftover)
            out = engine.data_to_send()
            if out:
                self.answer_budget -= len(out)
                if not self._send(sid, out):
                    return True
            if result is not None:
                self.pop(sid)
                session.negotiated(sid, neg, result)
                return True
            if not self._hold(sid, neg):
                return True
            if not getattr(engine, "awaiting_drain", False):  # dialers answer nothing
                return True
            if self.answer_budget <= 0 or session.link.output_paused:
                return False
            data = b""

    def _hold(self, sid: int, neg: Negotiation) -> bool:
        """Count what the negotiation's engine buffers; reset it beyond the bound."""
        held = neg.engine.buffered
        self.held += held - neg.held
        neg.held = held
        if self.held <= self._limits.max_negotiation_buffer:
            return True
        log.info("%r: resetting stream %d: negotiations hold more than %d bytes",
                 self._session.conn, sid, self._limits.max_negotiation_buffer)
        self.fail(sid, neg, ConnectionAbortedError(
            "stream negotiation reset: the connection's negotiations hold too much data"))
        return False

    def fail(self, sid: int, neg: Negotiation, error: OSError) -> None:
        """End a negotiation that will not become a stream: reset, tell who waits."""
        session = self._session
        session.table.drop_negotiation(sid)
        session.reset_muxer_stream(sid)
        fail(neg.future, error)
        if neg.stream is not None:
            neg.stream.fail(error)
            session.table.forget(sid)
        session.request_flush()

    def _send(self, sid: int, data: bytes) -> bool:
        """Send a negotiation message; False if that ended the negotiation."""
        session = self._session
        try:
            taken = session.muxer.send_data(sid, data)
        except mev.StreamClosedError:
            return True
        if taken == len(data):
            return True
        # The remote does not read its answers (a fresh stream's window is 256 KiB).
        neg = self.table.get(sid)
        if neg is not None:
            self.fail(sid, neg, ConnectionAbortedError(
                "stream negotiation reset: the remote does not read the answers"))
        else:
            session.reset_muxer_stream(sid)
        return False

    def _arm_timer(self) -> None:
        deadlines = self._deadlines
        if deadlines:
            first = next(iter(deadlines.values()))  # the oldest: all have one timeout
            self._timer = self._session.reactor.call_later(
                max(0.0, first - time.monotonic()), self._timed_out)

    def _timed_out(self) -> None:
        self._timer = None
        now = time.monotonic()
        expired = []
        for sid, deadline in self._deadlines.items():
            if deadline > now:
                break
            expired.append(sid)
        for sid in expired:
            neg = self.table.get(sid)
            if neg is None:
                self._deadlines.pop(sid, None)
                continue
            log.debug("%r: resetting stream %d: no protocol agreed within %.1f s",
                      self._session.conn, sid, self._limits.negotiation_timeout)
            self.fail(sid, neg, TimeoutError("stream negotiation timed out"))
        if not self._session.closed:
            self._arm_timer()

    def pop(self, sid: int) -> Negotiation | None:
        """Forget a negotiation (and what it counted toward the connection's bounds)."""
        neg = self.table.pop(sid, None)
        if neg is not None:
            self.held -= neg.held
            self._deadlines.pop(sid, None)
        return neg

    def abandon(self, future: Future) -> None:
        """The opener waiting on ``future`` gave up: reset its stream if still
        negotiating."""
        session = self._session
        for sid, neg in list(self.table.items()):
            if neg.future is future:
                session.table.drop_negotiation(sid)
                session.reset_muxer_stream(sid)
                session.request_flush()

    def close(self, error: OSError) -> None:
        """The session is over: fail every opener still waiting, forget all. (The
        deferred opens fail last: see :meth:`fail_deferred`.)"""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for neg in self.table.values():
            fail(neg.future, error)
        self.table.clear()
        self._deadlines.clear()
        self.held = 0

    def fail_deferred(self, error: OSError) -> None:
        """The session is over: fail the opens still waiting for the ACK backlog."""
        for _, future, _ in self.deferred:
            fail(future, error)
        if self.deferred:
            self.deferred.clear()  # a start_deferred loop in progress stops
        self.deferred = ()
