"""Reactor-side reading and writing of circuit relay messages (hop and stop streams).

:class:`ReadOneMessage` waits for one length-prefixed message on a stream without a
thread: it holds at most ``MAX_MESSAGE_SIZE`` bytes and a timer, and hands the body
(or the failure) to a callback, with the bytes that came after it (a circuit's first
bytes). :func:`send_and_close` answers and ends a stream.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Callable

from ..codec.circuit import HopMessage, MessageReader, StopMessage, frame
from ..errors import DecodeError

if TYPE_CHECKING:
    from ..connection import Connection
    from ..stream import Stream

log = logging.getLogger(__name__)

#: ``callback(body, rest, error)``: the message's body and the bytes after it, or an
#: error (``DecodeError`` for a malformed or oversized frame, ``TimeoutError``,
#: ``EOFError`` for an end without a message, ``OSError`` for a reset).
Done = Callable[[bytes | None, bytes, BaseException | None], None]


class ReadOneMessage:
    """Read one length-prefixed message from ``stream`` on the reactor (see module)."""

    def __init__(self, conn: "Connection", stream: "Stream",
                 call_later: Callable[[float, Callable[[], None]], Any], timeout: float,
                 callback: Done) -> None:
        """Start at once: reads what already arrived, then watches the stream."""
        self._stream = stream
        self._callback: Done | None = callback
        self._reader = MessageReader()
        self._timer = call_later(timeout, self._timed_out)
        stream.settimeout(0)
        conn.watch_stream(stream, self._on_event)
        self._on_event()

    def _on_event(self) -> None:
        while self._callback is not None:
            try:
                data = self._stream.read(4096)
            except BlockingIOError:
                return
            except OSError as exc:
                self._finish(None, exc)
                return
            if not data:
                self._finish(None, EOFError("the stream ended before a whole message"))
                return
            try:
                body = self._reader.feed(data)
            except DecodeError as exc:
                self._finish(None, exc)
                return
            if body is not None:
                self._finish(body, None)
                return

    def _timed_out(self) -> None:
        self._timer = None
        self._finish(None, TimeoutError("no whole message in time"))

    def _finish(self, body: bytes | None, error: BaseException | None) -> None:
        callback, self._callback = self._callback, None
        if callback is None:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        try:
            callback(body, bytes(self._reader.rest), error)
        except Exception:
            log.exception("relay message callback %r failed", callback)
            self._stream.reset()


def send_and_close(stream: "Stream", message: "HopMessage | StopMessage") -> None:
    """Write ``message`` and close the stream (reset if the write fails)."""
    try:
        stream.write(frame(message))
        stream.close()
    except OSError as exc:
        log.debug("relay answer to %s lost: %s", stream.peer_id, exc)
        stream.reset()


def send(stream: "Stream", message: "HopMessage | StopMessage") -> bool:
    """Write ``message`` and keep the stream (it becomes a circuit); False (and the
    stream reset) when the write fails."""
    try:
        stream.write(frame(message))
    except OSError as exc:
        log.debug("relay message to %s lost: %s", stream.peer_id, exc)
        stream.reset()
        return False
    return True
