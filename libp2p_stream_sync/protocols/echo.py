"""An echo protocol (``/echo/1.0.0``) built only on the public :class:`Control` API.

It is an example as much as a tool: :func:`serve_echo` accepts streams with
``control.accept`` and echoes them on a bounded pool of threads, and
:func:`echo_roundtrip` opens a stream, sends bytes and reads them back. Nothing in
the node knows about it.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import TYPE_CHECKING, Callable

from ..control import DEFAULT_ACCEPT_CAPACITY, Control, PeerLike, default_share
from ..identity import PeerId
from ..logthrottle import LogThrottle
from ..stream import Stream

if TYPE_CHECKING:
    from ..control import IncomingStreams

log = logging.getLogger(__name__)

PROTOCOL = "/echo/1.0.0"
_BUFFER_SIZE = 256 * 1024
_JOIN_TIMEOUT = 5.0


class EchoServer:
    """Echoes every stream of one protocol back to its sender until :meth:`close`.

    A pool of at most ``max_streams`` worker threads, started as load needs them,
    takes streams from the accept queue; further streams wait there (and the node
    drops them when that queue is full). One peer gets at most
    ``max_streams_per_peer`` workers (default: a quarter of them): its further
    streams wait in its own backlog, at most a quarter of ``capacity`` (more are
    reset), so one peer's silent streams cannot take every worker. A stream silent
    for ``idle_timeout`` seconds is reset.
    """

    def __init__(self, control: Control, protocol: str = PROTOCOL, *,
                 max_streams: int = 64, idle_timeout: float = 30.0,
                 capacity: int = DEFAULT_ACCEPT_CAPACITY,
                 max_streams_per_peer: int | None = None) -> None:
        if max_streams < 1:
            raise ValueError("max_streams must be at least 1")
        if max_streams_per_peer is None:
            max_streams_per_peer = default_share(max_streams)
        if max_streams_per_peer < 1:
            raise ValueError("max_streams_per_peer must be at least 1")
        self.protocol = protocol
        self.idle_timeout = idle_timeout
        self.served = 0
        self._max_workers = max_streams
        self._max_per_peer = max_streams_per_peer
        self._max_backlog_per_peer = default_share(capacity)
        self._incoming: IncomingStreams = control.accept(protocol, capacity=capacity)
        self._lock = threading.Lock()
        self._workers: list[threading.Thread] = []
        self._idle_workers = 0
        self._active: set[Stream] = set()
        self._serving: dict[PeerId, int] = {}  # workers busy per peer
        self._backlog: dict[PeerId, collections.deque[Stream]] = {}
        self._closed = False
        self._reset_log = LogThrottle()
        with self._lock:
            self._spawn_worker()

    def __enter__(self) -> "EchoServer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _spawn_worker(self) -> None:
        """Start one more worker (lock held)."""
        worker = threading.Thread(target=self._work, daemon=True,
                                  name=f"echo {self.protocol} #{len(self._workers)}")
        self._workers.append(worker)
        self._idle_workers += 1
        worker.start()

    def _work(self) -> None:
        while True:
            try:
                peer, stream = self._incoming.get()
            except EOFError:
                return
            if not self._claim(peer, stream):
                continue
            next_stream: Stream | None = stream
            while next_stream is not None:
                self._serve(peer, next_stream)
                next_stream = self._next_of(peer, next_stream)

    def _claim(self, peer: PeerId, stream: Stream) -> bool:
        """Take a worker for ``stream``; False when it went to its peer's backlog."""
        reset = False
        with self._lock:
            if self._serving.get(peer, 0) >= self._max_per_peer:
                backlog = self._backlog.setdefault(peer, collections.deque())
                if len(backlog) < self._max_backlog_per_peer and not self._closed:
                    backlog.append(stream)
                    return False
                reset = True
            else:
                self._serving[peer] = self._serving.get(peer, 0) + 1
                self._idle_workers -= 1
                self._active.add(stream)
                if (not self._idle_workers and not self._closed
                        and len(self._workers) < self._max_workers):
                    self._spawn_worker()
        if reset:
            level = logging.WARNING if self._reset_log.ready(peer) else logging.DEBUG
            log.log(level, "echo %s: %s has %d streams served and %d waiting (its share "
                    "is full): resetting its further streams", self.protocol, peer,
                    self._max_per_peer, self._max_backlog_per_peer)
            stream.reset()
            return False
        return True

    def _next_of(self, peer: PeerId, done: Stream) -> Stream | None:
        """``done`` is served: the next stream of ``peer`` waiting, else free the worker."""
        with self._lock:
            self._active.discard(done)
            backlog = self._backlog.get(peer)
            if backlog and not self._closed:
                stream = backlog.popleft()
                self._active.add(stream)
                return stream
            self._backlog.pop(peer, None)
            left = self._serving.get(peer, 0) - 1
            if left > 0:
                self._serving[peer] = left
            else:
                self._serving.pop(peer, None)
            self._idle_workers += 1
            return None

    def _serve(self, peer: "PeerId", stream: "Stream") -> None:
        try:
            echo_stream(stream, self.idle_timeout)
            with self._lock:
                self.served += 1
        except OSError as exc:
            log.debug("echo stream from %s failed: %s", peer, exc)
            stream.reset()

    def close(self) -> None:
        """Stop accepting, reset the streams being served and join the workers."""
        with self._lock:
            self._closed = True
            active = list(self._active)
            active += [s for backlog in self._backlog.values() for s in backlog]
            self._backlog.clear()
            workers = list(self._workers)
        self._incoming.close()
        for stream in active:
            stream.reset()
        for worker in workers:
            worker.join(_JOIN_TIMEOUT)


