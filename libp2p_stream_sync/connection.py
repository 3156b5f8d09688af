"""One connection over a byte channel (TCP, WebSocket): the upgrade, then muxed streams.

Upgrade (engines/upgrade.py): multistream-select (``/noise`` or ``/tls/1.0.0``) → the
security handshake → muxer (early, in the Noise payload or TLS ALPN, else
multistream-select over the secure channel) → open.

Everything here runs on the reactor thread, except the four methods marked
*thread-safe*, which only queue work for it.
"""

from __future__ import annotations

import collections
import errno
import itertools
import logging
import select
import selectors
import socket
import time
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, Callable

from .engines import muxer_events as mev
from .engines.multistream import (Agreed, MultistreamDialer, MultistreamListener,
                                  NegotiationFailed)
from .engines.upgrade import Upgrade
from .errors import DialError, ProtocolError, UnsupportedProtocol
from .futures import complete, fail
from .read_pressure import PAUSE_READING_AT, ReadPressure
from .stream import Stream

if TYPE_CHECKING:
    from .identity import PeerId
    from .interfaces import ByteChannel, ConnectionOwner, Muxer

log = logging.getLogger(__name__)

YAMUX = "/yamux/1.0.0"
MPLEX = "/mplex/6.7.0"

#: Reads once the connection is secure go straight into the Noise receive buffer,
#: sized between these bounds: it doubles while reads fill it, halves while they
#: use little of it, and is dropped when drained, so idle connections hold none.
_RECV_BUFFER = 256 * 1024
_MIN_RECV_BUFFER = 8 * 1024
#: Stop taking data from streams while this much ciphertext waits for the socket.
_WIRE_HIGH_WATER = 1024 * 1024
#: Stop reading the socket while this much output waits for it: what a peer that
#: does not read makes us answer (pongs, negotiation answers, resets) is bounded.
#: Stream data alone stays below (at most _WIRE_HIGH_WATER plus one chunk), so two
#: nodes writing to each other can never both stop reading; reading resumes once
#: the queue is back under _WIRE_HIGH_WATER.
_OUTPUT_PAUSE_AT = 2 * _WIRE_HIGH_WATER
#: Negotiation answers (``ls``, ``na``) one connection may produce per reactor turn;
#: the rest of its input waits for the next turn, so a peer cannot monopolise the
#: reactor with cheap requests that cause expensive work.
_ANSWERS_PER_TURN = 64 * 1024
#: Largest batch of answers one listener engine queues before we send them.
_ANSWER_STEP = 16 * 1024
#: Largest piece of one stream's data handed to the muxer at once.
_STREAM_CHUNK = 256 * 1024
_MAX_SENDMSG_BUFFERS = 64
#: The yamux spec's ACK backlog: at most this many of our new streams may wait for
#: the remote's ACK; further opens wait their turn (peers reset streams beyond it).
_MAX_UNACKED_OUTBOUND = 256

_READ = selectors.EVENT_READ
_WRITE = selectors.EVENT_WRITE

_CONNECTING, _UPGRADING, _OPEN, _CLOSED, _CLOSING = range(5)
_MUXING = (_OPEN, _CLOSING)
#: How long a gracefully closing connection may take to deliver what was written.
_LINGER = 2.0


class _Negotiation:
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


class _StreamRecord:
    """The reactor's side of one open stream; the :class:`Stream` holds the
    application's side. Retired in one place, :meth:`Connection._forget`."""

    __slots__ = ("stream", "fin_sent", "remote_ended", "close_timer", "counted")

    def __init__(self, stream: Stream) -> None:
        self.stream = stream
        self.fin_sent = False  # we sent our FIN
        self.remote_ended = False  # the remote sent its FIN
        #: Resets a stream we closed whose remote side never finishes.
        self.close_timer: Any = None
        #: Counted in the owner's inbound-streams-per-peer-and-protocol limit.
        self.counted = False


class _ContinueNegotiation:
    """Backlog entry: an ``ls`` flood's answers were cut at the turn's budget."""

    __slots__ = ("stream_id",)

    def __init__(self, stream_id: int) -> None:
        self.stream_id = stream_id


class _Collector:
    """A reactor-side reader: gathers one stream's bytes for a ``collect`` call."""

    __slots__ = ("limit", "callback", "data", "timer", "sid", "done")

    def __init__(self, limit: int, callback: Callable[[bytes | None, BaseException | None],
                                                      None]) -> None:
        self.limit = limit
        self.callback = callback
        self.data = bytearray()
        self.timer: Any = None
        self.sid: int | None = None
        self.done = False

    def finish(self, data: bytes | None, error: BaseException | None) -> None:
        if self.done:
            return
        self.done = True
        if self.timer is not None:
            self.timer.cancel()
        try:
            self.callback(data, error)
        except Exception:
            log.exception("collect callback %r failed", self.callback)


