"""The blocking :class:`Stream` that application threads use.

A stream's buffers are shared between the application's threads and the reactor:
the reactor appends received data and takes data to send; application threads read,
write and wait on conditions. One lock guards both directions; nobody holds it while
waiting for the network.
"""

from __future__ import annotations

import collections
import errno
import io
import socket
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, NoReturn

from .errors import IncompleteReadError
from .timeouts import check_timeout

if TYPE_CHECKING:
    from .connection import Connection
    from .identity import PeerId

#: Writes return once at most this many bytes of the stream wait to be framed; with
#: timeout 0 a write is refused while this many wait.
SEND_BUFFER_HIGH_WATER = 512 * 1024
#: Consumption is reported to the muxer (window updates) in steps at least this large.
CONSUMED_REPORT_STEP = 64 * 1024


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
    """

    __slots__ = (
        "peer_id", "protocol", "stream_id", "_conn", "_lock", "_readable", "_writable",
        "_recv", "_recv_len", "_recv_eof", "_unreported", "_error", "_send",
        "_send_len", "_write_closed", "_flush_scheduled", "_timeout", "_finished",
        "_write_error", "_closed", "_refused", "_written",
        "_handed", "_wire_mark", "_wire_sent", "_unsent_lost", "__weakref__",
    )

    def __init__(self, conn: "Connection", stream_id: int, peer_id: "PeerId",
                 protocol: str) -> None:
        """Made by the node; applications get streams from ``open_stream`` and ``accept``."""
        self.peer_id = peer_id
        self.protocol = protocol
        self._conn = conn
        self.stream_id = stream_id  # the muxer's id for it
        self._lock = threading.Lock()
        self._readable = threading.Condition(self._lock)
        self._writable = threading.Condition(self._lock)
        # bytes, or read-only memoryviews into decrypted buffers (zero-copy muxing)
        self._recv: collections.deque[bytes | memoryview] = collections.deque()
        self._recv_len = 0
        self._recv_eof = False
        self._unreported = 0
        self._error: OSError | None = None
        self._write_error: OSError | None = None  # the sending side failed, reads go on
        self._send: collections.deque[memoryview] = collections.deque()
        self._send_len = 0
        self._write_closed = False
        self._flush_scheduled = False
        self._timeout: float | None = None
        self._finished = False  # the reactor has forgotten this stream
        self._closed = False  # the application called close()
        self._refused: OSError | None = None  # new writes fail: the connection is closing
        # Byte counts since the stream began: accepted by write(), handed to the muxer.
        self._written = 0
        self._handed = 0
        # The connection's wire byte count at which our last handed frame ends, and the
        # connection's count of bytes sent as last reported to a flush() waiting here.
        self._wire_mark = 0
        self._wire_sent = 0
        # A failure discarded bytes we had accepted; no call has reported it yet.
        self._unsent_lost = False

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
    def _wait_readable(self) -> None:
        """Wait (lock held) until data, end of stream or an error is available."""
        deadline = None
        while not self._recv and not self._recv_eof and self._error is None:
            if self._timeout is not None:
                if deadline is None:
                    deadline = time.monotonic() + self._timeout
                if not self._timeout:
                    raise BlockingIOError(errno.EAGAIN, "no data available (timeout is 0)")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError("stream read timed out")
                self._readable.wait(remaining)
            else:
                self._readable.wait()
        if self._closed:
            raise OSError(errno.EBADF, "read from a closed stream")
        if not self._recv and self._error is not None:
            raise _fresh(self._error)

    def _take(self, n: int) -> bytes:
        """Remove up to ``n`` buffered bytes (lock held; ``n < 0`` means all)."""
        recv = self._recv
        if n < 0 or n >= self._recv_len:
            data = recv[0] if len(recv) == 1 else b"".join(recv)
            if type(data) is not bytes:  # a zero-copy memoryview from the muxer
                data = bytes(data)
            recv.clear()
        else:
            parts = []
            need = n
            while need:
                chunk = recv[0]
                if len(chunk) <= need:
                    parts.append(recv.popleft())
                    need -= len(chunk)
                else:
                    parts.append(chunk[:need])
                    recv[0] = chunk[need:]
                    need = 0
            data = parts[0] if len(parts) == 1 else b"".join(parts)
            if type(data) is not bytes:
                data = bytes(data)
        self._recv_len -= len(data)
        return data

    def _count_consumed(self, n: int) -> int:
        """Note ``n`` bytes read (lock held); return how many to report to the muxer now.

        Reports go out in steps, and after the lock is released: the reactor must
        not wake up only to find the stream locked.
        """
        self._unreported += n
        if self._unreported >= CONSUMED_REPORT_STEP and not self._finished:
            n, self._unreported = self._unreported, 0
            return n
        return 0

    def _report(self, n: int) -> None:
        if n:
            self._conn.report_consumed(self, n)

    def read(self, n: int = -1) -> bytes:
        """Return up to ``n`` bytes (all buffered bytes if ``n < 0``) once some arrive.

        Returns ``b""`` at end of stream. Raises ``ConnectionResetError`` after a reset,
        ``ConnectionAbortedError`` once the local node closed the connection,
        ``OSError`` (``EBADF``) once the stream was closed with :meth:`close`.
        """
        if n == 0:
            return b""
        with self._lock:
            self._wait_readable()
            if not self._recv:
                return b""
            data = self._take(n)
            report = self._count_consumed(len(data))
        self._report(report)
        return data

    def readinto(self, buffer: Any) -> int:
        """Read into a writable buffer; return the number of bytes (0 at end of stream)."""
        view = memoryview(buffer).cast("B")
        if not len(view):
            return 0
        with self._lock:
            self._wait_readable()
            filled = 0
            recv = self._recv
            while recv and filled < len(view):
                chunk = recv[0]
                take = min(len(chunk), len(view) - filled)
                view[filled:filled + take] = chunk[:take] if take < len(chunk) else chunk
                filled += take
                if take == len(chunk):
                    recv.popleft()
                else:
                    recv[0] = chunk[take:]
            self._recv_len -= filled
            report = self._count_consumed(filled)
        self._report(report)
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
        with self._lock:
            self._check_writable()
            if not size:
                return 0
            nonblocking = self._timeout == 0
            if nonblocking and self._send_len >= SEND_BUFFER_HIGH_WATER:
                raise BlockingIOError(errno.EAGAIN, "stream send buffer full (timeout is 0)")
            self._send.append(view)
            self._send_len += size
            self._written += size
            schedule = self._claim_flush()
            must_wait = self._send_len > SEND_BUFFER_HIGH_WATER and not nonblocking
        if schedule:
            self._conn.schedule_stream_flush(self)
        if must_wait:
            with self._lock:
                self._wait_drained()
        return size

    def _check_writable(self) -> None:
        """(Lock held.) Raise if writing is over: failed, refused, or closed."""
        self._raise_failure()
        if self._refused is not None:
            raise _fresh(self._refused)
        if self._write_closed:
            raise BrokenPipeError(errno.EPIPE, "stream closed for writing")

    def _write_failure(self) -> OSError | None:
        """(Lock held.) Why the sending side failed, or None."""
        return self._error if self._error is not None else self._write_error

    def _raise_failure(self) -> None:
        """(Lock held.) Raise the stream's error if its sending side failed."""
        error = self._write_failure()
        if error is not None:
            self._unsent_lost = False  # reported now
            raise _fresh(error)

    def _claim_flush(self) -> bool:
        """(Lock held.) True when the caller must schedule a flush, after unlocking."""
        if self._flush_scheduled:
            return False
        self._flush_scheduled = True
        return True

    def _wait_drained(self) -> None:
        """(Lock held.) Wait until the send buffer is back under the high-water mark."""
        deadline = None if self._timeout is None else time.monotonic() + self._timeout
        while True:
            self._check_writable()  # failures and closes first: they end the wait
            if self._send_len <= SEND_BUFFER_HIGH_WATER:
                return
            self._wait(self._writable, deadline, "stream write timed out")

    def _wait(self, condition: threading.Condition, deadline: float | None,
              message: str) -> None:
        """(Lock held.) Wait once on ``condition``; raise if ``deadline`` has passed."""
        if deadline is None:
            condition.wait()
            return
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(message)
        condition.wait(remaining)

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
        with self._lock:
            target = self._written
            self._wait_flushed(lambda: self._handed >= target, deadline, limit)
            mark = self._wire_mark
        if self._conn.bytes_sent >= mark:
            return
        self._conn.notify_when_sent(self, mark)
        with self._lock:
            self._wait_flushed(lambda: self._wire_sent >= mark, deadline, limit)

    def _wait_flushed(self, done: Callable[[], bool], deadline: float | None,
                      limit: float | None) -> None:
        while not done():
            self._raise_failure()
            if limit == 0:
                raise BlockingIOError(errno.EAGAIN, "stream data not sent yet (timeout is 0)")
            self._wait(self._writable, deadline, "stream flush timed out")

    def close_write(self) -> None:
        """Half-close: tell the remote we will send no more (FIN). Reading goes on.

        The FIN follows the bytes already written. Threads blocked in :meth:`write`
        raise ``BrokenPipeError``. Raises the stream's error if it failed and lost
        written bytes that no call has reported yet.
        """
        with self._lock:
            schedule = self._shut_write_locked()
            lost = self._loss_to_report()
        if schedule:
            self._conn.schedule_stream_flush(self)
        if lost is not None:
            raise lost

    def _shut_write_locked(self) -> bool:
        """(Lock held.) Stop writing; True when the caller must schedule the FIN."""
        if self._write_closed or self._error is not None:
            return False
        self._write_closed = True
        self._writable.notify_all()
        return self._claim_flush()

    def _loss_to_report(self) -> OSError | None:
        """(Lock held.) The error to raise for written bytes a failure discarded."""
        error = self._write_failure()
        if not self._unsent_lost or error is None:
            return None
        self._unsent_lost = False
        return _fresh(error)

    def close(self) -> None:
        """Close both directions: FIN after pending writes; unread data is discarded.

        Threads blocked on the stream wake at once: writers raise ``BrokenPipeError``,
        readers ``OSError`` (``EBADF``), as later reads do. Raises the stream's error
        if it failed and lost written bytes that no call has reported yet (the stream
        is closed all the same). If the remote never finishes its side, the stream is
        reset after ``Limits.stream_close_timeout`` seconds.
        """
        with self._lock:
            self._closed = True
            schedule = self._shut_write_locked()
            lost = self._loss_to_report()
            still_reading = not self._recv_eof and self._error is None
            if still_reading:
                # We will read no more: discard what comes and stop holding window.
                self._recv_eof = True
                dropped, self._recv_len = self._recv_len, 0
                self._recv.clear()
            self._readable.notify_all()
            self._writable.notify_all()
        if schedule:
            self._conn.schedule_stream_flush(self)
        if still_reading:
            self._conn.stream_closed(self, dropped)
        if lost is not None:
            raise lost

    def reset(self) -> None:
        """Abort the stream in both directions (RST); pending data is discarded.

        Threads blocked on the stream wake at once and raise ``ConnectionResetError``.
        """
        with self._lock:
            if self._error is None:
                self._error = ConnectionResetError("stream reset locally")
            self._discard_locked()
            self._unsent_lost = False  # discarded on purpose
        self._conn.reset_stream(self)

    def _discard_locked(self) -> None:
        if self._send_len:
            self._unsent_lost = True
        self._send.clear()
        self._send_len = 0
        self._recv.clear()
        self._recv_len = 0
        self._readable.notify_all()
        self._writable.notify_all()

    @property
    def closed(self) -> bool:
        """True once the stream is over in both directions (closed, finished or reset)."""
        return self._finished

    @property
    def input_finished(self) -> bool:
        """True once nothing more will arrive: the remote finished (or reset) its side,
        or we stopped reading. Buffered bytes may still be there to read."""
        return self._recv_eof or self._error is not None

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
            room = SEND_BUFFER_HIGH_WATER - self._send_len  # only grows: one writer
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
            with self._lock:
                self._recv_eof = True
                self._readable.notify_all()

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
    # calls these on the reactor thread only. Each takes the stream's lock itself and
    # does one buffer operation, so the per-chunk paths cost what they did as privates.

    def feed(self, data: bytes | memoryview) -> int:
        """Append received bytes for the reader; return the bytes now unread.

        Data for a stream nobody will read any more is dropped and its window given
        back at once (0 is returned then)."""
        with self._lock:
            if self._recv_eof or self._error is not None:
                discarded = True
            else:
                discarded = False
                self._recv.append(data)
                self._recv_len += len(data)
                self._readable.notify()
            unread = self._recv_len
        if discarded:  # nobody will read it: give the window back at once
            self._conn.report_consumed(self, len(data), on_reactor=True)
        return unread

    def feed_eof(self) -> None:
        """The remote finished its side: readers get end of stream after the data."""
        with self._lock:
            self._recv_eof = True
            self._readable.notify_all()

    def take_received(self) -> bytes:
        """Remove and return every buffered received byte (a reactor-side reader takes
        the stream over from the application side)."""
        with self._lock:
            data = b"".join(self._recv)
            self._recv.clear()
            self._recv_len = 0
        return data

    @property
    def unread_bytes(self) -> int:
        """Received bytes the application has not read yet (one read of an int: the
        reactor may look without the lock; the application only takes bytes away)."""
        return self._recv_len

    @property
    def unsent_bytes(self) -> int:
        """Bytes written to the stream that the muxer has not taken yet."""
        with self._lock:
            return self._send_len

    def fail(self, error: OSError, frames_lost: bool = False) -> None:
        """The stream is dead both ways. ``frames_lost``: some of its handed bytes
        had not left the node either."""
        with self._lock:
            if self._error is None:
                self._error = error
            self._unsent_lost |= frames_lost
            self._discard_locked()

    def fail_writes(self, error: OSError, frames_lost: bool = False) -> None:
        """The connection is gone but the remote had finished sending: what it sent
        stays readable (then end of stream); only writing fails."""
        with self._lock:
            if self._write_error is None:
                self._write_error = error
            self._unsent_lost |= frames_lost or self._send_len > 0
            self._send.clear()
            self._send_len = 0
            self._readable.notify_all()
            self._writable.notify_all()

    def mark_finished(self) -> None:
        """The connection has forgotten this stream (:attr:`closed` becomes True)."""
        with self._lock:
            self._finished = True

    def refuse_writes(self, error: OSError) -> None:
        """The connection is closing. Writes (and blocked writers) raise
        ``error``; bytes already queued still go out while the connection lingers,
        and :meth:`flush` still waits for them."""
        with self._lock:
            if self._refused is None:
                self._refused = error
            self._writable.notify_all()

    @property
    def wire_mark(self) -> int:
        """The connection's wire byte count at which the frames of the
        bytes this stream handed to the muxer so far end."""
        return self._wire_mark

    def wire_sent(self, total: int) -> None:
        """The connection has sent ``total`` bytes; wake a waiting flush."""
        with self._lock:
            self._wire_sent = total
            self._writable.notify_all()

    def pop_send(self, limit: int) -> memoryview | None:
        """Take at most ``limit`` bytes queued for sending (None when nothing is)."""
        with self._lock:
            if not self._send or limit <= 0:
                return None
            chunk = self._send[0]
            if len(chunk) <= limit:
                return self._send.popleft()
            self._send[0] = chunk[limit:]
            return chunk[:limit]

    def unpop_send(self, rest: memoryview) -> None:
        """Put back the part of a :meth:`pop_send` chunk the muxer did not take."""
        with self._lock:
            if len(rest):
                self._send.appendleft(rest)

    def taken_by_muxer(self, n: int, wire_mark: int) -> None:
        """``n`` bytes were handed to the muxer; their frames end at ``wire_mark``."""
        with self._lock:
            self._send_len -= n
            self._handed += n
            self._wire_mark = wire_mark
            if self._send_len <= SEND_BUFFER_HIGH_WATER:
                self._writable.notify_all()

    def flush_pass_done(self) -> tuple[bool, bool]:
        """Called after a flush pass: returns (data still queued, FIN wanted now)."""
        with self._lock:
            self._flush_scheduled = bool(self._send)
            return bool(self._send), self._write_closed and not self._send


def _fresh(error: OSError) -> OSError:
    """A new exception like ``error`` for each raise: re-raising one stored object
    would grow its traceback on every call and share it between threads."""
    copy = error.__class__.__new__(error.__class__, *error.args)
    copy.args = error.args
    copy.__dict__.update(error.__dict__)  # e.g. UnsupportedProtocol.protocol
    copy.__cause__ = error.__cause__
    return copy


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