def serve_echo(control: Control, protocol: str = PROTOCOL, *, max_streams: int = 64,
               idle_timeout: float = 30.0, capacity: int = DEFAULT_ACCEPT_CAPACITY,
               max_streams_per_peer: int | None = None) -> EchoServer:
    """Start echoing streams of ``protocol``; call ``close()`` on the result to stop.

    ``max_streams_per_peer`` workers at most serve one peer (default: a quarter of
    ``max_streams``).
    """
    return EchoServer(control, protocol, max_streams=max_streams, idle_timeout=idle_timeout,
                      capacity=capacity, max_streams_per_peer=max_streams_per_peer)


def echo_stream(stream: "Stream", idle_timeout: float | None = 30.0) -> int:
    """Blocking: write back everything read from ``stream`` until its end; return the count."""
    stream.settimeout(idle_timeout)
    buffer = bytearray(_BUFFER_SIZE)
    view = memoryview(buffer)
    total = 0
    while True:
        n = stream.readinto(buffer)
        if not n:
            break
        stream.write(view[:n])
        total += n
    stream.close()
    return total


def echo_roundtrip(control: Control, peer: PeerLike, data: bytes, *,
                   protocol: str = PROTOCOL, timeout: float = 30.0,
                   progress: Callable[[int], None] | None = None) -> bytes:
    """Open an echo stream to ``peer``, send ``data`` and return what comes back.

    Writing and reading overlap (a writer thread), so any size works under the
    muxer's back-pressure. Raises ``TimeoutError`` when ``timeout`` passes.
    ``progress(n)`` is called with the size of each piece that comes back.
    """
    deadline = time.monotonic() + timeout
    stream = control.open_stream(peer, protocol, timeout=timeout)
    stream.settimeout(max(0.0, deadline - time.monotonic()))
    errors: list[BaseException] = []

    def write_all() -> None:
        try:
            stream.write(data)
            stream.close_write()
        except BaseException as exc:  # reported to the caller below
            errors.append(exc)

    writer = threading.Thread(target=write_all, daemon=True, name="echo-writer")
    writer.start()
    try:
        echoed = _read_until(stream, deadline, progress)
    except BaseException:
        stream.reset()
        raise
    finally:
        writer.join(max(0.0, deadline - time.monotonic()) + 1.0)
    if errors:
        raise errors[0]
    stream.close()
    return echoed


def _read_until(stream: "Stream", deadline: float,
                progress: Callable[[int], None] | None = None) -> bytes:
    parts: list[bytes] = []
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("echo timed out")
        stream.settimeout(remaining)
        chunk = stream.read()
        if not chunk:
            return b"".join(parts)
        parts.append(chunk)
        if progress is not None:
            progress(len(chunk))