class Connection:
    """A connection to one peer. Created by the node on the reactor thread."""

    def __init__(self, owner: "ConnectionOwner", sock: "ByteChannel", *, initiator: bool,
                 remote_addr: tuple, transport: Any, expected_peer: "PeerId | None" = None,
                 on_ready: Callable[["Connection", BaseException | None], None]) -> None:
        #: Who this connection calls up (the node), see interfaces.ConnectionOwner.
        self.owner = owner
        #: The byte channel (interfaces.ByteChannel): a TCP socket, or a channel of
        #: another byte-stream transport (e.g. WebSocket) wrapping one.
        self.sock = sock
        #: The channel may hold output of its own (framing, pongs): it has
        #: ``wants_write`` and ``flush()``. A plain socket holds none.
        self._channel_output = not isinstance(sock, socket.socket)
        self.initiator = initiator
        self.remote_addr = remote_addr
        #: The transport that made the channel (``remote_multiaddr`` names the peer).
        self.transport = transport
        self.remote_peer_id: PeerId | None = None
        #: The agreed security protocol (``/noise``, ``/tls/1.0.0``) once secure.
        self.security_protocol: str | None = None
        self.muxer_protocol: str | None = None
        self.goaway_received = False
        #: Set by a protocol that needs the connection while it has no stream (a relay
        #: reservation): the idle timeout then leaves it open.
        self.keep_alive = False
        self._expected_peer = expected_peer
        self._on_ready: Callable | None = on_ready
        self._reactor = owner.reactor
        self._state = _CONNECTING if initiator else _UPGRADING
        self._recv_size = _MIN_RECV_BUFFER
        self._max_recv_size = _RECV_BUFFER
        self._wire: collections.deque[Any] = collections.deque()
        self._wire_len = 0
        self._wire_sent_total = 0  # bytes written to the socket since the start
        #: Streams waiting in flush() until the wire count reaches their mark.
        self._sent_watch: dict[Stream, int] = {}
        self._close_error: OSError | None = None
        self._want_write = False
        self._interest = 0
        self._tcp_flow_control = False  # set for muxers without their own windows
        self._output_paused = False
        #: Muxer events not handled yet (the turn's work budget ran out).
        self._backlog: collections.deque[Any] = collections.deque()
        self._resume_scheduled = False
        self._answer_budget = _ANSWERS_PER_TURN
        self._negotiation_held = 0
        #: Inbound negotiations in order of arrival -> when they time out.
        self._negotiation_deadlines: dict[int, float] = {}
        self._negotiation_timer: Any = None
        self._idle_timer: Any = None
        self._linger_timer: Any = None
        self._write_shut = False
        self._security_closed = False  # the secure transport's goodbye is queued
        self._idle_since = 0.0
        self._upgrade: Upgrade | None = None
        self._muxer_terminated = False  # a copy of muxer.is_terminated for other threads
        self._transport: Any = None
        self._muxer: "Muxer" = None  # type: ignore[assignment]  # set once open
        self._streams: dict[int, _StreamRecord] = {}
        #: Unread stream data and the pause of reading it causes.
        self._pressure = ReadPressure(
            self._reactor, owner.limits.max_connection_buffer, self._streams,
            interest_changed=self._set_interest, peer_hung_up=lambda: _hung_up(self.sock),
            reset_streams=self._reset_stalling_streams, budget=owner.buffer_budget)
        self._negotiating: dict[int, _Negotiation] = {}
        self._to_flush: dict[int, Stream] = {}
        self._window_blocked: dict[int, Stream] = {}
        self._deferred_opens: collections.deque[tuple[str, Future, bool]] = \
            collections.deque()
        self._collecting: dict[int, _Collector] = {}
        #: Inbound streams counted in the owner's per-peer and node-wide stream bounds
        #: (from the remote's SYN until negotiation fails or the stream is retired).
        self._inbound_live: set[int] = set()
        #: Reactor-side readers of inbound streams (see watch_stream).
        self._watchers: dict[int, Callable[[], None]] = {}
        self._timer: Any = None
        self._timer_when: float | None = None
        self._deadline_timer: Any = None
        self.closed_reason: str | None = None

    def __repr__(self) -> str:
        return f"<Connection {self.remote_peer_id or '?'} {self.remote_addr}>"

    @property
    def relayed(self) -> bool:
        """True when the connection runs through a circuit relay (``/p2p-circuit``)."""
        return bool(getattr(self.transport, "relayed", False))

    # -- health ------------------------------------------------------------------------
    def usable_for_new_streams(self) -> bool:
        """*Thread-safe* (reads three flags the reactor sets; never the engine):
        open, no GoAway received, the muxer session not over."""
        return (self._state == _OPEN and not self.goaway_received
                and not self._muxer_terminated)

    def stream_counts(self) -> dict[str, int]:
        """Approximate (read from any thread): ``streams`` open, ``negotiating``."""
        return {"streams": len(self._streams), "negotiating": len(self._negotiating)}

    def buffer_usage(self) -> dict[str, int]:
        """Reactor thread only: bytes this connection holds because of its peer.

        ``output``: ciphertext waiting for the socket; ``negotiations``: partial
        multistream messages; ``unread``: data its streams hold that the application
        has not read; ``deferred``: input received but not handled yet.
        """
        self._pressure.recount()
        deferred = sum(len(e.data) for e in self._backlog if type(e) is mev.DataReceived)
        return {"output": self._wire_len, "negotiations": self._negotiation_held,
                "unread": self._pressure.unread_total, "deferred": deferred}

    def buffered_bytes(self) -> int:
        """Reactor thread only: the sum of :meth:`buffer_usage`."""
        return sum(self.buffer_usage().values())

    # -- start ---------------------------------------------------------------------------
    def start(self, handshake_timeout: float) -> None:
        """Register the socket and begin (connecting, or the listener side of the upgrade)."""
        self._deadline_timer = self._reactor.call_later(handshake_timeout,
                                                        self._handshake_timed_out)
        if self._state == _CONNECTING:
            self._want_write = True
        self._set_interest()
        if self._state != _CONNECTING:
            self._begin_upgrade()

    def _handshake_timed_out(self) -> None:
        if self._state != _OPEN:
            self.abort(TimeoutError("connection upgrade timed out"))

    def _connected(self) -> None:
        err = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            self.abort(ConnectionRefusedError(err, f"connect to {self.remote_addr}: "
                                              f"{errno.errorcode.get(err, err)}"))
            return
        self._state = _UPGRADING
        self._want_write = False
        self._set_interest()
        self._begin_upgrade()

    def _begin_upgrade(self) -> None:
        owner = self.owner
        self._upgrade = Upgrade(owner.keypair, initiator=self.initiator,
                                expected_peer=self._expected_peer, security=owner.security,
                                muxers=owner.muxers, identities=owner.security_identities)
        self._take_upgrade_output()

    # -- socket events ---------------------------------------------------------------------
    def on_readable(self) -> None:
        self._answer_budget = _ANSWERS_PER_TURN
        for _ in range(4):
            transport = self._transport
            # Once secure, receive straight into the Noise engine's buffer: frames
            # split across reads are then never copied.
            size = self._recv_size
            buffer = transport.get_buffer(size) if transport else self._reactor.scratch
            try:
                n = self.sock.recv_into(buffer, size)
            except (BlockingIOError, InterruptedError):
                if self._channel_output and self.sock.wants_write:
                    self._reactor.mark_dirty(self)  # e.g. a WebSocket pong to send
                return
            except OSError as exc:
                self.abort(exc)
                return
            finally:
                if transport:
                    buffer.release()
            if n == 0:
                self._remote_closed()
                return
            try:
                if transport:
                    plain = transport.buffer_updated(n)
                    self._adapt_recv_size(n, transport)
                    if plain:
                        self._secure_received(plain)
                    self._reactor.mark_dirty(self)
                    if getattr(transport, "peer_closed", False):  # TLS close_notify
                        self._remote_closed()
                        return
                else:
                    self._received(memoryview(self._reactor.scratch)[:n])
            except Exception as exc:
                self._input_failed(exc)
                return
            if self._state == _CLOSED or n < size or not self._reading_allowed():
                return
            if self._state in _MUXING and self._answered_much():
                return  # e.g. a ping flood: other connections' turn

    def _answered_much(self) -> bool:
        """Move the muxer's answers to this turn's input (pongs, resets) to the wire;
        True when they are a turn's worth."""
        out = self._muxer.data_to_send()
        if not out:
            return False
        self._queue_plain(self._transport.encrypt(out))
        return len(out) >= _ANSWERS_PER_TURN

    def _input_failed(self, exc: Exception) -> None:
        """(In an ``except`` block.) Handling the peer's input raised: close."""
        if isinstance(exc, (ProtocolError, DialError)):
            log.info("%r: closing after a protocol error: %s", self, exc)
            self.abort(ConnectionAbortedError(f"protocol error: {exc}"), cause=exc)
        else:  # a bug of ours must cost one connection, not the node
            log.exception("%r: internal error while handling input", self)
            self.abort(ConnectionAbortedError(f"internal error: {exc!r}"), cause=exc)

    def _adapt_recv_size(self, n: int, transport: Any) -> None:
        size = self._recv_size
        if n >= size:
            self._recv_size = min(size * 2, self._max_recv_size)
        else:
            if n < size >> 3 and size > _MIN_RECV_BUFFER:
                self._recv_size = size >> 1
            transport.trim(self._recv_size)  # drained: keep no big idle buffer

    def on_writable(self) -> None:
        if self._state == _CONNECTING:
            self._connected()
        if self._channel_output:
            try:
                self.sock.flush()
            except (BlockingIOError, InterruptedError):
                pass
            except OSError as exc:  # the peer reset the channel: end it, do not spin
                self.abort(exc)
                return
        self.flush()

    def _remote_closed(self) -> None:
        if self._state == _CLOSING:  # the remote answered our close
            self.abort(ConnectionAbortedError("connection closed locally"))
            return
        if self._state == _OPEN:
            log.debug("%r: remote closed the connection", self)
        self.abort(ConnectionResetError("connection closed by the remote"))

    # -- input pipeline ---------------------------------------------------------------------
    def _received(self, data: memoryview) -> None:
        """Bytes that arrived before the connection was secured."""
        if self._state == _UPGRADING:
            upgrade = self._upgrade
            assert upgrade is not None
            upgrade.receive_data(data)
            self._upgrade_progressed(upgrade)
        self._reactor.mark_dirty(self)

    def _secure_received(self, plain: Any) -> None:
        if self._state in _MUXING:
            self._muxer_input(self._muxer.receive_data(plain))
        elif self._state == _UPGRADING:
            upgrade = self._upgrade
            assert upgrade is not None
            upgrade.receive_plain(plain)
            self._upgrade_progressed(upgrade)

    def _upgrade_progressed(self, upgrade: Upgrade) -> None:
        """Send what the upgrade answered; once secure, read through its transport;
        once a muxer is agreed, open."""
        self._take_upgrade_output()
        if self._transport is None and upgrade.transport is not None:
            self._transport = upgrade.transport
            self.remote_peer_id = upgrade.remote_peer_id
            self._pressure.peer = upgrade.remote_peer_id
            self.security_protocol = upgrade.security_protocol
        if upgrade.complete:
            self._upgrade = None
            self._start_muxer(upgrade.muxer_protocol)
            if upgrade.leftover and self._state in _MUXING:
                self._muxer_input(self._muxer.receive_data(upgrade.leftover))

    def _take_upgrade_output(self) -> None:
        for chunk in self._upgrade.data_to_send():
            self._queue_plain(chunk)

    def _start_muxer(self, protocol: str) -> None:
        self.muxer_protocol = protocol
        self._muxer = self.owner.make_muxer(protocol, self.initiator)
        self._tcp_flow_control = not self._muxer.has_flow_control
        if self._tcp_flow_control:
            # Pause early enough that one more read cannot push a stream past the
            # muxer's buffer bound (mplex resets a stream beyond it).
            quarter = self.owner.limits.max_stream_buffer // 4
            self._pressure.pause_reading_at = min(PAUSE_READING_AT, quarter)
            self._max_recv_size = min(_RECV_BUFFER, quarter)
        self._state = _OPEN
        if self._deadline_timer is not None:
            self._deadline_timer.cancel()
            self._deadline_timer = None
        log.debug("%r: open with %s", self, protocol)
        self._became_idle()
        on_ready, self._on_ready = self._on_ready, None
        if on_ready is not None:
            on_ready(self, None)

    # -- muxer events ----------------------------------------------------------------------
    def _muxer_input(self, events: list) -> None:
        """Events the muxer returned for input or a timer (only these end a session:
        note it for :meth:`usable_for_new_streams`, which other threads call)."""
        if self._muxer.is_terminated:
            self._muxer_terminated = True
        self._handle_events(events)

    def _handle_events(self, events: list) -> None:
        """Act on muxer events in order. When the turn's work budget runs out, the rest
        waits in the backlog for the next turn (and the socket is not read meanwhile)."""
        if self._backlog:  # earlier events wait their turn: keep the order
            self._backlog.extend(events)
            return
        for i, event in enumerate(events):
            if not self._dispatch(event):
                self._backlog.append(_ContinueNegotiation(event.stream_id))
                self._backlog.extend(itertools.islice(events, i + 1, None))
                self._input_deferred()
                return
            if self._state == _CLOSED:
                return

    def _dispatch(self, event: Any) -> bool:
        """Handle one event; False when a negotiation's input must go on next turn."""
        kind = type(event)
        if kind is mev.DataReceived:
            return self._on_data(event.stream_id, event.data)
        if kind is mev.SendWindowUpdated:
            stream = self._window_blocked.pop(event.stream_id, None)
            if stream is not None:
                self._to_flush[event.stream_id] = stream
        elif kind is mev.StreamOpened:
            self._on_inbound_stream(event.stream_id)
        elif kind is mev.StreamEnded:
            self._on_remote_end(event.stream_id)
        elif kind is mev.StreamReset:
            self._on_reset(event.stream_id, event.reason)
        elif kind is mev.GoAwayReceived:
            self.goaway_received = True
        elif kind is mev.SessionTerminated:
            self._flush_wire_now()
            self.abort(ConnectionAbortedError(f"session ended: {event.reason}"),
                       cause=event.error)
        elif kind is _ContinueNegotiation:
            neg = self._negotiating.get(event.stream_id)
            if neg is not None:
                return self._negotiate(event.stream_id, neg, b"")
        return True

    def _input_deferred(self) -> None:
        self._set_interest()  # no more input until the backlog is done
        self._schedule_resume()

    def _schedule_resume(self) -> None:
        if not self._resume_scheduled and not self._output_paused:
            self._resume_scheduled = True
            self._reactor.call_soon(self._resume_input)

    def _resume_input(self) -> None:
        """A new reactor turn: handle the backlog with a fresh budget."""
        self._resume_scheduled = False
        if self._state not in _MUXING or self._output_paused:
            return  # output draining below the mark schedules us again
        self._answer_budget = _ANSWERS_PER_TURN
        backlog = self._backlog
        try:
            while backlog:
                event = backlog.popleft()
                if not self._dispatch(event):
                    backlog.appendleft(_ContinueNegotiation(event.stream_id))
                    self._schedule_resume()
                    break
                if self._state == _CLOSED:
                    return
        except Exception as exc:
            self._input_failed(exc)
            return
        if not backlog:
            self._set_interest()
        self._reactor.mark_dirty(self)

    def _on_data(self, sid: int, data: Any) -> bool:
        # A lazily opened stream is in _streams while its negotiation finishes.
        neg = self._negotiating.get(sid) if self._negotiating else None
        if neg is None:
            record = self._streams.get(sid)
            if record is not None:
                stream = record.stream
                unread = stream.feed(data)
                pressure = self._pressure
                pressure.count(sid, unread)
                if self._tcp_flow_control and unread > pressure.pause_reading_at:
                    pressure.congest(sid, stream)
                if self._watchers:
                    self._notify_watcher(sid)
                return True
            self._muxer_consumed(sid, len(data))
            collector = self._collecting.get(sid)
            if collector is not None:
                self._collected(collector, data)
            return True  # else a stream we already let go of
        return self._negotiate(sid, neg, data)

    def _negotiate(self, sid: int, neg: _Negotiation, data: Any) -> bool:
        """Feed a negotiation; False when its answers used up the turn's budget (the
        rest of its input waits in its engine for a ``_ContinueNegotiation``)."""
        engine = neg.engine
        while True:
            try:
                result = engine.receive_data(data)
            except ProtocolError as exc:
                self._muxer_consumed(sid, len(data) + neg.held)
                if isinstance(exc, NegotiationFailed):
                    error: OSError = UnsupportedProtocol(neg.protocol, self.remote_peer_id)
                else:
                    error = ConnectionAbortedError(f"stream negotiation failed: {exc}")
                self._negotiation_failed(sid, neg, error)
                return True
            # Consumed: what the engine took as messages. Bytes it still buffers, and
            # the leftover that goes on to the stream, keep their window for now.
            leftover = len(result.leftover) if result is not None else 0
            self._muxer_consumed(sid, len(data) + neg.held - engine.buffered - leftover)
            out = engine.data_to_send()
            if out:
                self._answer_budget -= len(out)
                if not self._send_negotiation(sid, out):
                    return True
            if result is not None:
                self._pop_negotiation(sid)
                self._negotiated(sid, neg, result)
                return True
            if not self._hold_negotiation_bytes(sid, neg):
                return True
            if not getattr(engine, "awaiting_drain", False):  # dialers answer nothing
                return True
            if self._answer_budget <= 0 or self._output_paused:
                return False
            data = b""

    def _hold_negotiation_bytes(self, sid: int, neg: _Negotiation) -> bool:
        """Count what the negotiation's engine buffers; reset it beyond the bound."""
        held = neg.engine.buffered
        self._negotiation_held += held - neg.held
        neg.held = held
        if self._negotiation_held <= self.owner.limits.max_negotiation_buffer:
            return True
        log.info("%r: resetting stream %d: negotiations hold more than %d bytes", self, sid,
                 self.owner.limits.max_negotiation_buffer)
        self._negotiation_failed(sid, neg, ConnectionAbortedError(
            "stream negotiation reset: the connection's negotiations hold too much data"))
        return False

    def _negotiation_failed(self, sid: int, neg: _Negotiation, error: OSError) -> None:
        """End a negotiation that will not become a stream: reset, tell who waits."""
        self._drop_negotiation(sid)
        self._reset_muxer_stream(sid)
        fail(neg.future, error)
        if neg.stream is not None:
            neg.stream.fail(error)
            self._forget(sid)
        self._reactor.mark_dirty(self)

    def _negotiated(self, sid: int, neg: _Negotiation, result: Agreed) -> None:
        if neg.stream is not None:  # lazy: the opener has had the stream all along
            if result.leftover:
                self._pressure.count(sid, neg.stream.feed(bytes(result.leftover)))
            return
        stream = Stream(self, sid, self.remote_peer_id, result.protocol)
        record = self._streams[sid] = _StreamRecord(stream)
        if result.leftover:
            self._pressure.count(sid, stream.feed(bytes(result.leftover)))
        if neg.remote_ended:
            self._on_remote_end(sid)
        if neg.future is not None:
            if not complete(neg.future, stream):
                self._reset(stream)  # the opener gave up meanwhile
        elif self.owner.inbound_stream(self, stream):
            record.counted = True
        else:
            self._reset(stream)

    def _on_inbound_stream(self, sid: int) -> None:
        if not self.owner.admit_inbound_stream(self.remote_peer_id):
            self._reset_muxer_stream(sid)  # over the peer's or the node's stream bound
            return
        self._inbound_live.add(sid)
        engine = MultistreamListener(self.owner.protocol_supported,
                                     list_protocols=self.owner.supported_protocols,
                                     max_output=_ANSWER_STEP)
        self._negotiating[sid] = _Negotiation(engine)
        self._negotiation_deadlines[sid] = (time.monotonic()
                                            + self.owner.limits.negotiation_timeout)
        if self._negotiation_timer is None:
            self._arm_negotiation_timer()
        self._send_negotiation(sid, engine.data_to_send())

    def _send_negotiation(self, sid: int, data: bytes) -> bool:
        """Send a negotiation message; False if that ended the negotiation."""
        try:
            taken = self._muxer.send_data(sid, data)
        except mev.StreamClosedError:
            return True
        if taken == len(data):
            return True
        # The remote does not read its answers (a fresh stream's window is 256 KiB).
        neg = self._negotiating.get(sid)
        if neg is not None:
            self._negotiation_failed(sid, neg, ConnectionAbortedError(
                "stream negotiation reset: the remote does not read the answers"))
        else:
            self._reset_muxer_stream(sid)
        return False

    def _arm_negotiation_timer(self) -> None:
        deadlines = self._negotiation_deadlines
        if deadlines:
            first = next(iter(deadlines.values()))  # the oldest: all have one timeout
            self._negotiation_timer = self._reactor.call_later(
                max(0.0, first - time.monotonic()), self._negotiations_timed_out)

    def _negotiations_timed_out(self) -> None:
        self._negotiation_timer = None
        now = time.monotonic()
        expired = []
        for sid, deadline in self._negotiation_deadlines.items():
            if deadline > now:
                break
            expired.append(sid)
        for sid in expired:
            neg = self._negotiating.get(sid)
            if neg is None:
                self._negotiation_deadlines.pop(sid, None)
                continue
            log.debug("%r: resetting stream %d: no protocol agreed within %.1f s", self,
                      sid, self.owner.limits.negotiation_timeout)
            self._negotiation_failed(sid, neg, TimeoutError("stream negotiation timed out"))
        if self._state in _MUXING:
            self._arm_negotiation_timer()

    def _on_remote_end(self, sid: int) -> None:
        record = self._streams.get(sid)
        collector = self._collecting.pop(sid, None) if record is None else None
        if collector is not None:
            collector.finish(bytes(collector.data), None)
            return
        if record is None:
            neg = self._negotiating.get(sid)
            if neg is not None:
                neg.remote_ended = True
            return
        record.stream.feed_eof()
        record.remote_ended = True
        if self._watchers:
            self._notify_watcher(sid)
        if record.fin_sent:
            self._forget(sid)

    def watch_stream(self, stream: Stream, on_event: Callable[[], None]) -> None:
        """Reactor thread only: call ``on_event()`` on the reactor whenever ``stream``
        receives data, its end or a reset, so a responder can serve it without a thread
        (it reads with timeout 0). Stops when the stream is forgotten."""
        if self._record_of(stream) is not None:
            self._watchers[stream.stream_id] = on_event

    def unsent_bytes(self, stream: Stream) -> int:
        """Bytes written to ``stream`` that the muxer has not taken yet."""
        return stream.unsent_bytes

    def _record_of(self, stream: Stream) -> _StreamRecord | None:
        """The record of ``stream`` while this connection still routes it."""
        record = self._streams.get(stream.stream_id)
        return record if record is not None and record.stream is stream else None

    def _notify_watcher(self, sid: int) -> None:
        on_event = self._watchers.get(sid)
        if on_event is not None:
            try:
                on_event()
            except Exception:
                log.exception("stream watcher %r failed", on_event)

    def _pop_negotiation(self, sid: int) -> _Negotiation | None:
        """Forget a negotiation (and what it counted toward the connection's bounds)."""
        neg = self._negotiating.pop(sid, None)
        if neg is not None:
            self._negotiation_held -= neg.held
            self._negotiation_deadlines.pop(sid, None)
        return neg

    def _drop_negotiation(self, sid: int) -> _Negotiation | None:
        """Forget a negotiation that will not become a stream."""
        neg = self._pop_negotiation(sid)
        self._release_inbound(sid)
        if not self._streams and not self._negotiating:
            self._became_idle()
        return neg

    def _on_reset(self, sid: int, reason: str) -> None:
        collector = self._collecting.pop(sid, None)
        if collector is not None:
            collector.finish(None, ConnectionResetError(f"stream reset: {reason}"))
        neg = self._drop_negotiation(sid)
        if neg is not None:
            fail(neg.future, ConnectionResetError(f"stream reset during negotiation: {reason}"))
            if neg.stream is None:
                return
        record = self._streams.get(sid)
        if record is not None:
            record.stream.fail(ConnectionResetError(f"stream reset: {reason}"))
            if self._watchers:
                self._notify_watcher(sid)
            self._forget(sid)

    def _release_inbound(self, sid: int) -> None:
        if sid in self._inbound_live:
            self._inbound_live.discard(sid)
            self.owner.inbound_stream_gone(self.remote_peer_id)

    def _forget(self, sid: int) -> None:
        self._release_inbound(sid)
        record = self._streams.pop(sid, None)
        neg = self._negotiating.get(sid)
        if neg is not None and record is not None and neg.stream is record.stream:
            self._pop_negotiation(sid)  # a lazy open retired while still negotiating
        self._to_flush.pop(sid, None)
        self._window_blocked.pop(sid, None)
        self._watchers.pop(sid, None)
        if record is not None:
            record.stream.mark_finished()
            if record.close_timer is not None:
                record.close_timer.cancel()
                record.close_timer = None
            if record.counted:
                record.counted = False
                self.owner.inbound_stream_finished(record.stream)
        self._pressure.forget(sid)
        if not self._streams and not self._negotiating:
            self._became_idle()

    def _became_idle(self) -> None:
        timeout = self.owner.limits.idle_connection_timeout
        self._idle_since = time.monotonic()
        if timeout is not None and self._idle_timer is None and self._state == _OPEN:
            self._idle_timer = self._reactor.call_later(timeout, self._idle_check)

    def _idle_check(self) -> None:
        self._idle_timer = None
        if self._state != _OPEN or self._streams or self._negotiating:
            return  # busy again: re-armed when the last stream goes
        timeout = self.owner.limits.idle_connection_timeout
        if self.keep_alive:
            self._idle_since = time.monotonic()
        remaining = self._idle_since + timeout - time.monotonic()
        if remaining > 0:
            self._idle_timer = self._reactor.call_later(remaining, self._idle_check)
            return
        log.debug("%r: closing after %.0f s without streams", self, timeout)
        self.close()

    def _muxer_consumed(self, sid: int, n: int) -> None:
        if n > 0 and self._muxer is not None:
            try:
                self._muxer.consumed(sid, n, time.monotonic())
            except mev.StreamClosedError:
                pass

    def _reset_muxer_stream(self, sid: int) -> None:
        try:
            self._muxer.reset_stream(sid)
        except mev.StreamClosedError:
            pass

    def _reset(self, stream: Stream) -> None:
        if self._record_of(stream) is not None:
            self._reset_muxer_stream(stream.stream_id)
            self._forget(stream.stream_id)
        stream.fail(ConnectionResetError("stream reset locally"))
        self._reactor.mark_dirty(self)

    # -- thread-safe entry points for streams and the node ---------------------------------
    def schedule_stream_flush(self, stream: Stream) -> None:
        """*Thread-safe.* The stream has data or a FIN to send."""
        self._reactor.call_soon(self._add_flush, stream)

    def report_consumed(self, stream: Stream, n: int, on_reactor: bool = False) -> None:
        """*Thread-safe.* The application consumed ``n`` bytes of the stream."""
        if on_reactor:
            self._stream_consumed(stream, n)
        else:
            self._reactor.call_soon(self._stream_consumed, stream, n)

    @property
    def bytes_sent(self) -> int:
        """*Thread-safe.* Bytes written to the socket so far."""
        return self._wire_sent_total

    def notify_when_sent(self, stream: Stream, mark: int) -> None:
        """*Thread-safe.* Call ``stream.wire_sent`` once ``bytes_sent`` reaches ``mark``
        (the stream fails instead if the connection closes first)."""
        self._reactor.call_soon(self._watch_sent, stream, mark)

    def _watch_sent(self, stream: Stream, mark: int) -> None:
        if self._wire_sent_total >= mark:
            stream.wire_sent(self._wire_sent_total)
        elif self._state == _CLOSED:
            stream.fail_writes(_copy_error(self._close_error), frames_lost=True)
        else:
            self._sent_watch[stream] = mark

    def reset_stream(self, stream: Stream) -> None:
        """*Thread-safe.* Reset the stream on the wire."""
        self._reactor.call_soon(self._reset, stream)

    def stream_closed(self, stream: Stream, dropped: int) -> None:
        """*Thread-safe.* The application closed a stream the remote has not finished."""
        self._reactor.call_soon(self._stream_closed, stream, dropped)

    def _stream_closed(self, stream: Stream, dropped: int) -> None:
        if dropped:
            self._stream_consumed(stream, dropped)
        record = self._record_of(stream)
        if record is not None and record.close_timer is None:
            record.close_timer = self._reactor.call_later(
                self.owner.limits.stream_close_timeout, lambda: self._close_timed_out(stream))

    def _close_timed_out(self, stream: Stream) -> None:
        record = self._record_of(stream)
        if record is not None:
            record.close_timer = None
            log.debug("%r: resetting %r: closed by us, never finished by the remote", self,
                      stream)
            self._reset(stream)

    def open_stream(self, protocol: str, future: Future, lazy: bool = False) -> None:
        """*Thread-safe.* Open a stream and negotiate ``protocol``; resolve ``future``.

        ``lazy``: resolve at once; the negotiation finishes in the background and a
        refusal fails the stream's next read or write with ``UnsupportedProtocol``.
        """
        self._reactor.call_soon(self._open_stream, protocol, future, lazy)

    # -- reactor-side helpers for those ----------------------------------------------------
    def _add_flush(self, stream: Stream) -> None:
        if self._record_of(stream) is not None:
            self._to_flush[stream.stream_id] = stream
            self._reactor.mark_dirty(self)
        else:
            stream.flush_pass_done()

    def _stream_consumed(self, stream: Stream, n: int) -> None:
        sid = stream.stream_id
        if self._record_of(stream) is not None:
            self._muxer_consumed(sid, n)
            self._pressure.look(sid, stream.unread_bytes)
            self._reactor.mark_dirty(self)
        self._pressure.consumed()

    def _open_stream(self, protocol: str, future: Future, lazy: bool = False) -> None:
        if future.cancelled():
            return
        if not self.usable_for_new_streams():
            fail(future, ConnectionResetError(f"connection to {self.remote_peer_id} "
                                              f"is closing: {self.closed_reason}"))
            return
        if self._deferred_opens or self._ack_backlog_full():
            self._deferred_opens.append((protocol, future, lazy))
            return
        self._start_open(protocol, future, lazy)

    def _ack_backlog_full(self) -> bool:
        return self._muxer.outbound_unacked >= _MAX_UNACKED_OUTBOUND

    def _start_deferred_opens(self) -> None:
        while self._deferred_opens and not self._ack_backlog_full():
            protocol, future, lazy = self._deferred_opens.popleft()
            if not future.cancelled():
                self._start_open(protocol, future, lazy)

    def _start_open(self, protocol: str, future: Future, lazy: bool = False) -> None:
        try:
            sid = self._muxer.open_stream()
        except mev.StreamLimitError as exc:
            fail(future, ConnectionRefusedError(f"cannot open a stream: {exc}"))
            return
        engine = MultistreamDialer([protocol], lazy=lazy)
        neg = self._negotiating[sid] = _Negotiation(engine, future, protocol)
        self._send_negotiation(sid, engine.data_to_send())
        self._reactor.mark_dirty(self)
        if lazy:
            neg.stream = stream = Stream(self, sid, self.remote_peer_id, protocol)
            self._streams[sid] = _StreamRecord(stream)
            if not complete(future, stream):
                self._reset(stream)

    def collect(self, protocol: str, limit: int, timeout: float,
                callback: Callable[[bytes | None, BaseException | None], None]) -> None:
        """Reactor thread only: read a whole response without an application thread.

        Opens a stream for ``protocol``, half-closes it at once and gathers what the
        remote sends until it closes; then calls ``callback(data, None)``, or
        ``callback(None, error)`` on failure, more than ``limit`` bytes, or
        ``timeout``. For request-less exchanges such as identify.
        """
        collector = _Collector(limit, callback)
        future: Future = Future()

        def opened(done: Future) -> None:
            if done.cancelled():
                return
            error = done.exception()
            if error is not None:
                collector.finish(None, error)
            elif collector.done:  # timed out meanwhile
                self._reset(done.result())
            else:
                self._start_collecting(done.result(), collector)

        def expired() -> None:
            collector.timer = None
            if future.cancel():
                self._abandon_open(future)
            if collector.sid is not None and self._collecting.pop(collector.sid, None):
                self._reset_muxer_stream(collector.sid)
                self._reactor.mark_dirty(self)
            collector.finish(None, TimeoutError(f"no complete {protocol} response "
                                                f"within {timeout} s"))

        collector.timer = self._reactor.call_later(timeout, expired)
        future.add_done_callback(opened)
        self._open_stream(protocol, future)

    def _start_collecting(self, stream: Stream, collector: _Collector) -> None:
        sid = stream.stream_id
        record = self._streams.pop(sid, None)
        fin_sent = record is not None and record.fin_sent
        remote_ended = record is not None and record.remote_ended
        self._pressure.drop(sid)
        self._to_flush.pop(sid, None)
        stream.mark_finished()
        collector.sid = sid
        self._collecting[sid] = collector
        if not fin_sent:
            try:
                self._muxer.close_stream(sid)  # the request is empty: half-close now
            except mev.StreamClosedError:
                pass
        early = stream.take_received()
        if early:
            self._muxer_consumed(sid, len(early))
            self._collected(collector, early)
        if remote_ended and self._collecting.pop(sid, None) is collector:
            collector.finish(bytes(collector.data), None)
        self._reactor.mark_dirty(self)

    def _collected(self, collector: _Collector, data: Any) -> None:
        collector.data += data
        if len(collector.data) > collector.limit:
            sid = collector.sid
            if sid is not None and self._collecting.pop(sid, None) is collector:
                self._reset_muxer_stream(sid)
                self._reactor.mark_dirty(self)
            collector.finish(None, ConnectionAbortedError(
                f"response larger than {collector.limit} bytes"))

    def abandon_open(self, future: Future) -> None:
        """*Thread-safe.* The opener timed out: reset its stream if still negotiating."""
        self._reactor.call_soon(self._abandon_open, future)

    def _abandon_open(self, future: Future) -> None:
        for sid, neg in list(self._negotiating.items()):
            if neg.future is future:
                self._drop_negotiation(sid)
                self._reset_muxer_stream(sid)
                self._reactor.mark_dirty(self)

    # -- output ----------------------------------------------------------------------------
    def _queue_plain(self, data: Any) -> None:
        if data:
            self._wire.append(data)
            self._wire_len += len(data)
            if self._wire_len > _OUTPUT_PAUSE_AT and not self._output_paused:
                self._output_paused = True  # the peer does not read: neither do we
                self._set_interest()
            self._reactor.mark_dirty(self)

    def flush(self) -> None:
        """Move stream data into the muxer, muxer output through Noise, and onto the socket."""
        if self._state == _CLOSED:
            return
        try:
            if self._state in _MUXING:
                if self._deferred_opens:
                    self._start_deferred_opens()
                if self._to_flush:
                    self._pull_streams()
                out = self._muxer.data_to_send()
                if out:
                    self._queue_plain(self._transport.encrypt(out))
                self._update_timer()
            self._send_wire()
            if self._state == _CLOSING:
                self._finish_closing()
        except Exception as exc:  # a bug of ours must cost one connection, not the node
            log.exception("%r: internal error while sending", self)
            self.abort(ConnectionAbortedError(f"internal error: {exc!r}"), cause=exc)

    def _pull_streams(self) -> None:
        muxer = self._muxer
        to_flush = self._to_flush
        while to_flush and self._wire_len < _WIRE_HIGH_WATER:
            sid, stream = next(iter(to_flush.items()))
            blocked = False
            while self._wire_len < _WIRE_HIGH_WATER:
                window = muxer.send_window(sid)
                if window <= 0:
                    blocked = True
                    break
                chunk = stream.pop_send(min(window, _STREAM_CHUNK))
                if chunk is None:
                    break
                try:
                    taken = muxer.send_data(sid, chunk)
                except mev.StreamClosedError:
                    stream.fail(ConnectionResetError("stream closed by the muxer"))
                    self._forget(sid)
                    break
                if taken < len(chunk):
                    stream.unpop_send(chunk[taken:])
                out = muxer.data_to_send()
                if out:
                    self._queue_plain(self._transport.encrypt(out))
                stream.taken_by_muxer(taken, self._wire_sent_total + self._wire_len)
            record = self._streams.get(sid)
            if record is None or record.stream is not stream:
                to_flush.pop(sid, None)
                continue
            pending, fin = stream.flush_pass_done()
            if fin and not record.fin_sent:
                record.fin_sent = True
                try:
                    muxer.close_stream(sid)
                except mev.StreamClosedError:
                    pass
                if record.remote_ended:
                    self._forget(sid)
            if not pending:
                to_flush.pop(sid, None)
            elif blocked:
                to_flush.pop(sid, None)
                self._window_blocked[sid] = stream
            else:
                break  # wire buffer full: resume when the socket drains

    def _send_wire(self) -> None:
        wire = self._wire
        sock = self.sock
        while wire:
            buffers = list(wire) if len(wire) <= _MAX_SENDMSG_BUFFERS else \
                [wire[i] for i in range(_MAX_SENDMSG_BUFFERS)]
            try:
                sent = sock.sendmsg(buffers)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                self.abort(exc)
                return
            self._wire_len -= sent
            self._wire_sent_total += sent
            while sent:
                head = wire[0]
                if len(head) <= sent:
                    sent -= len(head)
                    wire.popleft()
                else:
                    wire[0] = memoryview(head)[sent:]
                    sent = 0
        if self._sent_watch:
            self._wake_sent_watchers()
        if self._output_paused and self._wire_len <= _WIRE_HIGH_WATER:
            self._output_paused = False
            self._set_interest()
            if self._backlog:
                self._schedule_resume()
        want_write = bool(wire) or self._state == _CONNECTING or (
            self._channel_output and self.sock.wants_write)
        if want_write != self._want_write:
            self._want_write = want_write
            self._set_interest()
        if not wire and self._to_flush and self._state in _MUXING:
            self._reactor.mark_dirty(self)

    def _wake_sent_watchers(self) -> None:
        sent = self._wire_sent_total
        for stream, mark in list(self._sent_watch.items()):
            if mark <= sent:
                del self._sent_watch[stream]
                stream.wire_sent(sent)

    def _set_interest(self) -> None:
        """Register for the socket events we want now (none while paused and idle)."""
        if self._state == _CLOSED:
            return
        interest = 0
        if self._state == _CONNECTING or self._want_write:
            interest |= _WRITE
        if self._state != _CONNECTING and self._reading_allowed():
            interest |= _READ
        if interest == self._interest:
            return
        if not interest:
            self._reactor.unregister(self.sock)
        elif not self._interest:
            self._reactor.register(self.sock, interest, self)
        else:
            self._reactor.modify(self.sock, interest, self)
        self._interest = interest

    def _reading_allowed(self) -> bool:
        """False while the peer has made us hold enough: its output, its unread data,
        or input we have not handled yet (unless it left: then it sends no more)."""
        pressure = self._pressure
        return pressure.peer_left or not (pressure.holding or self._output_paused
                                          or self._backlog)

    # -- unread data and congestion (the policy is read_pressure.py) -------------------
    def _reset_stalling_streams(self, streams: list[Stream], held_for: float) -> None:
        """The application did not catch up within ``held_for`` s: reset ``streams``."""
        for stream in streams:
            log.info("%r: resetting %r: %d unread bytes held the connection for %.0f s",
                     self, stream, stream.unread_bytes, held_for)
            self._reset_muxer_stream(stream.stream_id)
            self._forget(stream.stream_id)
            stream.fail(ConnectionResetError(
                f"stream reset: its unread data stalled the connection for "
                f"{held_for:.0f} s"))
        self._reactor.mark_dirty(self)

    def _flush_wire_now(self) -> None:
        if self._muxer is not None and self._transport is not None:
            out = self._muxer.data_to_send()
            if out:
                self._queue_plain(self._transport.encrypt(out))
        self._send_wire()

    # -- timers ----------------------------------------------------------------------------
    def _update_timer(self) -> None:
        when = self._muxer.get_timer()
        if when == self._timer_when:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_when = when
        if when is not None:
            self._timer = self._reactor.call_later(max(0.0, when - time.monotonic()),
                                                   self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_when = None
        if self._state not in _MUXING:
            return
        self._muxer_input(self._muxer.handle_timer(time.monotonic()))
        self._reactor.mark_dirty(self)

    # -- closing ---------------------------------------------------------------------------
    def close(self) -> None:
        """Close gracefully: no new streams (GoAway), deliver what streams have queued,
        send FIN, and close once the remote closed too (at most ``_LINGER`` seconds)."""
        if self._state != _OPEN:
            if self._state != _CLOSING:
                self.abort(ConnectionAbortedError("connection closed locally"))
            return
        self._state = _CLOSING
        for record in self._streams.values():
            record.stream.refuse_writes(ConnectionAbortedError("connection closed locally"))
        self._muxer.go_away(0)
        self._linger_timer = self._reactor.call_later(
            _LINGER, lambda: self.abort(ConnectionAbortedError("connection closed locally")))
        self.flush()

    def _finish_closing(self) -> None:
        """Once everything queued is on the wire, send FIN; the remote's FIN ends it."""
        if self._wire or self._to_flush or self._window_blocked or self._write_shut:
            return
        if not self._security_closed and (self._queue_security_goodbye()
                                          or self._state == _CLOSED):
            return  # FIN once the goodbye is on the wire
        self._write_shut = True
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self.abort(ConnectionAbortedError("connection closed locally"))

    def _queue_security_goodbye(self) -> bool:
        """Queue the secure transport's closing bytes (TLS close_notify; Noise has
        none) once; True when some are still waiting for the socket."""
        self._security_closed = True
        goodbye = getattr(self._transport, "close", None)
        data = goodbye() if goodbye is not None else b""
        if not data:
            return False
        self._queue_plain(data)
        self._send_wire()
        return bool(self._wire)

    def abort(self, error: OSError, cause: BaseException | None = None) -> None:
        """Close at once; every stream and waiter gets ``error``."""
        if self._state == _CLOSED:
            return
        if cause is not None and error.__cause__ is None:
            error.__cause__ = cause
        was_open = self._state in _MUXING
        self._state = _CLOSED
        self.closed_reason = str(error)
        self._close_error = error
        for timer in (self._timer, self._deadline_timer, self._idle_timer,
                      self._linger_timer, self._negotiation_timer):
            if timer is not None:
                timer.cancel()
        self._pressure.release()
        self._reactor.unregister(self.sock)
        try:
            self.sock.close()
        except OSError:
            pass
        for neg in self._negotiating.values():
            fail(neg.future, error)
        self._negotiating.clear()
        for sid in list(self._inbound_live):
            self._release_inbound(sid)
        self._negotiation_deadlines.clear()
        self._negotiation_held = 0
        self._backlog.clear()
        for _, future, _ in self._deferred_opens:
            fail(future, error)
        self._deferred_opens.clear()
        for collector in list(self._collecting.values()):
            collector.finish(None, _copy_error(error))
        self._collecting.clear()
        sent = self._wire_sent_total
        for sid, record in list(self._streams.items()):
            stream = record.stream
            frames_lost = stream.wire_mark > sent  # its frames still in self._wire
            if record.remote_ended:
                stream.fail_writes(_copy_error(error), frames_lost)
            else:
                stream.fail(_copy_error(error), frames_lost)
            if self._watchers:
                self._notify_watcher(sid)
            self._forget(sid)
        for stream in self._sent_watch:  # flushing streams whose frames die here
            stream.fail_writes(_copy_error(error), frames_lost=True)
        self._sent_watch.clear()
        self._wire.clear()
        on_ready, self._on_ready = self._on_ready, None
        if on_ready is not None:
            on_ready(self, error)
        self.owner.connection_closed(self, was_open)


#: poll() flag for "the peer closed its side", seen even with unread data before it.
_POLL_HUNG_UP = getattr(select, "POLLRDHUP", 0) | select.POLLHUP | select.POLLERR


def _hung_up(sock: socket.socket) -> bool:
    """Whether the peer closed (or reset) the connection, without reading from it."""
    poller = select.poll()
    poller.register(sock, _POLL_HUNG_UP)
    return bool(poller.poll(0))


def _copy_error(error: OSError) -> OSError:
    # Each stream gets its own exception object: one raised in many threads at once
    # would have its traceback rewritten under the others' feet.
    if isinstance(error, ConnectionError):
        copy = type(error)(*error.args)
    else:
        copy = ConnectionResetError(str(error))
    copy.__cause__ = error
    return copy
