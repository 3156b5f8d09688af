"""The muxer-facing half of a connection: one muxer session and its streams.

A :class:`MuxedSession` routes the muxer's events to its streams, in order and within
a per-turn work budget (events it cannot handle this turn wait in a backlog, and the
link stops reading meanwhile). Its helpers do the rest: ``stream_table`` (the stream
records, retiring them, idle detection), ``negotiation`` (opens and multistream per
stream), ``muxed_output`` (the flush queue into the muxer), ``collect`` (reactor-side
readers), ``stream_calls`` (what streams call), ``read_pressure`` (unread data).

It knows nothing of byte channels or the upgrade: it talks to the side below it, its
*link* (``interfaces.SessionLink``: a byte-channel ``Connection`` today, a QUIC
connection next), only through that small interface. Reactor thread only, except the
methods marked *thread-safe*, which only queue work for it.
"""

from __future__ import annotations

import collections
import itertools
import logging
import time
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from .collect import Collectors
from .engines import muxer_events as mev
from .futures import complete, fail
from .muxed_output import StreamOutput
from .negotiation import ContinueNegotiation, Negotiations
from .read_pressure import PAUSE_READING_AT, ReadPressure
from .stream_calls import StreamCalls
from .stream_table import StreamTable

if TYPE_CHECKING:
    from .engines.multistream import Agreed
    from .interfaces import ConnectionOwner, Muxer, SessionLink
    from .negotiation import Negotiation

log = logging.getLogger("libp2p_stream_sync.connection")

_OPEN, _CLOSING, _CLOSED = range(3)


