"""Sans-IO yamux (``/yamux/1.0.0``) session engine.

Wire format (hashicorp yamux spec.md, mirrored in libp2p/specs yamux/README.md): every
frame starts with a 12-byte big-endian header ``version(8) type(8) flags(16)
stream_id(32) length(32)``; only Data frames carry ``length`` payload bytes.

Choices that decide bytes on the wire (all accepted by go, rust, js and py yamux):

* SYN goes on a WindowUpdate whose delta is our initial window beyond 256 KiB.
* ACK goes on its own WindowUpdate (delta: any extra window), never on a Data frame
  with a payload; FIN and RST go on zero-length Data frames. Some implementations only
  look for FIN/RST on Data frames, some skip the payload of a flagged Data frame, and an
  old Go yamux drops data that shares a frame with FIN; separate frames avoid all three.
* Payloads are delivered as they arrive: a Data frame split across ``receive_data``
  calls yields several ``DataReceived`` events, so no payload is ever buffered here
  (the receive window bounds what the application holds).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from .muxer_events import (
    DataReceived,
    GoAwayReceived,
    MuxerError,
    PingAcked,
    SendWindowUpdated,
    SessionTerminated,
    StreamClosedError,
    StreamEnded,
    StreamLimitError,
    StreamOpened,
    StreamReset,
)

__all__ = [
    "YamuxSession", "PROTOCOL_ID", "DEFAULT_WINDOW", "HEADER",
    "TYPE_DATA", "TYPE_WINDOW_UPDATE", "TYPE_PING", "TYPE_GO_AWAY",
    "FLAG_SYN", "FLAG_ACK", "FLAG_FIN", "FLAG_RST",
    "GO_AWAY_NORMAL", "GO_AWAY_PROTOCOL_ERROR", "GO_AWAY_INTERNAL_ERROR",
]

PROTOCOL_ID = "/yamux/1.0.0"

#: ``>BBHII``: version, type, flags, stream id, length.
HEADER = struct.Struct(">BBHII")
HEADER_SIZE = 12

TYPE_DATA, TYPE_WINDOW_UPDATE, TYPE_PING, TYPE_GO_AWAY = 0, 1, 2, 3
FLAG_SYN, FLAG_ACK, FLAG_FIN, FLAG_RST = 1, 2, 4, 8
GO_AWAY_NORMAL, GO_AWAY_PROTOCOL_ERROR, GO_AWAY_INTERNAL_ERROR = 0, 1, 2

#: Every stream starts with this window in both directions (spec: "256KB").
DEFAULT_WINDOW = 256 * 1024
#: Largest Data frame we send. Every implementation accepts frames up to the
#: window, and the default window is the floor of every peer's window.
MAX_FRAME = DEFAULT_WINDOW
#: Lower bound of the RTT used for window auto-tuning (see _maybe_grant_window).
_MIN_TUNING_RTT = 0.005
_U32_MAX = 0xFFFFFFFF

_GO_AWAY_NAMES = {GO_AWAY_NORMAL: "normal", GO_AWAY_PROTOCOL_ERROR: "protocol error",
                  GO_AWAY_INTERNAL_ERROR: "internal error"}

_pack = HEADER.pack
_unpack_from = HEADER.unpack_from


class _Stream:
    """Per-stream state; removed from the session once both sides closed or on reset."""

    __slots__ = ("sid", "send_window", "recv_credit", "window", "buffered", "last_update",
                 "local_closed", "remote_closed", "need_ack", "unacked")

    def __init__(self, sid: int, window: int, now: float, *, inbound: bool) -> None:
        self.sid = sid
        self.send_window = DEFAULT_WINDOW  # bytes we may still send
        self.recv_credit = DEFAULT_WINDOW  # bytes the remote may still send us
        self.window = window               # target receive window (auto-tuned)
        self.buffered = 0                  # received, not yet consumed by the app
        self.last_update = now             # when we last granted window
        self.local_closed = False
        self.remote_closed = False
        self.need_ack = inbound            # our first frame must carry ACK
        self.unacked = not inbound         # outbound: no ACK from the remote yet


@dataclass(slots=True)
class _Payload:
    """The Data frame whose payload is being received."""
    sid: int
    left: int
    fin: bool


class YamuxSession:
    """One yamux session over one secured connection; no I/O of its own.

    ``is_initiator`` is True on the side that dialed the connection (the yamux
    "client", odd stream ids). ``now`` is the monotonic time in seconds.
    ``zero_copy`` promises that buffers given to :meth:`receive_data` are never
    modified or reused afterwards: ``DataReceived.data`` may then be a read-only
    ``memoryview`` into them instead of a copy.
    """

    def __init__(self, is_initiator: bool, *, now: float = 0.0,
                 initial_window: int = DEFAULT_WINDOW,
                 max_window: int = 16 * 1024 * 1024,
                 max_streams: int = 8192,
                 max_pending_inbound: int = 256,
                 keepalive_interval: float | None = 30.0,
                 keepalive_timeout: float = 10.0,
                 zero_copy: bool = False) -> None:
        if not DEFAULT_WINDOW <= initial_window <= max_window <= _U32_MAX:
            raise ValueError("need 256 KiB <= initial_window <= max_window < 4 GiB")
        if max_streams < 1 or max_pending_inbound < 0:
            raise ValueError("stream limits must be positive")
        if keepalive_interval is not None and keepalive_interval <= 0:
            raise ValueError("keepalive_interval must be positive (or None)")
        self.is_initiator = is_initiator
        self._zero_copy = zero_copy
        self._initial_window = initial_window
        self._max_window = max_window
        self._max_streams = max_streams
        self._max_pending_inbound = max_pending_inbound
        self._keepalive_interval = keepalive_interval
        self._keepalive_timeout = keepalive_timeout

        self._streams: dict[int, _Stream] = {}
        self._next_id = 1 if is_initiator else 2
        #: Highest stream id the remote opened: ids are never reused in a session.
        self._last_inbound_id = 0
        self._pending_inbound = 0   # inbound streams we have not acknowledged
        self._outbound_unacked = 0  # outbound streams the remote has not acknowledged
        self._out = bytearray()
        self._hdr = bytearray()     # a header split across receive_data calls
        self._payload: _Payload | None = None
        self._terminated = False
        self._local_go_away = False
        self._remote_go_away = False

        self._now = now
        self._rtt: float | None = None
        self._user_pings: dict[int, float] = {}
        self._internal_opaque = 0
        # Like go- and rust-yamux, measure the RTT right away: window auto-tuning
        # needs it. It doubles as the first keepalive probe.
        self._internal_ping: tuple[int, float] | None = None
        self._send_internal_ping(now)
        self._next_keepalive = (now + keepalive_interval
                                if keepalive_interval is not None else None)

    # ------------------------------------------------------------------ properties

    @property
    def is_terminated(self) -> bool:
        """True once the session is over (violation, keepalive timeout, error GoAway)."""
        return self._terminated

    #: yamux windows every stream (the connection need not pause reading for it).
    has_flow_control = True

    @property
    def stream_count(self) -> int:
        """Streams this session still tracks (open in at least one direction)."""
        return len(self._streams)

    @property
    def outbound_unacked(self) -> int:
        """Our streams the remote has not acknowledged yet.

        The libp2p yamux spec asks openers to keep this "ACK backlog" at most 256;
        callers that open streams in bulk can wait for it to drop.
        """
        return self._outbound_unacked

    @property
    def rtt(self) -> float | None:
        """Latest round-trip time measured with a ping, or None before the first pong."""
        return self._rtt

    # ------------------------------------------------------------------ output

    def data_to_send(self) -> bytes | bytearray:
        """Everything queued for the wire, emptying the queue (``b""`` when empty)."""
        out = self._out
        if not out:
            return b""
        self._out = bytearray()
        return out

    def _frame(self, ftype: int, flags: int, sid: int, length: int) -> None:
        self._out += _pack(0, ftype, flags, sid, length)

    # ------------------------------------------------------------------ local API

    def open_stream(self) -> int:
        """Open a new outbound stream and return its id (a SYN is queued at once).

        Raises :class:`StreamLimitError` when the session is ending (a GoAway in
        either direction, or terminated), the id space is used up, or
        ``max_streams`` streams are open.
        """
        if self._terminated or self._remote_go_away or self._local_go_away:
            raise StreamLimitError("session is shutting down")
        if len(self._streams) >= self._max_streams:
            raise StreamLimitError(f"{self._max_streams} streams open")
        sid = self._next_id
        if sid > _U32_MAX:
            raise StreamLimitError("stream ids exhausted")
        self._next_id = sid + 2
        st = _Stream(sid, self._initial_window, self._now, inbound=False)
        st.recv_credit = self._initial_window
        self._streams[sid] = st
        self._outbound_unacked += 1
        self._frame(TYPE_WINDOW_UPDATE, FLAG_SYN, sid, self._initial_window - DEFAULT_WINDOW)
        return sid

    def send_window(self, sid: int) -> int:
        """How many bytes ``send_data`` would take now on stream ``sid``."""
        st = self._writable(sid)
        return st.send_window

    def send_data(self, sid: int, data: bytes | bytearray | memoryview) -> int:
        """Frame up to the send window of ``data``; return how many bytes were taken.

        The caller keeps the rest and offers it again after ``SendWindowUpdated``.
        Raises :class:`StreamClosedError` on an unknown, reset or half-closed stream.
        """
        st = self._writable(sid)
        with memoryview(data) as raw:
            view = raw if raw.format == "B" and raw.ndim == 1 else raw.cast("B")
            n = min(view.nbytes, st.send_window)
            if n <= 0:
                return 0
            if st.need_ack:
                self._send_ack(st)
            out = self._out
            off = 0
            while off < n:
                chunk = n - off
                if chunk > MAX_FRAME:
                    chunk = MAX_FRAME
                out += _pack(0, TYPE_DATA, 0, sid, chunk)
                out += view[off:off + chunk]
                off += chunk
        st.send_window -= n
        return n

    def close_stream(self, sid: int) -> None:
        """Half-close stream ``sid``: we send no more data (a FIN is queued)."""
        st = self._writable(sid)
        if st.need_ack:
            self._send_ack(st)
        self._frame(TYPE_DATA, FLAG_FIN, sid, 0)
        st.local_closed = True
        if st.remote_closed:
            self._remove(st)

    def reset_stream(self, sid: int) -> None:
        """Abort stream ``sid`` in both directions (an RST is queued)."""
        st = self._streams.get(sid)
        if st is None or self._terminated:
            raise StreamClosedError(f"stream {sid} is not open")
        self._frame(TYPE_DATA, FLAG_RST, sid, 0)
        self._remove(st)

    def consumed(self, sid: int, n: int, now: float | None = None) -> None:
        """The application has read ``n`` bytes of stream ``sid``: maybe grant window.

        A no-op for streams the session no longer tracks (both sides closed, or
        reset): the application may drain its buffer after the stream is gone.
        ``now`` defaults to the latest time the session was given.
        """
        if now is not None:
            self._now = now
        st = self._streams.get(sid)
        if st is None:
            return
        if n < 0 or n > st.buffered:
            raise ValueError(f"consumed {n} bytes but only {st.buffered} are buffered")
        st.buffered -= n
        if not st.remote_closed:
            self._maybe_grant_window(st)

    def ping(self, opaque: int) -> None:
        """Send a ping; ``PingAcked(opaque)`` is reported when the remote answers."""
        if not 0 <= opaque <= _U32_MAX:
            raise ValueError("ping opaque value must fit in 32 bits")
        if self._terminated:
            raise RuntimeError("session is terminated")
        self._user_pings[opaque] = self._now
        self._frame(TYPE_PING, FLAG_SYN, 0, opaque)

    def go_away(self, code: int = GO_AWAY_NORMAL) -> None:
        """Tell the remote we accept no new streams (``code``: 0 normal, 1 protocol
        error, 2 internal error). Existing streams go on; new inbound ones are reset."""
        if not 0 <= code <= _U32_MAX:
            raise ValueError("GoAway code must fit in 32 bits")
        if self._terminated or self._local_go_away:
            return
        self._local_go_away = True
        self._frame(TYPE_GO_AWAY, 0, 0, code)

    # ------------------------------------------------------------------ timers

    def get_timer(self) -> float | None:
        """When ``handle_timer`` should next be called, or None for never."""
        if self._terminated or self._keepalive_interval is None:
            return None
        if self._internal_ping is not None:
            return self._internal_ping[1] + self._keepalive_timeout
        return self._next_keepalive

    def handle_timer(self, now: float) -> list:
        """Run the keepalive: send the periodic ping or give up on an unanswered one."""
        self._now = now
        if self._terminated or self._keepalive_interval is None:
            return []
        if self._internal_ping is not None:
            if now >= self._internal_ping[1] + self._keepalive_timeout:
                self._terminate()
                return [SessionTerminated("keepalive timeout")]
        elif self._next_keepalive is not None and now >= self._next_keepalive:
            self._send_internal_ping(now)
            self._next_keepalive = now + self._keepalive_interval
        return []

    def _send_internal_ping(self, now: float) -> None:
        opaque = self._internal_opaque
        self._internal_opaque = (opaque + 1) & _U32_MAX
        self._internal_ping = (opaque, now)
        self._frame(TYPE_PING, FLAG_SYN, 0, opaque)

    # ------------------------------------------------------------------ input

    def receive_data(self, data: bytes | bytearray | memoryview,
                     now: float | None = None) -> list:
        """Feed bytes from the connection; return the events they caused.

        Never raises for peer input: a violation returns ``SessionTerminated`` with
        a :class:`MuxerError`, queues ``GoAway(protocol error)`` and later input is
        ignored. ``now`` (optional) timestamps ping answers for the RTT estimate.
        """
        if now is not None:
            self._now = now
        events: list = []
        if self._terminated:
            return events
        with memoryview(data) as raw:
            view = raw if raw.format == "B" and raw.ndim == 1 else raw.cast("B")
            try:
                self._parse(view, events)
            finally:
                if view is not raw:
                    view.release()
        return events

    def _parse(self, view: memoryview, events: list) -> None:
        pos = 0
        end = len(view)
        hdr = self._hdr
        streams = self._streams
        while pos < end:
            payload = self._payload
            if payload is not None:
                take = end - pos
                if take > payload.left:
                    take = payload.left
                if payload.sid in streams:
                    chunk = view[pos:pos + take]
                    # Zero-copy only for chunks that are a good part of the buffer: a
                    # small slice must not keep a large buffer alive in a stream
                    # nobody reads (at most 4x amplification).
                    if not self._zero_copy or take * 4 < end:
                        chunk = bytes(chunk)
                    events.append(DataReceived(payload.sid, chunk))
                pos += take
                payload.left -= take
                if not payload.left:
                    self._payload = None
                    if payload.fin:
                        self._remote_fin(payload.sid, events)
                continue
            if hdr:
                need = HEADER_SIZE - len(hdr)
                hdr += view[pos:pos + need]
                pos += need
                if len(hdr) < HEADER_SIZE:
                    return
                fields = _unpack_from(hdr)
                hdr.clear()
            elif end - pos >= HEADER_SIZE:
                fields = _unpack_from(view, pos)
                pos += HEADER_SIZE
            else:
                hdr += view[pos:end]
                return
            if not self._on_frame(*fields, events):
                return  # terminated: ignore the rest

    def _on_frame(self, version: int, ftype: int, flags: int, sid: int, length: int,
                  events: list) -> bool:
        """Handle one header; return False once the session is terminated."""
        if version != 0:
            return self._violation(f"unsupported yamux version {version}", events)
        if ftype == TYPE_DATA or ftype == TYPE_WINDOW_UPDATE:
            if sid == 0:
                return self._violation("data or window update on stream 0", events)
            if ftype == TYPE_DATA and length > self._max_window:
                return self._violation(f"data frame of {length} bytes exceeds any window",
                                       events)
            return self._on_stream_frame(ftype, flags, sid, length, events)
        if ftype == TYPE_PING:
            self._on_ping(flags, length, events)
            return True
        if ftype == TYPE_GO_AWAY:
            return self._on_go_away(length, events)
        return self._violation(f"unknown frame type {ftype}", events)

    def _on_stream_frame(self, ftype: int, flags: int, sid: int, length: int,
                         events: list) -> bool:
        is_data = ftype == TYPE_DATA
        st = self._streams.get(sid)
        if flags & FLAG_RST:
            if st is not None:
                self._remove(st)
                events.append(StreamReset(sid))
            return self._skip(is_data, length)
        if flags & FLAG_SYN:
            if st is not None:
                return self._violation(f"SYN for existing stream {sid}", events)
            if (sid & 1) == self.is_initiator:
                return self._violation(f"SYN with stream id {sid} of the wrong parity",
                                       events)
            # Every implementation numbers streams upwards. A reused id would make
            # events of the old and the new stream (e.g. DataReceived before and
            # after a StreamReset in one batch) indistinguishable to the caller.
            if sid <= self._last_inbound_id:
                return self._violation(f"SYN reuses stream id {sid}", events)
            self._last_inbound_id = sid
            st = self._accept_syn(sid, events)
            if st is None:
                return self._skip(is_data, length)
        elif st is None:
            # Unknown id: a stream we already closed or reset (frames cross an RST on
            # the wire), or one never opened. go- and rust-yamux drop these silently.
            return self._skip(is_data, length)
        if flags & FLAG_ACK and st.unacked:
            st.unacked = False
            self._outbound_unacked -= 1
        if is_data:
            return self._on_data(st, flags, length, events)
        if length:
            window = st.send_window + length
            if window > _U32_MAX:
                return self._violation(f"send window of stream {sid} overflows 2^32-1",
                                       events)
            st.send_window = window
            if not st.local_closed:
                events.append(SendWindowUpdated(sid))
        if flags & FLAG_FIN:
            self._remote_fin(sid, events)
        return True

    def _on_data(self, st: _Stream, flags: int, length: int, events: list) -> bool:
        if length:
            if st.remote_closed:
                return self._violation(f"data after FIN on stream {st.sid}", events)
            if length > st.recv_credit:
                return self._violation(
                    f"{length} bytes exceed the receive window ({st.recv_credit}) "
                    f"of stream {st.sid}", events)
            st.recv_credit -= length
            st.buffered += length
            self._payload = _Payload(st.sid, length, bool(flags & FLAG_FIN))
        elif flags & FLAG_FIN:
            self._remote_fin(st.sid, events)
        return True

    def _skip(self, is_data: bool, length: int) -> bool:
        """Discard the payload of a frame for no live stream."""
        if is_data and length:
            self._payload = _Payload(0, length, False)  # stream 0 never exists
        return True

    def _accept_syn(self, sid: int, events: list) -> _Stream | None:
        """A valid new inbound stream: create it, or reset it when over a limit."""
        if (self._local_go_away or len(self._streams) >= self._max_streams
                or self._pending_inbound >= self._max_pending_inbound):
            self._frame(TYPE_DATA, FLAG_RST, sid, 0)
            return None
        st = _Stream(sid, self._initial_window, self._now, inbound=True)
        self._streams[sid] = st
        self._pending_inbound += 1
        events.append(StreamOpened(sid))
        return st

    def _remote_fin(self, sid: int, events: list) -> None:
        st = self._streams.get(sid)
        if st is None or st.remote_closed:
            return
        st.remote_closed = True
        events.append(StreamEnded(sid))
        if st.local_closed:
            self._remove(st)

    def _on_ping(self, flags: int, opaque: int, events: list) -> None:
        # The spec wants stream id 0 on pings; like go-yamux we do not insist.
        if flags & FLAG_SYN:
            self._frame(TYPE_PING, FLAG_ACK, 0, opaque)
        elif flags & FLAG_ACK:
            internal = self._internal_ping
            if internal is not None and internal[0] == opaque:
                self._rtt = max(0.0, self._now - internal[1])
                self._internal_ping = None
            else:
                sent = self._user_pings.pop(opaque, None)
                if sent is not None:
                    self._rtt = max(0.0, self._now - sent)
                    events.append(PingAcked(opaque))
                # An answer to no ping of ours: ignored, as go and rust do.

    def _on_go_away(self, code: int, events: list) -> bool:
        self._remote_go_away = True
        events.append(GoAwayReceived(code))
        if code == GO_AWAY_NORMAL:
            return True
        # An error GoAway ends the session (as in go-yamux); the remote reports *our*
        # fault, so no MuxerError and no GoAway back.
        name = _GO_AWAY_NAMES.get(code, f"code {code}")
        self._terminate()
        events.append(SessionTerminated(f"remote sent GoAway ({name})"))
        return False

    # ------------------------------------------------------------------ helpers

    def _writable(self, sid: int) -> _Stream:
        st = self._streams.get(sid)
        if st is None or st.local_closed or self._terminated:
            raise StreamClosedError(f"stream {sid} is not open for writing")
        return st

    def _send_ack(self, st: _Stream) -> None:
        """Acknowledge an inbound stream, granting any window beyond the default."""
        st.need_ack = False
        self._pending_inbound -= 1
        delta = 0
        if not st.remote_closed:
            delta = max(0, st.window - st.recv_credit - st.buffered)
            st.recv_credit += delta
        self._frame(TYPE_WINDOW_UPDATE, FLAG_ACK, st.sid, delta)

    def _maybe_grant_window(self, st: _Stream) -> None:
        """Send a WindowUpdate once the app consumed half the window, growing it first
        when the sender is window-limited.

        Auto-tuning (as rust-yamux, after QUIC): if half a window was consumed within
        two round trips of the previous update, the window, not the reader, limits the
        throughput (the sender can move at most one window per RTT), so double it up
        to ``max_window``. A slow reader takes longer than that and its window stays
        small, keeping buffering proportional to what the link needs. Without an RTT
        measurement (no pong yet) the window does not grow.

        The RTT used has a floor of ``_MIN_TUNING_RTT``: an idle-time ping on
        loopback says tens of microseconds, while a busy Python peer answers a
        window update in milliseconds. Without the floor the window never grows
        between local processes and one stream stays near 300 MB/s.
        """
        unreported = st.window - st.recv_credit - st.buffered
        if unreported < st.window >> 1:
            return
        now = self._now
        rtt = self._rtt
        if (rtt is not None and st.window < self._max_window
                and now - st.last_update <= 2 * max(rtt, _MIN_TUNING_RTT)):
            st.window = min(st.window * 2, self._max_window)
            unreported = st.window - st.recv_credit - st.buffered
        st.last_update = now
        st.recv_credit += unreported
        flags = 0
        if st.need_ack:
            st.need_ack = False
            self._pending_inbound -= 1
            flags = FLAG_ACK
        self._frame(TYPE_WINDOW_UPDATE, flags, st.sid, unreported)

    def _remove(self, st: _Stream) -> None:
        del self._streams[st.sid]
        if st.need_ack:
            self._pending_inbound -= 1
        if st.unacked:
            self._outbound_unacked -= 1

    def _terminate(self) -> None:
        self._terminated = True
        self._streams.clear()
        self._pending_inbound = 0
        self._outbound_unacked = 0
        self._user_pings.clear()
        self._internal_ping = None
        self._payload = None
        self._hdr.clear()

    def _violation(self, reason: str, events: list) -> bool:
        """End the session for a protocol violation; always returns False."""
        self._frame(TYPE_GO_AWAY, 0, 0, GO_AWAY_PROTOCOL_ERROR)
        self._terminate()
        events.append(SessionTerminated(reason, MuxerError(reason)))
        return False
