"""mplex (``/mplex/6.7.0``) as a sans-IO stream multiplexer engine.

Wire format (libp2p/specs mplex/README.md): every frame is
``uvarint(wire_id << 3 | flag) || uvarint(len(data)) || data``, flags:

======  =================  ======  =================
0       NewStream          4       CloseInitiator
1       MessageReceiver    5       ResetReceiver
2       MessageInitiator   6       ResetInitiator
3       CloseReceiver
======  =================  ======  =================

Wire stream ids are numbered by each side for the streams it opens, from 0 upwards
(as go-mplex and js-mplex do), so our stream 1 and the peer's stream 1 are two
different streams, told apart by the flag's initiator/receiver bit.

**Stream id mapping.** The opaque ids of the muxer event API are
``wire_id * 2`` for streams we opened and ``wire_id * 2 + 1`` for streams the peer
opened: even ids are ours, odd ids are theirs, as with the ``StreamOpened`` events.

mplex has no flow control, ping or GoAway frame: :meth:`MplexSession.send_data`
always takes everything, :meth:`MplexSession.send_window` is unbounded, and
``SendWindowUpdated`` / ``PingAcked`` / ``GoAwayReceived`` are never emitted. Memory
is bounded instead by resetting a stream whose unread data exceeds
``max_buffered_per_stream`` (the spec's "slow reader" rule).

Peer behaviour we tolerate, as go-mplex does: data, close or reset for an unknown
(e.g. already reset) stream is ignored, and so is data after the peer closed its side.
Protocol errors (session over): a NewStream for a stream that is still open, flag 7,
a frame over ``max_message_size``, a malformed varint.
"""

from __future__ import annotations

from ..codec.varint import decode_uvarint, encode_uvarint
from ..errors import DecodeError
from .muxer_events import (DataReceived, MuxerError, SessionTerminated, StreamClosedError,
                           StreamEnded, StreamLimitError, StreamOpened, StreamReset)

__all__ = ["PROTOCOL_ID", "MplexSession", "UNLIMITED_WINDOW"]

PROTOCOL_ID = "/mplex/6.7.0"

NEW_STREAM = 0
MESSAGE_RECEIVER = 1
MESSAGE_INITIATOR = 2
CLOSE_RECEIVER = 3
CLOSE_INITIATOR = 4
RESET_RECEIVER = 5
RESET_INITIATOR = 6

#: What :meth:`MplexSession.send_window` reports: mplex never limits a sender.
UNLIMITED_WINDOW = 1 << 62

MplexEvent = StreamOpened | DataReceived | StreamEnded | StreamReset | SessionTerminated


def _byte_view(data: bytes | bytearray | memoryview) -> bytes | bytearray | memoryview:
    """``data`` itself, or a flat byte view of a memoryview of another shape."""
    if isinstance(data, memoryview) and (data.format != "B" or data.ndim != 1):
        return data.cast("B")
    return data


class _Stream:
    """Per-stream state. Frame headers are precomputed: they never change."""

    __slots__ = ("data_header", "close_header", "reset_header", "inbound",
                 "local_closed", "remote_closed", "buffered")

    def __init__(self, wire_id: int, inbound: bool) -> None:
        # The stream's opener sends the *Initiator flags, the other side *Receiver.
        data, close, reset = ((MESSAGE_RECEIVER, CLOSE_RECEIVER, RESET_RECEIVER) if inbound
                              else (MESSAGE_INITIATOR, CLOSE_INITIATOR, RESET_INITIATOR))
        self.data_header = encode_uvarint(wire_id << 3 | data)
        self.close_header = encode_uvarint(wire_id << 3 | close)
        self.reset_header = encode_uvarint(wire_id << 3 | reset)
        self.inbound = inbound
        self.local_closed = False
        self.remote_closed = False
        self.buffered = 0


