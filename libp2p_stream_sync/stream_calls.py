"""The calls a muxed stream makes on its connection (``Stream``'s ``conn``).

The thread-safe ones hand work to the reactor, or do it in the calling thread while
the reactor is idle (``Reactor.call_now_or_soon``: a small write is then framed,
encrypted and sent without waking the reactor); :class:`StreamCalls` carries it out
on its :class:`~.muxed.MuxedSession`: hand the stream's output to the flush
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

#: A stream's flush is done by the writing thread itself (write-through) when the
#: reactor is idle and at most this many bytes are queued; larger writes are framed
#: and encrypted on the reactor, which pipelines them with the application.
WRITE_THROUGH_MAX = 64 * 1024
#: ... and only on a session with at most this many streams (open or negotiating):
#: with more, streams' writes tend to meet in one reactor turn, whose single
#: encryption and send of all their frames costs less than one per writer.
WRITE_THROUGH_STREAMS = 4


class StreamCalls:
    """A session's entry points for its streams (thread-safe unless noted)."""

    __slots__ = ("_reactor", "_session")

    def __init__(self, session: "MuxedSession") -> None:
        self._session = session
        self._reactor = session.reactor

    def schedule_stream_flush(self, stream: "Stream") -> None:
        """*Thread-safe.* The stream has data or a FIN to send. Up to
        :data:`WRITE_THROUGH_MAX` queued bytes on a session with :meth:`few_streams`
        are sent from this thread when the reactor is idle (write-through); else the
        reactor sends."""
        if self.few_streams() and stream.unsent_bytes <= WRITE_THROUGH_MAX:
            self._reactor.call_now_or_soon(self._session.output.add, stream)
        else:
            self._reactor.call_soon(self._session.output.add, stream)

    def few_streams(self) -> bool:
        """*Thread-safe* (approximate: two dict sizes read without the reactor).
        At most :data:`WRITE_THROUGH_STREAMS` streams open or negotiating: work that
        sends (writes, opens) may be done in the caller's thread."""
        session = self._session
        return len(session.streams) + len(session.negotiations.table) \
            <= WRITE_THROUGH_STREAMS

    def report_consumed(self, stream: "Stream", n: int, on_reactor: bool = False) -> None:
        """*Thread-safe.* The application consumed ``n`` bytes of the stream."""
        if on_reactor:
            self._stream_consumed(stream, n)
        else:
            self._reactor.call_now_or_soon(self._stream_consumed, stream, n)

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
        self._reactor.call_now_or_soon(self._session.table.reset, stream)

    def stream_closed(self, stream: "Stream", dropped: int) -> None:
        """*Thread-safe.* The application closed a stream the remote has not finished."""
        self._reactor.call_now_or_soon(self._stream_closed, stream, dropped)

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
