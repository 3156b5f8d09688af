"""ping (``/ipfs/ping/1.0.0``): echo 32-byte payloads to measure round trips.

Wire format (libp2p specs, ``ping/ping.md``): the dialer writes 32 random bytes, the
listener echoes them back, repeated on the same stream until the dialer closes it.
The spec asks listeners to accept at most two ping streams per peer at a time.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import TYPE_CHECKING, Any, Callable

from ..errors import ProtocolError
from ..timeouts import step_timeout

if TYPE_CHECKING:
    from ..connection import Connection
    from ..identity import PeerId
    from ..stream import Stream

log = logging.getLogger(__name__)

PROTOCOL = "/ipfs/ping/1.0.0"
PAYLOAD_SIZE = 32
#: A responder resets a ping stream that stays silent this long.
IDLE_TIMEOUT = 60.0
#: Concurrent inbound ping streams allowed per peer (spec: "at most two").
MAX_STREAMS_PER_PEER = 2
#: A responder resets a ping stream whose echoes pile up unsent beyond this (the
#: dialer does not read them; an honest one waits for each 32-byte echo).
MAX_UNSENT = 64 * 1024


class PingMismatch(ProtocolError):
    """The peer echoed different bytes than we sent."""


class PingResponder:
    """Serves inbound ping streams on the reactor thread, at most
    :data:`MAX_STREAMS_PER_PEER` per peer; a silent stream holds no thread."""

    def __init__(self, idle_timeout: float = IDLE_TIMEOUT) -> None:
        self.idle_timeout = idle_timeout
        self._lock = threading.Lock()
        self._active: dict["PeerId", set] = {}

    def admit(self, stream: "Stream") -> bool:
        """Count a new stream; False when its peer already has too many."""
        with self._lock:
            streams = self._active.setdefault(stream.peer_id, set())
            if len(streams) >= MAX_STREAMS_PER_PEER:
                # A stream whose remote already finished is ending: a dialer that
                # pings again right after closing (its FIN came before this SYN)
                # must not be refused while our responder thread catches up.
                streams.difference_update([s for s in streams
                                           if getattr(s, "input_finished", False)])
                if len(streams) >= MAX_STREAMS_PER_PEER:
                    return False
            streams.add(stream)
            return True

    def release(self, stream: "Stream") -> None:
        with self._lock:
            streams = self._active.get(stream.peer_id)
            if streams is not None:
                streams.discard(stream)
                if not streams:
                    del self._active[stream.peer_id]

    def start(self, conn: "Connection", stream: "Stream",
              call_later: Callable[[float, Callable[[], None]], Any]) -> bool:
        """Reactor thread: serve ``stream`` without a thread; False when refused.

        ``call_later(delay, fn)`` schedules ``fn`` on the reactor (returns a handle
        with ``cancel()``).
        """
        if not self.admit(stream):
            return False
        _Echo(self, conn, stream, call_later).start()
        return True


class _Echo:
    """One inbound ping stream served on the reactor: echo whole payloads as they
    come, reset when silent for ``idle_timeout`` or when the peer does not read."""

    __slots__ = ("responder", "conn", "stream", "call_later", "partial", "last_active",
                 "timer", "done")

    def __init__(self, responder: PingResponder, conn: "Connection", stream: "Stream",
                 call_later: Callable[[float, Callable[[], None]], Any]) -> None:
        self.responder = responder
        self.conn = conn
        self.stream = stream
        self.call_later = call_later
        self.partial = b""
        self.last_active = time.monotonic()
        self.timer: Any = None
        self.done = False

    def start(self) -> None:
        self.stream.settimeout(0)  # reads on the reactor never wait
        self.timer = self.call_later(self.responder.idle_timeout, self._check_idle)
        self.conn.watch_stream(self.stream, self.on_event)
        self.on_event()  # payload bytes (or the end) may have come with the negotiation

    def on_event(self) -> None:
        """Echo what has arrived; loop, as the end may be buffered behind the data."""
        while not self.done:
            try:
                data = self.stream.read()
            except BlockingIOError:
                return
            except OSError as exc:  # a reset or a closed connection
                log.debug("ping stream from %s ended: %s", self.stream.peer_id, exc)
                self._finish(reset=True)
                return
            if not data:  # the dialer is done
                self._finish(reset=False)
                try:
                    self.stream.close()
                except OSError as exc:  # the connection went while our echo was queued
                    log.debug("ping stream from %s ended: %s", self.stream.peer_id, exc)
                return
            self.last_active = time.monotonic()
            self._echo(self.partial + data)

    def _echo(self, data: bytes) -> None:
        whole = len(data) - len(data) % PAYLOAD_SIZE
        self.partial = data[whole:]
        if whole:
            try:
                self.stream.write(data[:whole])
            except OSError:
                self._finish(reset=True)
                return
        if self.conn.unsent_bytes(self.stream) > MAX_UNSENT:
            log.info("resetting a ping stream from %s: it does not read its pongs",
                     self.stream.peer_id)
            self._finish(reset=True)

    def _check_idle(self) -> None:
        self.timer = None
        if self.done:
            return
        remaining = self.last_active + self.responder.idle_timeout - time.monotonic()
        if remaining > 0:
            self.timer = self.call_later(remaining, self._check_idle)
            return
        log.debug("resetting a ping stream from %s: silent for %.0f s", self.stream.peer_id,
                  self.responder.idle_timeout)
        self._finish(reset=True)

    def _finish(self, *, reset: bool) -> None:
        self.done = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if reset:
            self.stream.reset()
        self.responder.release(self.stream)


def ping_stream(stream: "Stream", count: int, deadline: float) -> list[float]:
    """Blocking: ``count`` round trips on an open ping stream; seconds for each.

    ``deadline`` may be ``inf``: each round trip then fails after ``STALL_TIMEOUT``.
    """
    rtts = []
    for _ in range(count):
        stream.settimeout(step_timeout(deadline, "ping"))
        payload = os.urandom(PAYLOAD_SIZE)
        start = time.perf_counter()
        stream.write(payload)
        echoed = stream.read_exactly(PAYLOAD_SIZE)
        rtts.append(time.perf_counter() - start)
        if echoed != payload:
            raise PingMismatch(f"{stream.peer_id} echoed different ping bytes")
    return rtts
