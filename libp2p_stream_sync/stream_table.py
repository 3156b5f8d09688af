"""The open streams of one muxer session, and the one place they are retired.

:class:`StreamTable` holds one :class:`StreamRecord` per stream the application has,
the inbound streams counted in the owner's stream bounds, the reactor-side watchers
(``watch_stream``), and notices when the session has had no stream for
``Limits.idle_connection_timeout`` (it then closes the link). Reactor thread only;
used by :class:`~.muxed.MuxedSession`.
"""

from __future__ import annotations

import logging
import time
import weakref
from typing import TYPE_CHECKING, Any, Callable

from .muxed_output import copy_error
from .stream import Stream

if TYPE_CHECKING:
    from .muxed import MuxedSession
    from .negotiation import Negotiation

log = logging.getLogger("libp2p_stream_sync.connection")


class StreamRecord:
    """The reactor's side of one open stream; the :class:`Stream` holds the
    application's side. Retired in one place, :meth:`StreamTable.forget`."""

    __slots__ = ("stream", "fin_sent", "remote_ended", "close_timer", "counted")

    def __init__(self, stream: Stream) -> None:
        self.stream = stream
        self.fin_sent = False  # we sent our FIN
        self.remote_ended = False  # the remote sent its FIN
        #: Resets a stream we closed whose remote side never finishes.
        self.close_timer: Any = None
        #: Counted in the owner's inbound-streams-per-peer-and-protocol limit.
        self.counted = False