class MuxedSession:
    """One muxer session's streams over a link (see the module docstring).

    ``conn`` is what the owner's callbacks and log lines name (the connection);
    streams call their thread-safe entry points on :attr:`calls` (``StreamCalls``).
    """

    __slots__ = ("backlog", "calls", "close_error", "closed_reason", "_collecting", "collectors",
                 "conn", "goaway_received", "_limits", "link", "muxer", "_negotiating",
                 "negotiations", "output", "owner", "peer", "pressure", "reactor",
                 "_resume_scheduled", "sent_watch", "_state", "streams", "table",
                 "tcp_flow_control", "terminated", "_timer", "_timer_when", "to_flush",
                 "_watchers", "window_blocked", "__weakref__")

    def __init__(self, conn: Any, owner: "ConnectionOwner", muxer: "Muxer",
                 link: "SessionLink", peer: Any) -> None:
        self.conn = conn
        self.owner = owner
        self.muxer = muxer
        self.link = link
        #: The remote's peer id.
        self.peer = peer
        self.reactor = owner.reactor
        self.goaway_received = False
        #: A copy of ``muxer.is_terminated`` for other threads.
        self.terminated = False
        self.closed_reason: str | None = None
        #: The error the session was aborted with.
        self.close_error: OSError | None = None
        self._state = _OPEN
        #: What the session's streams call (their ``conn``).
        self.calls = StreamCalls(self)
        self._limits = owner.limits
        #: Muxer events not handled yet (the turn's work budget ran out).
        #: (An empty tuple while nothing waits: an empty deque costs ~600 bytes.)
        self.backlog: collections.deque[Any] | tuple[()] = ()
        self._resume_scheduled = False
        self.table = StreamTable(self)
        #: The table's records: stream id -> record, for streams the application has.
        self.streams = self.table.records
        self._watchers = self.table.watchers
        self._timer: Any = None
        self._timer_when: float | None = None
        #: Muxers without flow control (mplex): pause reading so that TCP pushes back.
        self.tcp_flow_control = not muxer.has_flow_control
        #: Unread stream data and the pause of reading it causes.
        self.pressure = ReadPressure(
            self.reactor, owner.limits.max_connection_buffer, self.streams,
            interest_changed=link.interest_changed, peer_hung_up=link.peer_hung_up,
            reset_streams=self.table.reset_stalling, budget=owner.buffer_budget)
        self.pressure.peer = peer
        if self.tcp_flow_control:
            # Pause early enough that one more read cannot push a stream past the
            # muxer's buffer bound (mplex resets a stream beyond it).
            quarter = owner.limits.max_stream_buffer // 4
            self.pressure.pause_reading_at = min(PAUSE_READING_AT, quarter)
        self.negotiations = Negotiations(self)
        self._negotiating = self.negotiations.table
        self.output = StreamOutput(self)
        #: The output's queues (read by the link: is anything left to send?).
        self.to_flush = self.output.to_flush
        self.window_blocked = self.output.window_blocked
        self.sent_watch = self.output.sent_watch
        self.collectors = Collectors(self)
        self._collecting = self.collectors.table
        self.table.became_idle()

    @property
    def closed(self) -> bool:
        """The session was aborted."""
        return self._state == _CLOSED

    @property
    def is_open(self) -> bool:
        """Neither closing nor closed."""
        return self._state == _OPEN

    def usable_for_new_streams(self) -> bool:
        """*Thread-safe* (reads flags the reactor sets; never the engine): not
        closing, no GoAway received, the muxer session not over."""
        return self._state == _OPEN and not self.goaway_received and not self.terminated

    def open(self, protocol: str, future: Future, lazy: bool = False) -> None:
        """Open a stream and negotiate ``protocol``; resolve ``future`` (see
        ``Connection.open_stream``)."""
        self.negotiations.open(protocol, future, lazy)

    def stream_counts(self) -> dict[str, int]:
        """Approximate (read from any thread): ``streams`` open, ``negotiating``."""
        return {"streams": len(self.streams), "negotiating": len(self._negotiating)}

    def buffer_usage(self) -> dict[str, int]:
        """Reactor thread only: ``negotiations`` (partial multistream messages),
        ``unread`` (stream data the application has not read), ``deferred`` (input
        not handled yet), in bytes (see ``Connection.buffer_usage``)."""
        self.pressure.recount()
        deferred = sum(len(e.data) for e in self.backlog if type(e) is mev.DataReceived)
        return {"negotiations": self.negotiations.held, "unread": self.pressure.unread_total,
                "deferred": deferred}

    def request_flush(self) -> None:
        """Have the link flushed at the end of this reactor turn."""
        self.reactor.mark_dirty(self.link)

    # -- input ---------------------------------------------------------------------------
    def receive(self, data: Any) -> None:
        """Bytes for a byte-stream muxer (yamux, mplex)."""
        self.muxer_input(self.muxer.receive_data(data))

    def muxer_input(self, events: list) -> None:
        """Events the muxer returned for input or a timer (only these end a session:
        note it for :meth:`usable_for_new_streams`, which other threads call)."""
        if self.muxer.is_terminated:
            self.terminated = True
        self._handle_events(events)

    def _handle_events(self, events: list) -> None:
        """Act on muxer events in order. When the turn's work budget runs out, the rest
        waits in the backlog for the next turn (and the link stops reading meanwhile)."""
        if self.backlog:  # earlier events wait their turn: keep the order
            self.backlog.extend(events)
            return
        for i, event in enumerate(events):
            if not self._dispatch(event):
                if type(self.backlog) is tuple:
                    self.backlog = collections.deque()
                self.backlog.append(ContinueNegotiation(event.stream_id))
                self.backlog.extend(itertools.islice(events, i + 1, None))
                self.link.interest_changed()  # no more input until the backlog is done
                self._schedule_resume()
                return
            if self._state == _CLOSED:
                return

    def _dispatch(self, event: Any) -> bool:
        """Handle one event; False when a negotiation's input must go on next turn."""
        kind = type(event)
        if kind is mev.DataReceived:
            return self._on_data(event.stream_id, event.data)
        if kind is mev.SendWindowUpdated:
            stream = self.window_blocked.pop(event.stream_id, None)
            if stream is not None:
                self.to_flush[event.stream_id] = stream
        elif kind is mev.StreamOpened:
            self.on_inbound_stream(event.stream_id)
        elif kind is mev.StreamEnded:
            self._on_remote_end(event.stream_id)
        elif kind is mev.StreamReset:
            self._on_reset(event.stream_id, event.reason)
        elif kind is mev.GoAwayReceived:
            self.goaway_received = True
        elif kind is mev.SessionTerminated:
            self.link.session_ended(ConnectionAbortedError(f"session ended: {event.reason}"),
                                    event.error)
        elif kind is ContinueNegotiation:
            return self.negotiations.resume(event.stream_id)
        return True

    def output_resumed(self) -> None:
        """The link's output drained below its pause mark: go on with the backlog."""
        if self.backlog:
            self._schedule_resume()

    def _schedule_resume(self) -> None:
        if not self._resume_scheduled and not self.link.output_paused:
            self._resume_scheduled = True
            self.reactor.call_soon(self._resume_input)

    def _resume_input(self) -> None:
        """A new reactor turn: handle the backlog with a fresh budget."""
        self._resume_scheduled = False
        if self._state == _CLOSED or self.link.output_paused:
            return  # output draining below the mark schedules us again
        self.negotiations.new_turn()
        backlog = self.backlog
        try:
            while backlog:
                event = backlog.popleft()
                if not self._dispatch(event):
                    backlog.appendleft(ContinueNegotiation(event.stream_id))
                    self._schedule_resume()
                    break
                if self._state == _CLOSED:
                    return
        except Exception as exc:
            self.link.input_failed(exc)
            return
        if not backlog:
            if self.backlog is backlog:
                self.backlog = ()
            self.link.interest_changed()
        self.request_flush()

    def _on_data(self, sid: int, data: Any) -> bool:
        # A lazily opened stream is in streams while its negotiation finishes.
        neg = self._negotiating.get(sid) if self._negotiating else None
        if neg is None:
            record = self.streams.get(sid)
            if record is not None:
                stream = record.stream
                unread = stream.feed(data)
                pressure = self.pressure
                pressure.count(sid, unread)
                if self.tcp_flow_control and unread > pressure.pause_reading_at:
                    pressure.congest(sid, stream)
                if self._watchers:
                    self.table.notify(sid)
                return True
            self.consume(sid, len(data))
            collector = self._collecting.get(sid)
            if collector is not None:
                self.collectors.gathered(collector, data)
            return True  # else a stream we already let go of
        return self.negotiations.feed(sid, neg, data)

    def on_inbound_stream(self, sid: int) -> None:
        """The remote opened stream ``sid``: admit it and negotiate its protocol."""
        if not self.owner.admit_inbound_stream(self.peer):
            self.reset_muxer_stream(sid)  # over the peer's or the node's stream bound
            return
        self.table.count_inbound(sid)
        self.negotiations.start_inbound(sid)

    def negotiated(self, sid: int, neg: "Negotiation", result: "Agreed") -> None:
        """Stream ``sid`` agreed on a protocol: hand the stream to who waits for it."""
        if neg.stream is not None:  # lazy: the opener has had the stream all along
            if result.leftover:
                self.pressure.count(sid, neg.stream.feed(bytes(result.leftover)))
            return
        stream, record = self.table.add(sid, result.protocol)
        if result.leftover:
            self.pressure.count(sid, stream.feed(bytes(result.leftover)))
        if neg.remote_ended:
            self._on_remote_end(sid)
        if neg.future is not None:
            if not complete(neg.future, stream):
                self.table.reset(stream)  # the opener gave up meanwhile
        elif self.owner.inbound_stream(self.conn, stream):
            record.counted = True
        else:
            self.table.reset(stream)

    def _on_remote_end(self, sid: int) -> None:
        record = self.streams.get(sid)
        if record is None:
            if not self.collectors.ended(sid):
                neg = self._negotiating.get(sid)
                if neg is not None:
                    neg.remote_ended = True
            return
        record.stream.feed_eof()
        record.remote_ended = True
        if self._watchers:
            self.table.notify(sid)
        if record.fin_sent:
            self.table.forget(sid)

    def _on_reset(self, sid: int, reason: str) -> None:
        self.collectors.reset(sid, reason)
        neg = self.table.drop_negotiation(sid)
        if neg is not None:
            fail(neg.future, ConnectionResetError(f"stream reset during negotiation: {reason}"))
            if neg.stream is None:
                return
        record = self.streams.get(sid)
        if record is not None:
            record.stream.fail(ConnectionResetError(f"stream reset: {reason}"))
            if self._watchers:
                self.table.notify(sid)
            self.table.forget(sid)

    # -- muxer calls ---------------------------------------------------------------------
    def consume(self, sid: int, n: int) -> None:
        """Tell the muxer that ``n`` bytes of stream ``sid`` were taken (windows)."""
        if n > 0:
            try:
                self.muxer.consumed(sid, n, time.monotonic())
            except mev.StreamClosedError:
                pass

    def reset_muxer_stream(self, sid: int) -> None:
        """Reset stream ``sid`` on the wire (nothing if the muxer forgot it)."""
        try:
            self.muxer.reset_stream(sid)
        except mev.StreamClosedError:
            pass

    # -- output and timers ----------------------------------------------------------------
    def pull(self) -> None:
        """The link is flushing: start deferred opens, move stream output into the
        muxer (the link then takes the muxer's output); re-arm the muxer's timer."""
        negotiations = self.negotiations
        if negotiations.deferred:
            negotiations.start_deferred()
        if self.to_flush:
            self.output.pull()
        self.arm_timer()

    def arm_timer(self) -> None:
        """Re-arm the reactor timer at the muxer's ``get_timer()`` (``pull`` does; a
        link whose sending changes the muxer's timers, QUIC's pacing, calls it after)."""
        when = self.muxer.get_timer()
        if when == self._timer_when:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_when = when
        if when is not None:
            self._timer = self.reactor.call_later(max(0.0, when - time.monotonic()),
                                                  self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_when = None
        if self._state == _CLOSED:
            return
        self.muxer_input(self.muxer.handle_timer(time.monotonic()))
        self.request_flush()

    # -- closing --------------------------------------------------------------------------
    def begin_close(self) -> None:
        """Graceful close: no new streams (GoAway), no new writes; what streams have
        queued is still delivered."""
        self._state = _CLOSING
        for record in self.streams.values():
            record.stream.refuse_writes(ConnectionAbortedError("connection closed locally"))
        self.muxer.go_away(0)

    def abort(self, error: OSError) -> None:
        """The link is closed: every stream, opener, collector and waiter gets a copy
        of ``error``; what the session counted is given back."""
        self._state = _CLOSED
        self.closed_reason = str(error)
        self.close_error = error
        if self._timer is not None:
            self._timer.cancel()
        self.pressure.release()
        self.negotiations.close(error)
        self.table.close()
        if self.backlog:
            self.backlog.clear()  # a turn handling it stops
        self.backlog = ()
        self.negotiations.fail_deferred(error)
        self.collectors.close(error)
        self.table.fail_all(error, self.link.bytes_sent)
        self.output.close(error)
        self.calls = None  # type: ignore[assignment]  # its streams hold it: no cycle