class MplexSession:
    """One mplex session over one (secured) connection.

    ``is_initiator`` says which side dialed the connection; mplex numbers streams
    per opener, so it does not change any byte on the wire (kept for the common
    muxer interface). ``max_streams`` bounds the open streams in each direction
    (excess inbound NewStreams are reset), ``max_buffered_per_stream`` the bytes
    received but not yet :meth:`consumed` on a stream, ``max_message_size`` the
    payload of one frame, both sent (larger writes are split) and received.
    """

    #: mplex has no ping frame: :meth:`ping` does nothing, no ``PingAcked`` comes.
    supports_ping = False

    def __init__(self, is_initiator: bool, *, max_streams: int = 1024,
                 max_buffered_per_stream: int = 4 * 1024 * 1024,
                 max_message_size: int = 1 << 20) -> None:
        if max_streams < 0 or max_buffered_per_stream < 1 or max_message_size < 1:
            raise ValueError("limits must be positive")
        self.is_initiator = is_initiator
        self.max_streams = max_streams
        self.max_buffered_per_stream = max_buffered_per_stream
        self.max_message_size = max_message_size
        self._streams: dict[int, _Stream] = {}
        self._n_inbound = 0
        self._n_outbound = 0
        self._next_wire_id = 0
        self._in = bytearray()
        self._out = bytearray()
        self._going_away = False
        self._terminated = False

    # ------------------------------------------------------------------ state

    @property
    def is_terminated(self) -> bool:
        """True once the peer broke the protocol; the session ignores further input."""
        return self._terminated

    #: mplex has no windows: a connection pushes back on a sender with TCP instead.
    has_flow_control = False

    @property
    def outbound_unacked(self) -> int:
        """mplex opens need no acknowledgement: always 0 (no ACK backlog)."""
        return 0

    @property
    def is_going_away(self) -> bool:
        """True after :meth:`go_away`: no new streams either way."""
        return self._going_away

    def data_to_send(self) -> bytes | bytearray:
        """Return (and dequeue) every frame queued for the wire; ``b""`` when none."""
        if not self._out:
            return b""
        out, self._out = self._out, bytearray()
        return out

    def get_timer(self) -> float | None:
        """mplex has no timers: always ``None``."""
        return None

    def handle_timer(self, now: float) -> list[MplexEvent]:
        """mplex has no timers: nothing happens."""
        return []

    # ------------------------------------------------------------ local calls

    def open_stream(self) -> int:
        """Open an outbound stream (NewStream named by its decimal wire id); return its id.

        Raises :class:`StreamLimitError` when ``max_streams`` outbound streams are open,
        or the session is going away or terminated.
        """
        if self._terminated or self._going_away:
            raise StreamLimitError("the session accepts no new streams")
        if self._n_outbound >= self.max_streams:
            raise StreamLimitError(f"{self.max_streams} outbound streams already open")
        wire_id = self._next_wire_id
        self._next_wire_id += 1
        name = str(wire_id).encode()
        out = self._out
        out += encode_uvarint(wire_id << 3 | NEW_STREAM)
        out += encode_uvarint(len(name))
        out += name
        self._streams[wire_id << 1] = _Stream(wire_id, inbound=False)
        self._n_outbound += 1
        return wire_id << 1

    def send_data(self, stream_id: int, data: bytes | bytearray | memoryview) -> int:
        """Queue ``data`` on a stream (split into frames of ``max_message_size``).

        Takes everything and returns ``len(data)``. Empty data sends nothing: a
        zero-length data frame would read as end-of-stream to some peers.
        Raises :class:`StreamClosedError` if the stream is unknown, reset, or closed
        by us.
        """
        stream = self._writable(stream_id)
        data = _byte_view(data)
        total = len(data)
        header = stream.data_header
        limit = self.max_message_size
        out = self._out
        if total <= limit:
            if total:
                out += header
                out += encode_uvarint(total)
                out += data
            return total
        view = memoryview(data)
        for start in range(0, total, limit):
            chunk = view[start:start + limit]
            out += header
            out += encode_uvarint(len(chunk))
            out += chunk
        return total

    def send_window(self, stream_id: int) -> int:
        """How much :meth:`send_data` would take now: unbounded, or 0 once we closed."""
        stream = self._streams.get(stream_id)
        if stream is None:
            raise StreamClosedError(f"unknown stream {stream_id}")
        return 0 if stream.local_closed else UNLIMITED_WINDOW

    def close_stream(self, stream_id: int) -> None:
        """Half-close: we send no more data; the peer may go on sending."""
        stream = self._writable(stream_id)
        self._out += stream.close_header
        self._out += b"\x00"
        stream.local_closed = True
        if stream.remote_closed:
            self._forget(stream_id, stream)

    def reset_stream(self, stream_id: int) -> None:
        """Abort a stream both ways; buffered and in-flight data is dropped."""
        stream = self._streams.get(stream_id)
        if stream is None:
            raise StreamClosedError(f"unknown or already reset stream {stream_id}")
        self._send_reset(stream_id, stream)

    def consumed(self, stream_id: int, n: int, now: float = 0.0) -> None:
        """The application read ``n`` bytes of a stream: they no longer count against
        ``max_buffered_per_stream``. A stream already gone is not an error here (the
        application may drain data after the stream ended or was forgotten).
        """
        if n < 0:
            raise ValueError("consumed byte count must be >= 0")
        stream = self._streams.get(stream_id)
        if stream is not None:
            stream.buffered = max(0, stream.buffered - n)

    def ping(self, opaque: int) -> None:
        """mplex has no ping frame: this does nothing and no ``PingAcked`` follows."""

    def go_away(self, code: int = 0) -> None:
        """Refuse new streams both ways (mplex has no GoAway frame: nothing is sent).

        Existing streams go on; inbound NewStreams are reset from now on.
        """
        self._going_away = True

    # -------------------------------------------------------------- receiving

    def receive_data(self, data: bytes | bytearray | memoryview,
                     now: float | None = None) -> list[MplexEvent]:
        """Feed bytes from the peer (any split); return the resulting events.

        ``now`` is accepted for the muxer interface and unused (mplex keeps no time).

        Never raises for peer input: a protocol violation returns a
        :class:`SessionTerminated` (with a :class:`MuxerError`) and all later input
        is ignored.
        """
        if self._terminated:
            return []
        data = _byte_view(data)
        if self._in:
            self._in += data
            buf: bytes | bytearray | memoryview = self._in
        else:
            buf = data
        events: list[MplexEvent] = []
        view = memoryview(buf)
        try:
            pos = self._parse_frames(view, events)
            rest = len(view) - pos
        except (DecodeError, MuxerError) as exc:
            # A fresh error without a traceback: the raising frames hold memoryviews
            # of the caller's buffer, which would pin it while the event lives.
            prefix = "" if isinstance(exc, MuxerError) else "bad frame: "
            self._terminate(MuxerError(f"{prefix}{exc}"), events)
            return events
        finally:
            view.release()  # so that self._in may be resized below
        if buf is self._in:
            del self._in[:pos]
        elif rest:
            self._in = bytearray(buf[pos:])
        return events

    def _parse_frames(self, view: memoryview, events: list[MplexEvent]) -> int:
        """Handle every complete frame in ``view``; return where the first partial
        frame (if any) starts."""
        pos = 0
        end = len(view)
        limit = self.max_message_size
        while pos < end:
            decoded = decode_uvarint(view, pos)
            if decoded is None:
                break
            header, body = decoded
            decoded = decode_uvarint(view, body)
            if decoded is None:
                break
            length, body = decoded
            if length > limit:
                raise MuxerError(f"frame of {length} bytes exceeds {limit}")
            if end - body < length:
                break
            pos = body + length
            self._handle_frame(header >> 3, header & 7, view[body:pos], events)
        return pos

    def _handle_frame(self, wire_id: int, flag: int, payload: memoryview,
                      events: list[MplexEvent]) -> None:
        # Even flags come from the stream's opener: the peer, so the id is odd.
        stream_id = (wire_id << 1) | (~flag & 1)
        if flag == NEW_STREAM:
            self._on_new_stream(wire_id, stream_id, events)
            return
        if flag == 7:
            raise MuxerError(f"invalid flag 7 on stream {wire_id}")
        stream = self._streams.get(stream_id)
        if stream is None:
            return  # go-mplex: normal after we reset and forgot the stream
        if flag <= MESSAGE_INITIATOR:
            self._on_message(stream_id, stream, payload, events)
        elif flag <= CLOSE_INITIATOR:
            if not stream.remote_closed:
                stream.remote_closed = True
                events.append(StreamEnded(stream_id))
                if stream.local_closed:
                    self._forget(stream_id, stream)
        else:
            self._forget(stream_id, stream)
            events.append(StreamReset(stream_id))

    def _on_new_stream(self, wire_id: int, stream_id: int, events: list[MplexEvent]) -> None:
        if stream_id in self._streams:
            raise MuxerError(f"NewStream for stream {wire_id}, which is still open")
        if self._going_away or self._n_inbound >= self.max_streams:
            self._out += encode_uvarint(wire_id << 3 | RESET_RECEIVER)
            self._out += b"\x00"
            return
        self._streams[stream_id] = _Stream(wire_id, inbound=True)
        self._n_inbound += 1
        events.append(StreamOpened(stream_id))

    def _on_message(self, stream_id: int, stream: _Stream, payload: memoryview,
                    events: list[MplexEvent]) -> None:
        if stream.remote_closed or not payload:
            return  # go-mplex drops data after the peer's close, as do we
        stream.buffered += len(payload)
        if stream.buffered > self.max_buffered_per_stream:
            self._send_reset(stream_id, stream)
            events.append(StreamReset(
                stream_id, f"more than {self.max_buffered_per_stream} bytes unread"))
            return
        events.append(DataReceived(stream_id, bytes(payload)))

    # ---------------------------------------------------------------- helpers

    def _writable(self, stream_id: int) -> _Stream:
        stream = self._streams.get(stream_id)
        if stream is None:
            raise StreamClosedError(f"unknown or reset stream {stream_id}")
        if stream.local_closed:
            raise StreamClosedError(f"stream {stream_id} is closed for writing")
        return stream

    def _send_reset(self, stream_id: int, stream: _Stream) -> None:
        self._out += stream.reset_header
        self._out += b"\x00"
        self._forget(stream_id, stream)

    def _forget(self, stream_id: int, stream: _Stream) -> None:
        del self._streams[stream_id]
        if stream.inbound:
            self._n_inbound -= 1
        else:
            self._n_outbound -= 1

    def _terminate(self, error: MuxerError, events: list[MplexEvent]) -> None:
        self._terminated = True
        self._in = bytearray()
        self._streams.clear()
        self._n_inbound = self._n_outbound = 0
        events.append(SessionTerminated(f"protocol error: {error}", error))