class StreamTable:
    """One session's streams: records, inbound counts, watchers, idle detection."""

    __slots__ = ("_idle_since", "_idle_timer", "_inbound_live", "_owner", "records", "_session",
                 "watchers")

    def __init__(self, session: "MuxedSession") -> None:
        self._session = weakref.proxy(session)  # the session owns us: no cycle
        self._owner = session.owner
        #: Stream id -> record, for streams the application has.
        self.records: dict[int, StreamRecord] = {}
        #: Stream id -> reactor-side reader to call on its events (see watch).
        self.watchers: dict[int, Callable[[], None]] = {}
        #: Inbound streams counted in the owner's per-peer and node-wide stream bounds
        #: (from the remote's SYN until negotiation fails or the stream is retired).
        self._inbound_live: set[int] = set()
        self._idle_timer: Any = None
        self._idle_since = 0.0

    def add(self, sid: int, protocol: str) -> tuple[Stream, StreamRecord]:
        """A new stream ``sid`` for the application."""
        session = self._session
        stream = Stream(session.calls, sid, session.peer, protocol)
        record = self.records[sid] = StreamRecord(stream)
        return stream, record

    def record_of(self, stream: Stream) -> StreamRecord | None:
        """The record of ``stream`` while the session still routes it."""
        record = self.records.get(stream.stream_id)
        return record if record is not None and record.stream is stream else None

    def count_inbound(self, sid: int) -> None:
        """Stream ``sid`` was admitted by the owner's stream bounds: hold its count."""
        self._inbound_live.add(sid)

    def release_inbound(self, sid: int) -> None:
        """Give back stream ``sid``'s count in the owner's stream bounds (once)."""
        if sid in self._inbound_live:
            self._inbound_live.discard(sid)
            self._owner.inbound_stream_gone(self._session.peer)

    # -- reactor-side readers ---------------------------------------------------------------
    def watch(self, stream: Stream, on_event: Callable[[], None]) -> None:
        """Call ``on_event()`` on the reactor whenever ``stream`` receives data, its
        end or a reset (``Connection.watch_stream``). Stops when it is forgotten."""
        if self.record_of(stream) is not None:
            self.watchers[stream.stream_id] = on_event

    def notify(self, sid: int) -> None:
        """Call stream ``sid``'s watcher, if it has one."""
        on_event = self.watchers.get(sid)
        if on_event is not None:
            try:
                on_event()
            except Exception:
                log.exception("stream watcher %r failed", on_event)

    def take_over(self, stream: Stream) -> tuple[bool, bool]:
        """Stop routing ``stream`` to the application (a collector reads it now);
        return whether we sent our FIN and whether the remote ended it."""
        session = self._session
        sid = stream.stream_id
        record = self.records.pop(sid, None)
        session.pressure.drop(sid)
        session.to_flush.pop(sid, None)
        stream.mark_finished()
        return (record is not None and record.fin_sent,
                record is not None and record.remote_ended)

    # -- retiring streams -----------------------------------------------------------------
    def drop_negotiation(self, sid: int) -> "Negotiation | None":
        """Forget a negotiation that will not become a stream."""
        session = self._session
        neg = session.negotiations.pop(sid)
        self.release_inbound(sid)
        if not self.records and not session.negotiations.table:
            self.became_idle()
        return neg

    def forget(self, sid: int) -> None:
        """Retire stream ``sid`` (the one place a stream is retired)."""
        session = self._session
        self.release_inbound(sid)
        record = self.records.pop(sid, None)
        negotiations = session.negotiations
        neg = negotiations.table.get(sid)
        if neg is not None and record is not None and neg.stream is record.stream:
            negotiations.pop(sid)  # a lazy open retired while still negotiating
        session.output.forget(sid)
        self.watchers.pop(sid, None)
        if record is not None:
            record.stream.mark_finished()
            if record.close_timer is not None:
                record.close_timer.cancel()
                record.close_timer = None
            if record.counted:
                record.counted = False
                self._owner.inbound_stream_finished(record.stream)
        session.pressure.forget(sid)
        if not self.records and not negotiations.table:
            self.became_idle()

    def reset(self, stream: Stream) -> None:
        """Reset ``stream`` locally: on the wire, retired, failed."""
        session = self._session
        if self.record_of(stream) is not None:
            session.reset_muxer_stream(stream.stream_id)
            self.forget(stream.stream_id)
        stream.fail(ConnectionResetError("stream reset locally"))
        session.request_flush()

    def reset_stalling(self, streams: list[Stream], held_for: float) -> None:
        """The application did not catch up within ``held_for`` s: reset ``streams``."""
        session = self._session
        for stream in streams:
            log.info("%r: resetting %r: %d unread bytes held the connection for %.0f s",
                     session.conn, stream, stream.unread_bytes, held_for)
            session.reset_muxer_stream(stream.stream_id)
            self.forget(stream.stream_id)
            stream.fail(ConnectionResetError(
                f"stream reset: its unread data stalled the connection for "
                f"{held_for:.0f} s"))
        session.request_flush()

    def close(self) -> None:
        """The session is over: no idle check; the inbound counts are given back."""
        if self._idle_timer is not None:
            self._idle_timer.cancel()
        for sid in list(self._inbound_live):
            self.release_inbound(sid)

    def fail_all(self, error: OSError, sent: int) -> None:
        """Fail and retire every stream (the link has sent ``sent`` bytes so far)."""
        for sid, record in list(self.records.items()):
            stream = record.stream
            frames_lost = stream.wire_mark > sent  # its frames are still in the link
            if record.remote_ended:
                stream.fail_writes(copy_error(error), frames_lost)
            else:
                stream.fail(copy_error(error), frames_lost)
            if self.watchers:
                self.notify(sid)
            self.forget(sid)

    # -- idle detection -------------------------------------------------------------------
    def became_idle(self) -> None:
        """No stream and no negotiation left: close the link after the idle timeout."""
        timeout = self._owner.limits.idle_connection_timeout
        self._idle_since = time.monotonic()
        if (timeout is not None and self._idle_timer is None
                and self._session.is_open):
            self._idle_timer = self._session.reactor.call_later(timeout, self._idle_check)

    def _idle_check(self) -> None:
        self._idle_timer = None
        session = self._session
        if not session.is_open or self.records or session.negotiations.table:
            return  # busy again: re-armed when the last stream goes
        timeout = self._owner.limits.idle_connection_timeout
        if getattr(session.conn, "keep_alive", False):  # a relay reservation holds it
            self._idle_since = time.monotonic()
        remaining = self._idle_since + timeout - time.monotonic()
        if remaining > 0:
            self._idle_timer = session.reactor.call_later(remaining, self._idle_check)
            return
        log.debug("%r: closing after %.0f s without streams", session.conn, timeout)
        session.link.close()
