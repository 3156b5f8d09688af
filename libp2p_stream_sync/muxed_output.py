"""What one muxer session's streams have to send, and who waits for it to be sent.

:class:`StreamOutput` moves the data and FINs the application wrote into the muxer
(one stream at a time, in chunks, while the link below has room), parks streams that
ran out of send window until the muxer grants more, and wakes the streams waiting in
``flush()`` once the link reports their bytes sent. Reactor thread only; used by
:class:`~.muxed.MuxedSession`.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING

from .engines import muxer_events as mev

if TYPE_CHECKING:
    from .muxed import MuxedSession
    from .stream import Stream

#: Largest piece of one stream's data handed to the muxer at once.
STREAM_CHUNK = 256 * 1024


class StreamOutput:
    """The flush queue of one session: streams with output for the muxer, streams
    blocked on send window, and the sent-marks streams wait for."""

    __slots__ = ("sent_watch", "_session", "to_flush", "window_blocked")

    def __init__(self, session: "MuxedSession") -> None:
        self._session = weakref.proxy(session)  # the session owns us: no cycle
        #: Streams with data or a FIN for the muxer, in the order they asked.
        self.to_flush: dict[int, Stream] = {}
        #: Streams with data but no send window; back in :attr:`to_flush` on an update.
        self.window_blocked: dict[int, Stream] = {}
        #: Streams waiting in flush() until the link's ``bytes_sent`` reaches their mark.
        self.sent_watch: dict[Stream, int] = {}

    def add(self, stream: "Stream") -> None:
        """``stream`` has data or a FIN to send (reactor side of
        ``schedule_stream_flush``)."""
        session = self._session
        if session.table.record_of(stream) is not None:
            self.to_flush[stream.stream_id] = stream
            session.request_flush()
        else:
            stream.flush_pass_done()

    def pull(self) -> None:
        """Hand queued stream data (and FINs) to the muxer while the link has room."""
        session = self._session
        link = session.link
        muxer = session.muxer
        streams = session.streams
        to_flush = self.to_flush
        while to_flush and link.has_output_room():
            sid, stream = next(iter(to_flush.items()))
            blocked = False
            while link.has_output_room():
                window = muxer.send_window(sid)
                if window <= 0:
                    blocked = True
                    break
                chunk = stream.pop_send(min(window, STREAM_CHUNK))
                if chunk is None:
                    break
                try:
                    taken = muxer.send_data(sid, chunk)
                except mev.StreamClosedError:
                    stream.fail(ConnectionResetError("stream closed by the muxer"))
                    session.table.forget(sid)
                    break
                if taken < len(chunk):
                    stream.unpop_send(chunk[taken:])
                stream.taken_by_muxer(taken, link.take_muxer_output())
            record = streams.get(sid)
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
                    session.table.forget(sid)
            if not pending:
                to_flush.pop(sid, None)
            elif blocked:
                to_flush.pop(sid, None)
                self.window_blocked[sid] = stream
            else:
                break  # the link is full: resume when it drains

    def forget(self, sid: int) -> None:
        """Stream ``sid`` is retired: nothing more of it to send."""
        self.to_flush.pop(sid, None)
        self.window_blocked.pop(sid, None)

    def watch_sent(self, stream: "Stream", mark: int) -> None:
        """Call ``stream.wire_sent`` once the link's ``bytes_sent`` reaches ``mark``
        (reactor side of ``notify_when_sent``)."""
        session = self._session
        sent = session.link.bytes_sent
        if sent >= mark:
            stream.wire_sent(sent)
        elif session.closed:
            stream.fail_writes(copy_error(session.close_error), frames_lost=True)
        else:
            self.sent_watch[stream] = mark

    def wake_sent_watchers(self, sent: int) -> None:
        """The link has sent ``sent`` bytes so far: wake the streams whose mark it is."""
        for stream, mark in list(self.sent_watch.items()):
            if mark <= sent:
                del self.sent_watch[stream]
                stream.wire_sent(sent)

    def close(self, error: OSError) -> None:
        """The session is over: fail the flushing streams (their frames die here)."""
        for stream in self.sent_watch:
            stream.fail_writes(copy_error(error), frames_lost=True)
        self.sent_watch.clear()


def copy_error(error: OSError) -> OSError:
    """A copy of ``error`` for one stream or waiter (a ``ConnectionError`` keeps its
    type, anything else becomes ``ConnectionResetError``), caused by ``error``."""
    # Each stream gets its own exception object: one raised in many threads at once
    # would have its traceback rewritten under the others' feet.
    if isinstance(error, ConnectionError):
        copy = type(error)(*error.args)
    else:
        copy = ConnectionResetError(str(error))
    copy.__cause__ = error
    return copy
