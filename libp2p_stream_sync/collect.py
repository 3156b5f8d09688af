"""Reactor-side readers of whole responses (``Connection.collect``: identify).

A :class:`Collector` gathers one stream's bytes, bounded in size (``limit``) and time
(``timeout``), and hands them to a callback once the remote ends the stream; no
application thread waits. :class:`Collectors` holds a session's collectors. Reactor
thread only; used by :class:`~.muxed.MuxedSession`.
"""

from __future__ import annotations

import logging
import weakref
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, Callable

from .engines import muxer_events as mev
from .muxed_output import copy_error

if TYPE_CHECKING:
    from .muxed import MuxedSession
    from .stream import Stream

log = logging.getLogger("libp2p_stream_sync.connection")

Callback = Callable[[bytes | None, BaseException | None], None]


class Collector:
    """A reactor-side reader: gathers one stream's bytes for a ``collect`` call."""

    __slots__ = ("limit", "callback", "data", "timer", "sid", "done")

    def __init__(self, limit: int, callback: Callback) -> None:
        self.limit = limit
        self.callback = callback
        self.data = bytearray()
        self.timer: Any = None
        self.sid: int | None = None
        self.done = False

    def finish(self, data: bytes | None, error: BaseException | None) -> None:
        """Call the callback once (data, or the error); stop the timeout."""
        if self.done:
            return
        self.done = True
        if self.timer is not None:
            self.timer.cancel()
        try:
            self.callback(data, error)
        except Exception:
            log.exception("collect callback %r failed", self.callback)


class Collectors:
    """The collectors of one session, by stream id."""

    __slots__ = ("_session", "table")

    def __init__(self, session: "MuxedSession") -> None:
        self._session = weakref.proxy(session)  # the session owns us: no cycle
        #: Stream id -> the collector reading it.
        self.table: dict[int, Collector] = {}

    def collect(self, protocol: str, limit: int, timeout: float, callback: Callback) -> None:
        """Open a ``protocol`` stream, half-close it, gather the response (see
        ``Connection.collect``)."""
        session = self._session
        collector = Collector(limit, callback)
        future: Future = Future()

        def opened(done: Future) -> None:
            if done.cancelled():
                return
            error = done.exception()
            if error is not None:
                collector.finish(None, error)
            elif collector.done:  # timed out meanwhile
                session.table.reset(done.result())
            else:
                self._start(done.result(), collector)

        def expired() -> None:
            collector.timer = None
            if future.cancel():
                session.negotiations.abandon(future)
            if collector.sid is not None and self.table.pop(collector.sid, None):
                session.reset_muxer_stream(collector.sid)
                session.request_flush()
            collector.finish(None, TimeoutError(f"no complete {protocol} response "
                                                f"within {timeout} s"))

        collector.timer = session.reactor.call_later(timeout, expired)
        future.add_done_callback(opened)
        session.open(protocol, future)

    def _start(self, stream: "Stream", collector: Collector) -> None:
        session = self._session
        sid = stream.stream_id
        fin_sent, remote_ended = session.table.take_over(stream)
        collector.sid = sid
        self.table[sid] = collector
        if not fin_sent:
            try:
                session.muxer.close_stream(sid)  # the request is empty: half-close now
            except mev.StreamClosedError:
                pass
        early = stream.take_received()
        if early:
            session.consume(sid, len(early))
            self.gathered(collector, early)
        if remote_ended and self.table.pop(sid, None) is collector:
            collector.finish(bytes(collector.data), None)
        session.request_flush()

    def gathered(self, collector: Collector, data: Any) -> None:
        """``data`` arrived for ``collector``: keep it, or fail beyond the limit."""
        collector.data += data
        if len(collector.data) > collector.limit:
            sid = collector.sid
            if sid is not None and self.table.pop(sid, None) is collector:
                self._session.reset_muxer_stream(sid)
                self._session.request_flush()
            collector.finish(None, ConnectionAbortedError(
                f"response larger than {collector.limit} bytes"))

    def ended(self, sid: int) -> bool:
        """The remote ended stream ``sid``: True if a collector had it (now done)."""
        collector = self.table.pop(sid, None)
        if collector is None:
            return False
        collector.finish(bytes(collector.data), None)
        return True

    def reset(self, sid: int, reason: str) -> None:
        """The remote reset stream ``sid``: its collector (if any) fails."""
        collector = self.table.pop(sid, None)
        if collector is not None:
            collector.finish(None, ConnectionResetError(f"stream reset: {reason}"))

    def close(self, error: OSError) -> None:
        """The session is over: every collector fails with a copy of ``error``."""
        for collector in list(self.table.values()):
            collector.finish(None, copy_error(error))
        self.table.clear()
