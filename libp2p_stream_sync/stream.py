"""The blocking :class:`Stream` that application threads use.

A stream's buffers (stream_buffers.py) are shared between the application's threads
and the reactor: the reactor appends received data and takes data to send; application
threads read, write and wait on conditions. One lock guards both directions; nobody
holds it while waiting for the network.
"""

from __future__ import annotations

import io
import socket
import time
from typing import TYPE_CHECKING, Any, NoReturn

from .errors import IncompleteReadError
from .stream_buffers import (CONSUMED_REPORT_STEP, SEND_BUFFER_HIGH_WATER, ReceiveBuffer,
                             SendQueue, StreamState)
from .timeouts import check_timeout

if TYPE_CHECKING:
    from .stream_calls import StreamCalls
    from .identity import PeerId

__all__ = ["CONSUMED_REPORT_STEP", "SEND_BUFFER_HIGH_WATER", "Stream", "buffered_file",
           "check_file_mode"]


class Stream:
    """A bidirectional byte stream to one peer, negotiated for one protocol.

    Safe with one reading thread and one writing thread at a time. Blocking calls
    honour :meth:`settimeout` and raise :class:`TimeoutError` when it expires.

    What a returned :meth:`write` promises: its bytes are in the node's hands, queued
    for the muxer (at most :data:`SEND_BUFFER_HIGH_WATER` of them per stream wait in
    the stream) -- not delivered, not acknowledged by the peer. If the stream fails
    before they are sent, the next ``write``, :meth:`flush`, :meth:`close_write` or
    :meth:`close` raises the stream's error. :meth:`flush` waits until written bytes
    have left the node. A thread blocked in a read or write is woken at once by a
    reset, a failure, or :meth:`close`/:meth:`reset` from another thread, a writer
    also by :meth:`close_write`, and raises (see each method).

    The stream's job is the socket-like API and telling its connection what changed;
    the buffers, their lock and the waiting are in ``stream_buffers``.
    """

    __slots__ = ("peer_id", "protocol", "stream_id", "_conn", "_state", "_rx", "_tx",
                 "_timeout", "__weakref__")

    def __init__(self, conn: "StreamCalls", stream_id: int, peer_id: "PeerId",
                 protocol: str) -> None:
        """Made by the node; applications get streams from ``open_stream`` and ``accept``."""
        self.peer_id = peer_id
        self.protocol = protocol
        self._conn = conn
        self.stream_id = stream_id  # the muxer's id for it
        self._state = state = StreamState()
        self._rx = ReceiveBuffer(state)
        self._tx = SendQueue(state)
        self._timeout: float | None = None  # the application's (settimeout)

    def __repr__(self) -> str:
        return f"<Stream {self.protocol} with {self.peer_id} id={self.stream_id}>"

    # -- settings ----------------------------------------------------------------------
    def settimeout(self, timeout: float | None) -> None:
        """Set the timeout for blocking reads and writes, in seconds.

        ``None`` or ``math.inf``: wait indefinitely. ``0``: non-blocking, calls that
        would wait raise ``BlockingIOError``. Raises ``ValueError`` for a negative
        or NaN timeout, ``TypeError`` for a non-number.
        """
        self._timeout = check_timeout(timeout)

    def gettimeout(self) -> float | None:
        """The timeout set by :meth:`settimeout` (``None`` by default)."""
        return self._timeout

    # -- reading -----------------------------------------------------------------------
    def read(self, n: int = -1) -> bytes:
        """Return up to ``n`` bytes (all buffered bytes if ``n < 0``) once some arrive.

        Returns ``b""`` at end of stream. Raises ``ConnectionResetError`` after a reset,
        ``ConnectionAbortedError`` once the local node closed the connection,
        ``OSError`` (``EBADF``) once the stream was closed with :meth:`close`.
        """
        if n == 0:
            return b""
        data, report = self._rx.read(n, self._timeout)
        if report:
            self._conn.report_consumed(self, report)
        return data

    def readinto(self, buffer: Any) -> int:
        """Read into a writable buffer; return the number of bytes (0 at end of stream)."""
        view = memoryview(buffer).cast("B")
        if not len(view):
            return 0
        filled, report = self._rx.readinto(view, self._timeout)
        if report:
            self._conn.report_consumed(self, report)
        return filled

    def read_exactly(self, n: int) -> bytes:
        """Read exactly ``n`` bytes; raise :class:`IncompleteReadError` on an early end."""
        parts = []
        got = 0
        while got < n:
            chunk = self.read(n - got)
            if not chunk:
                raise IncompleteReadError(b"".join(parts), n)
            parts.append(chunk)
            got += len(chunk)
        return b"".join(parts)

    def readall(self) -> bytes:
        """Read until end of stream."""
        parts = []
        while True:
            chunk = self.read()
            if not chunk:
                return b"".join(parts)
            parts.append(chunk)

    # -- writing -----------------------------------------------------------------------
    def write(self, data: Any) -> int:
        """Queue all of ``data`` for sending; block while the stream's send buffer is full.

        Returns ``len(data)`` once the bytes are in the node's hands (see the class
        docstring: not yet delivered; :meth:`flush` waits until they left the node).
        A write blocked on a full buffer raises instead of returning if, meanwhile,
        the stream is reset by either side or the remote closes the connection
        (``ConnectionResetError``), the local node closes the connection
        (``ConnectionAbortedError``), or another thread calls :meth:`close_write` or
        :meth:`close` (``BrokenPipeError``); what it had queued may then still be
        sent (before the FIN, or while a closing connection lingers), or be lost
        with the stream.
        ``TimeoutError``: the timeout passed while blocked; the bytes stay queued.
        With timeout 0 the write takes all of ``data`` or, while the send buffer
        holds :data:`SEND_BUFFER_HIGH_WATER` bytes, nothing (``BlockingIOError``).
        """
        view = memoryview(data).cast("B")
        size = len(view)
        if not isinstance(data, bytes):
            view = memoryview(view.tobytes())  # the caller may reuse its buffer
        schedule, must_wait = self._tx.queue(view, size, self._timeout)
        if schedule:
            self._conn.schedule_stream_flush(self)
        if must_wait:
            self._tx.wait_drained(self._timeout)
        return size

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every byte written so far has left the node.

        Returns once the bytes have been handed to the muxer and their frames
        written to the connection's channel: over TCP they are in the kernel's send
        buffer; over WebSocket the channel may still hold them in its own bounded
        buffer (at most 256 KiB + one frame). Not yet acknowledged by the peer.
        Waits at most ``timeout`` seconds (``None``: the stream's timeout from
        :meth:`settimeout`; ``math.inf``: no limit).
        Raises ``TimeoutError`` when it passes (``BlockingIOError`` for 0), and the
        stream's error if it failed before the bytes left.
        """
        limit = self._timeout if timeout is None else check_timeout(timeout)
        deadline = None if limit is None else time.monotonic() + limit
        mark = self._tx.wait_handed(deadline, limit)
        if self._conn.bytes_sent >= mark:
            return
        self._conn.notify_when_sent(self, mark)
        self._tx.wait_wire_sent(mark, deadline, limit)

    def close_write(self) -> None:
        """Half-close: tell the remote we will send no more (FIN). Reading goes on.

        The FIN follows the bytes already written. Threads blocked in :meth:`write`
        raise ``BrokenPipeError``. Raises the stream's error if it failed and lost
        written bytes that no call has reported yet.
        """
        with self._state.lock:
            schedule = self._tx.shut_locked()
            lost = self._tx.loss_locked()
        if schedule:
            self._conn.schedule_stream_flush(self)
        if lost is not None:
            raise lost

    def close(self) -> None:
        """Close both directions: FIN after pending writes; unread data is discarded.

        Threads blocked on the stream wake at once: writers raise ``BrokenPipeError``,
        readers ``OSError`` (``EBADF``), as later reads do. Raises the stream's error
        if it failed and lost written bytes that no call has reported yet (the stream
        is closed all the same). If the remote never finishes its side, the stream is
        reset after ``Limits.stream_close_timeout`` seconds.
        """
        state = self._state
        with state.lock:
            state.closed = True
            schedule = self._tx.shut_locked()
            lost = self._tx.loss_locked()
            # We will read no more: discard what comes and stop holding window.
            dropped = self._rx.stop_locked()
            state.notify_all()
        if schedule:
            self._conn.schedule_stream_flush(self)
        if dropped is not None:
            self._conn.stream_closed(self, dropped)
        if lost is not None:
            raise lost

    def reset(self) -> None:
        """Abort the stream in both directions (RST); pending data is discarded.

        Threads blocked on the stream wake at once and raise ``ConnectionResetError``.
        """
        self._fail(ConnectionResetError("stream reset locally"), None)
        self._conn.reset_stream(self)

    @property
    def connection(self) -> Any:
        """The connection the stream runs on: its ``relayed`` (through a circuit
        relay), ``transport``, ``remote_addr``."""
        return self._conn.connection

    @property
    def closed(self) -> bool:
        """True once the stream is over in both directions (closed, finished or reset)."""
        return self._state.finished

    @property
    def input_finished(self) -> bool:
        """True once nothing more will arrive: the remote finished (or reset) its side,
        or we stopped reading. Buffered bytes may still be there to read."""
        return self._rx.eof or self._state.error is not None

    def __enter__(self) -> "Stream":
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is not None and exc[0] is not GeneratorExit:
            self.reset()
        else:
            self.close()

    # -- socket-flavoured aliases -------------------------------------------------------
    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        """Like ``socket.recv``: up to ``bufsize`` bytes, ``b""`` at end of stream."""
        return self.read(bufsize)

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        """Like ``socket.recv_into``: fill up to ``nbytes`` (0: all) of ``buffer``."""
        view = memoryview(buffer).cast("B")
        return self.readinto(view[:nbytes] if nbytes else view)

    def send(self, data: Any, flags: int = 0) -> int:
        """Like ``socket.send``; return how many bytes were taken.

        With timeout 0 it takes only what fits under :data:`SEND_BUFFER_HIGH_WATER`
        (``BlockingIOError`` when nothing does); otherwise it is :meth:`write`.
        """
        if self._timeout == 0:
            view = memoryview(data).cast("B")
            room = SEND_BUFFER_HIGH_WATER - self._tx.length  # only grows: one writer
            if 0 < room < len(view):
                data = view[:room]
        return self.write(data)

    def sendall(self, data: Any, flags: int = 0) -> None:
        """Like ``socket.sendall``: :meth:`write`."""
        self.write(data)

    def shutdown(self, how: int) -> None:
        """``SHUT_WR`` half-closes; ``SHUT_RD``/``SHUT_RDWR`` also stop reading."""
        if how in (socket.SHUT_WR, socket.SHUT_RDWR):
            self.close_write()
        if how in (socket.SHUT_RD, socket.SHUT_RDWR):
            self._rx.set_eof()

    def setsockopt(self, *args: Any) -> None:
        """Accepted and ignored: socket options mean nothing on a muxed stream."""

    def fileno(self) -> NoReturn:
        """Always raises ``io.UnsupportedOperation`` (an ``OSError``), as file objects
        without a descriptor do: a muxed stream has no descriptor to select on."""
        raise io.UnsupportedOperation("a libp2p stream has no file descriptor")

    def makefile(self, mode: str = "r", buffering: int | None = None, *,
                 encoding: str | None = None, errors: str | None = None,
                 newline: str | None = None) -> Any:
        """A file object over the stream, as ``socket.makefile`` returns."""
        return _make_stream_file(self, mode, buffering, encoding, errors, newline)

    # -- reactor side ------------------------------------------------------------------
    # Public to the package, not to applications: the connection that owns the stream
    # calls these on the reactor thread only. Each does one buffer operation, under the
    # stream's lock (taken by the buffer).

    def feed(self, data: bytes | memoryview) -> int:
        """Append received bytes for the reader; return the bytes now unread.

        Data for a stream nobody will read any more is dropped and its window given
        back at once."""
        if not self._rx.feed(data):  # nobody will read it: give the window back at once
            self._conn.report_consumed(self, len(data), on_reactor=True)
        return self._rx.length

    def feed_eof(self) -> None:
        """The remote finished its side: readers get end of stream after the data."""
        self._rx.set_eof()

    def take_received(self) -> bytes:
        """Remove and return every buffered received byte (a reactor-side reader takes
        the stream over from the application side)."""
        return self._rx.take_all()

    @property
    def unread_bytes(self) -> int:
        """Received bytes the application has not read yet (one read of an int: the
        reactor may look without the lock; the application only takes bytes away)."""
        return self._rx.length

    @property
    def unsent_bytes(self) -> int:
        """Bytes written to the stream that the muxer has not taken yet."""
        return self._tx.unsent()

    def fail(self, error: OSError, frames_lost: bool = False) -> None:
        """The stream is dead both ways. ``frames_lost``: some of its handed bytes
        had not left the node either."""
        self._fail(error, frames_lost)

    def _fail(self, error: OSError, frames_lost: bool | None) -> None:
        """Dead both ways; ``frames_lost`` None: reset on purpose, no loss to report."""
        state = self._state
        with state.lock:
            if state.error is None:
                state.error = error
            self._tx.discard_locked(frames_lost)
            self._rx.clear_locked()
            state.notify_all()

    def fail_writes(self, error: OSError, frames_lost: bool = False) -> None:
        """The connection is gone but the remote had finished sending: what it sent
        stays readable (then end of stream); only writing fails."""
        self._tx.fail(error, frames_lost)

    def mark_finished(self) -> None:
        """The connection has forgotten this stream (:attr:`closed` becomes True)."""
        with self._state.lock:
            self._state.finished = True

    def refuse_writes(self, error: OSError) -> None:
        """The connection is closing. Writes (and blocked writers) raise
        ``error``; bytes already queued still go out while the connection lingers,
        and :meth:`flush` still waits for them."""
        self._tx.refuse(error)

    @property
    def wire_mark(self) -> int:
        """The connection's wire byte count at which the frames of the
        bytes this stream handed to the muxer so far end."""
        return self._tx.wire_mark

    def wire_sent(self, total: int) -> None:
        """The connection has sent ``total`` bytes; wake a waiting flush."""
        self._tx.wire_sent(total)

    def pop_send(self, limit: int) -> memoryview | None:
        """Take at most ``limit`` bytes queued for sending (None when nothing is)."""
        return self._tx.pop(limit)

    def unpop_send(self, rest: memoryview) -> None:
        """Put back the part of a :meth:`pop_send` chunk the muxer did not take."""
        self._tx.unpop(rest)

    def taken_by_muxer(self, n: int, wire_mark: int) -> None:
        """``n`` bytes were handed to the muxer; their frames end at ``wire_mark``."""
        self._tx.taken(n, wire_mark)

    def flush_pass_done(self) -> tuple[bool, bool]:
        """Called after a flush pass: returns (data still queued, FIN wanted now)."""
        return self._tx.pass_done()


class _StreamRawIO(io.RawIOBase):
    """Adapts a :class:`Stream` to ``io.RawIOBase`` for buffered and text files."""

    def __init__(self, stream: Stream, mode: str) -> None:
        super().__init__()
        self._stream = stream
        self._reading = "r" in mode
        self._writing = "w" in mode

    def readable(self) -> bool:
        return self._reading

    def writable(self) -> bool:
        return self._writing

    def readinto(self, buffer: Any) -> int | None:
        """As ``RawIOBase.readinto`` (and ``socket.SocketIO``): with timeout 0, ``None``
        when no data is buffered yet."""
        try:
            return self._stream.readinto(buffer)
        except BlockingIOError:
            return None

    def write(self, data: Any) -> int | None:
        """As ``RawIOBase.write``: with timeout 0, a short count, or ``None`` when the
        send buffer is full."""
        try:
            return self._stream.send(data)
        except BlockingIOError:
            return None


def check_file_mode(mode: str) -> tuple[bool, bool, bool]:
    """Validate a ``makefile`` mode; return (reading, writing, binary)."""
    if not set(mode) <= {"r", "w", "b"}:
        raise ValueError(f"invalid mode {mode!r} (only r, w, b)")
    reading, writing = "r" in mode, "w" in mode
    if not reading and not writing:
        raise ValueError("mode must include r or w")
    return reading, writing, "b" in mode


def buffered_file(raw: io.RawIOBase, mode: str, buffering: int | None,
                  encoding: str | None, errors: str | None, newline: str | None) -> Any:
    """Layer buffering and text decoding over ``raw`` as ``socket.makefile`` does."""
    reading, writing, binary = check_file_mode(mode)
    if buffering is None or buffering < 0:
        buffering = io.DEFAULT_BUFFER_SIZE
    if buffering == 0:
        if not binary:
            raise ValueError("unbuffered streams must be binary")
        return raw
    if reading and writing:
        buffered: Any = io.BufferedRWPair(raw, raw, buffering)
    elif reading:
        buffered = io.BufferedReader(raw, buffering)
    else:
        buffered = io.BufferedWriter(raw, buffering)
    if binary:
        return buffered
    text = io.TextIOWrapper(buffered, encoding, errors, newline)
    text.mode = mode
    return text


def _make_stream_file(stream: Stream, mode: str, buffering: int | None, encoding: str | None,
                      errors: str | None, newline: str | None) -> Any:
    check_file_mode(mode)
    return buffered_file(_StreamRawIO(stream, mode), mode, buffering, encoding, errors,
                         newline)
