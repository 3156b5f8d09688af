"""The calls a muxed stream makes on its connection (``Stream``'s ``conn``).

The thread-safe ones only queue work for the reactor; :class:`StreamCalls` carries it
out there on its :class:`~.muxed.MuxedSession`: hand the stream's output to the flush
queue, give back window for what the application read, reset, and reset a stream we
closed that the remote never finishes (``Limits.stream_close_timeout``).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .muxed import MuxedSession
    from .stream import Stream

log = logging.getLogger("libp2p_stream_sync.connection")


class StreamCalls:
    """A session's entry points for its streams (thread-safe unless noted)."""

    def __init__(self, session: "MuxedSession") -> None:
        self._session = session
        self._reactor = session.reactor

    def schedule_stream_flush(self, stream: "Stream") -> None:
        """*Thread-safe.* The stream has data or a FIN to send."""
        self._reactor.call_soon(self._session.output.add, stream)

    def report_consumed(self, stream: "Stream", n: int, on_reactor: bool = False) -> None:
        """*Thread-safe.* The application consumed ``n`` bytes of the stream."""
        if on_reactor:
            self._stream_consumed(stream, n)
        else:
            self._reactor.call_soon(self._stream_consumed, stream, n)

    @property
    def connection(self) -> Any:
        """The connection the session's streams run on."""
        return self._session.conn

    @property
    def bytes_sent(self) -> int:
        """*Thread-safe.* Bytes the link has sent so far."""
        return self._session.link.bytes_sent

    def notify_when_sent(self, stream: "Stream", mark: int) -> None:
        """*Thread-safe.* Call ``stream.wire_sent`` once ``bytes_sent`` reaches ``mark``
        (the stream fails instead if the session closes first)."""
        self._reactor.call_soon(self._session.output.watch_sent, stream, mark)

    def reset_stream(self, stream: "Stream") -> None:
        """*Thread-safe.* Reset the stream on the wire."""
        self._reactor.call_soon(self._session.table.reset, stream)

    def stream_closed(self, stream: "Stream", dropped: int) -> None:
        """*Thread-safe.* The application closed a stream the remote has not finished."""
        self._reactor.call_soon(self._stream_closed, stream, dropped)

    def _stream_closed(self, stream: "Stream", dropped: int) -> None:
        if dropped:
            self._stream_consumed(stream, dropped)
        session = self._session
        record = session.table.record_of(stream)
        if record is not None and record.close_timer is None:
            record.close_timer = self._reactor.call_later(
                session.owner.limits.stream_close_timeout,
                lambda: self._close_timed_out(stream))

    def _close_timed_out(self, stream: "Stream") -> None:
        session = self._session
        record = session.table.record_of(stream)
        if record is not None:
            record.close_timer = None
            log.debug("%r: resetting %r: closed by us, never finished by the remote",
                      session.conn, stream)
            session.table.reset(stream)

    def _stream_consumed(self, stream: "Stream", n: int) -> None:
        session = self._session
        sid = stream.stream_id
        if session.table.record_of(stream) is not None:
            session.consume(sid, n)
            session.pressure.look(sid, stream.unread_bytes)
            session.request_flush()
        session.pressure.consumed()
