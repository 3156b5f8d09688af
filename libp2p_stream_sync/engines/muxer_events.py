"""Events and errors shared by the stream multiplexers (yamux, mplex).

Both muxer engines emit exactly these events, so the connection layer above them
does not care which muxer a connection negotiated. Stream ids are opaque ints,
unique within one session.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ProtocolError


class MuxerError(ProtocolError):
    """The remote broke the multiplexer protocol; the session is over."""


class StreamClosedError(Exception):
    """A local operation named a stream that is unknown, reset, or already closed for it."""


class StreamLimitError(Exception):
    """A new outbound stream cannot be opened (stream limit reached, or the session is ending)."""


@dataclass(slots=True)
class StreamOpened:
    """The remote opened a new stream."""
    stream_id: int


@dataclass(slots=True)
class DataReceived:
    """Bytes arrived on a stream. ``data`` is owned by the receiver of the event."""
    stream_id: int
    data: bytes


@dataclass(slots=True)
class StreamEnded:
    """The remote half-closed a stream: it will send no more data on it."""
    stream_id: int


@dataclass(slots=True)
class StreamReset:
    """A stream was reset: by the remote, or by the engine (``reason`` says why)."""
    stream_id: int
    reason: str = "reset by remote"


@dataclass(slots=True)
class SendWindowUpdated:
    """The remote granted more send window on a stream: ``send_data`` may take more."""
    stream_id: int


@dataclass(slots=True)
class PingAcked:
    """The remote answered one of our pings (``opaque`` is the value we sent)."""
    opaque: int


@dataclass(slots=True)
class GoAwayReceived:
    """The remote will accept no new streams; existing ones go on. ``code`` per the spec."""
    code: int


@dataclass(slots=True)
class SessionTerminated:
    """The session is over: a protocol violation, a keepalive timeout, or a GoAway.

    ``error`` is set when the remote broke the protocol. Whatever ``data_to_send``
    still returns (e.g. our GoAway) should be flushed before closing the transport.
    """
    reason: str
    error: MuxerError | None = None
