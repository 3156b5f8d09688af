"""The two buffers behind one :class:`~.stream.Stream` and the state they share.

Application threads and the reactor meet here: the reactor appends received bytes
and takes bytes to send; application threads take, append and wait on the two
conditions. One lock (``StreamState.lock``) guards both directions; nobody holds it
while waiting for the network. Nothing here calls the connection: methods return what
the stream must tell it once the lock is released.
"""

from __future__ import annotations

import collections
import errno
import threading
import time
from typing import Callable

#: Writes return once at most this many bytes of the stream wait to be framed; with
#: timeout 0 a write is refused while this many wait.
SEND_BUFFER_HIGH_WATER = 512 * 1024
#: Consumption is reported to the muxer (window updates) in steps at least this large.
CONSUMED_REPORT_STEP = 64 * 1024
#: A buffer's chunks before its first byte: idle streams are the common case, and an
#: empty deque costs ~600 bytes.
_NO_CHUNKS: tuple[()] = ()


class _Condition(threading.Condition):
    """A condition whose notify costs nothing while nobody waits, as is usual here
    (the reactor notifies on every delivery; the reader is mostly not waiting yet).
    ``waiting`` changes under the lock, as ``notify`` requires it held."""

    def __init__(self, lock: threading.Lock) -> None:
        super().__init__(lock)
        self.waiting = 0

    def wait(self, timeout: float | None = None) -> bool:
        """As ``Condition.wait``, counted."""
        self.waiting += 1
        try:
            return super().wait(timeout)
        finally:
            self.waiting -= 1

    def notify(self, n: int = 1) -> None:
        """As ``Condition.notify``; nothing to do without a waiter."""
        if self.waiting:
            super().notify(n)

    def notify_all(self) -> None:
        """As ``Condition.notify_all``; nothing to do without a waiter."""
        if self.waiting:
            super().notify_all()


class StreamState:
    """What both directions of one stream share: the lock, its two conditions, and
    how the stream ended. Fields are public to the stream's buffers and the stream;
    change them with ``lock`` held."""

    __slots__ = ("lock", "readable", "writable", "error", "closed", "finished")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        #: Notified when data, end of stream or an error arrives.
        self.readable = _Condition(self.lock)
        #: Notified when send room frees up, bytes left the node, or writing ends.
        self.writable = _Condition(self.lock)
        #: The stream is dead both ways (reset, failed): reads and writes raise it.
        self.error: OSError | None = None
        #: The application called close().
        self.closed = False
        #: The reactor has forgotten the stream.
        self.finished = False

    def notify_all(self) -> None:
        """(Lock held.) Wake every reader and writer."""
        self.readable.notify_all()
        self.writable.notify_all()


class ReceiveBuffer:
    """The bytes received for one stream and not read yet, and the reader's waiting
    (timeouts, end of stream, errors). :attr:`length` may be read without the lock
    (one int; the application only takes bytes away)."""

    __slots__ = ("_state", "_lock", "_readable", "_chunks", "length", "eof", "_unreported")

    def __init__(self, state: StreamState) -> None:
        self._state = state
        self._lock = state.lock
        self._readable = state.readable
        # bytes, or read-only memoryviews into decrypted buffers (zero-copy muxing)
        self._chunks: collections.deque[bytes | memoryview] | tuple[()] = _NO_CHUNKS
        #: Bytes buffered.
        self.length = 0
        #: Nothing more will be buffered: the remote finished, or we stopped reading.
        self.eof = False
        self._unreported = 0

    # -- application side --------------------------------------------------------------
    def read(self, n: int, timeout: float | None) -> tuple[bytes, int]:
        """Wait for data as :meth:`~.stream.Stream.read` does; return up to ``n``
        bytes (all if ``n < 0``) and how many consumed bytes to report now."""
        with self._lock:
            self._wait_readable(timeout)
            if not self._chunks:
                return b"", 0
            data = self._take(n)
            return data, self._count_consumed(len(data))

    def readinto(self, view: memoryview, timeout: float | None) -> tuple[int, int]:
        """Like :meth:`read`, into ``view``: (bytes filled, consumed bytes to report)."""
        with self._lock:
            self._wait_readable(timeout)
            filled = 0
            recv = self._chunks
            while recv and filled < len(view):
                chunk = recv[0]
                take = min(len(chunk), len(view) - filled)
                view[filled:filled + take] = chunk[:take] if take < len(chunk) else chunk
                filled += take
                if take == len(chunk):
                    recv.popleft()
                else:
                    recv[0] = chunk[take:]
            self.length -= filled
            return filled, self._count_consumed(filled)

    def _wait_readable(self, timeout: float | None) -> None:
        """Wait (lock held) until data, end of stream or an error is available."""
        state = self._state
        deadline = None
        while not self._chunks and not self.eof and state.error is None:
            if timeout is not None:
                if deadline is None:
                    deadline = time.monotonic() + timeout
                if not timeout:
                    raise BlockingIOError(errno.EAGAIN, "no data available (timeout is 0)")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError("stream read timed out")
                self._readable.wait(remaining)
            else:
                self._readable.wait()
        if state.closed:
            raise OSError(errno.EBADF, "read from a closed stream")
        if not self._chunks and state.error is not None:
            raise fresh_error(state.error)

    def _take(self, n: int) -> bytes:
        """Remove up to ``n`` buffered bytes (lock held; ``n < 0`` means all)."""
        recv = self._chunks
        if n < 0 or n >= self.length:
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
        self.length -= len(data)
        return data

    def _count_consumed(self, n: int) -> int:
        """Note ``n`` bytes read (lock held); return how many to report to the muxer now.

        Reports go out in steps, and after the lock is released: the reactor must
        not wake up only to find the stream locked.
        """
        self._unreported += n
        if self._unreported >= CONSUMED_REPORT_STEP and not self._state.finished:
            n, self._unreported = self._unreported, 0
            return n
        return 0

    def stop_locked(self) -> int | None:
        """(Lock held.) Stop reading for good: drop what is buffered; return how many
        bytes were dropped, or None when reading had ended already."""
        if self.eof or self._state.error is not None:
            return None
        self.eof = True
        dropped, self.length = self.length, 0
        if self._chunks:
            self._chunks.clear()
        return dropped

    def clear_locked(self) -> None:
        """(Lock held.) Drop what is buffered."""
        if self._chunks:
            self._chunks.clear()
        self.length = 0

    # -- reactor side ------------------------------------------------------------------
    def feed(self, data: bytes | memoryview) -> bool:
        """Append received bytes; False (dropped) when nobody will read them."""
        with self._lock:
            if self.eof or self._state.error is not None:
                return False
            if self._chunks is _NO_CHUNKS:
                self._chunks = collections.deque()
            self._chunks.append(data)
            self.length += len(data)
            self._readable.notify()
            return True

    def set_eof(self) -> None:
        """No more data will be buffered; readers get end of stream after the data."""
        with self._lock:
            self.eof = True
            self._readable.notify_all()

    def take_all(self) -> bytes:
        """Remove and return every buffered byte."""
        with self._lock:
            data = b"".join(self._chunks)
            if self._chunks:
                self._chunks.clear()
            self.length = 0
        return data


class SendQueue:
    """The bytes written to one stream that the muxer has not taken yet, the writer's
    waiting (high-water mark, flush marks), the FIN, and loss reporting: whether a
    failure discarded accepted bytes that no call has reported yet.
    :attr:`wire_mark` may be read without the lock (one int)."""

    __slots__ = ("_state", "_lock", "_writable", "_chunks", "length", "write_closed",
                 "_flush_scheduled", "_write_error", "_refused", "_written", "_handed",
                 "wire_mark", "_wire_sent", "_unsent_lost")

    def __init__(self, state: StreamState) -> None:
        self._state = state
        self._lock = state.lock
        self._writable = state.writable
        self._chunks: collections.deque[memoryview] | tuple[()] = _NO_CHUNKS
        #: Bytes queued (an application writer may read it without the lock).
        self.length = 0
        #: close_write() was called: the FIN follows the queued bytes.
        self.write_closed = False
        self._flush_scheduled = False
        self._write_error: OSError | None = None  # the sending side failed, reads go on
        self._refused: OSError | None = None  # new writes fail: the connection is closing
        # Byte counts since the stream began: accepted by write(), handed to the muxer.
        self._written = 0
        self._handed = 0
        #: The connection's wire byte count at which our last handed frame ends.
        self.wire_mark = 0
        # The connection's count of bytes sent as last reported to a waiting flush().
        self._wire_sent = 0
        # A failure discarded bytes we had accepted; no call has reported it yet.
        self._unsent_lost = False

    # -- application side --------------------------------------------------------------
    def queue(self, view: memoryview, size: int, timeout: float | None) -> tuple[bool, bool]:
        """Queue ``view`` (``size`` bytes) as :meth:`~.stream.Stream.write` does; return
        (schedule a flush now, wait for :meth:`wait_drained` after that)."""
        with self._lock:
            self._check_writable()
            if not size:
                return False, False
            nonblocking = timeout == 0
            if nonblocking and self.length >= SEND_BUFFER_HIGH_WATER:
                raise BlockingIOError(errno.EAGAIN, "stream send buffer full (timeout is 0)")
            if self._chunks is _NO_CHUNKS:
                self._chunks = collections.deque()
            self._chunks.append(view)
            self.length += size
            self._written += size
            return (self._claim_flush(),
                    self.length > SEND_BUFFER_HIGH_WATER and not nonblocking)

    def wait_drained(self, timeout: float | None) -> None:
        """Wait until the queue is back under the high-water mark."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while True:
                self._check_writable()  # failures and closes first: they end the wait
                if self.length <= SEND_BUFFER_HIGH_WATER:
                    return
                _wait(self._writable, deadline, "stream write timed out")

    def wait_handed(self, deadline: float | None, limit: float | None) -> int:
        """Wait until every byte written so far went to the muxer; return the wire
        mark their frames end at (flush, first half)."""
        with self._lock:
            target = self._written
            self._wait_flushed(lambda: self._handed >= target, deadline, limit)
            return self.wire_mark

    def wait_wire_sent(self, mark: int, deadline: float | None,
                       limit: float | None) -> None:
        """Wait until the connection reported ``mark`` bytes sent (flush, second half)."""
        with self._lock:
            self._wait_flushed(lambda: self._wire_sent >= mark, deadline, limit)

    def _wait_flushed(self, done: Callable[[], bool], deadline: float | None,
                      limit: float | None) -> None:
        while not done():
            self._raise_failure()
            if limit == 0:
                raise BlockingIOError(errno.EAGAIN, "stream data not sent yet (timeout is 0)")
            _wait(self._writable, deadline, "stream flush timed out")

    def _check_writable(self) -> None:
        """(Lock held.) Raise if writing is over: failed, refused, or closed."""
        self._raise_failure()
        if self._refused is not None:
            raise fresh_error(self._refused)
        if self.write_closed:
            raise BrokenPipeError(errno.EPIPE, "stream closed for writing")

    def _write_failure(self) -> OSError | None:
        """(Lock held.) Why the sending side failed, or None."""
        error = self._state.error
        return error if error is not None else self._write_error

    def _raise_failure(self) -> None:
        """(Lock held.) Raise the stream's error if its sending side failed."""
        error = self._write_failure()
        if error is not None:
            self._unsent_lost = False  # reported now
            raise fresh_error(error)

    def _claim_flush(self) -> bool:
        """(Lock held.) True when the caller must schedule a flush, after unlocking."""
        if self._flush_scheduled:
            return False
        self._flush_scheduled = True
        return True

    def shut_locked(self) -> bool:
        """(Lock held.) Stop writing; True when the caller must schedule the FIN."""
        if self.write_closed or self._state.error is not None:
            return False
        self.write_closed = True
        self._writable.notify_all()
        return self._claim_flush()

    def loss_locked(self) -> OSError | None:
        """(Lock held.) The error to raise for written bytes a failure discarded."""
        error = self._write_failure()
        if not self._unsent_lost or error is None:
            return None
        self._unsent_lost = False
        return fresh_error(error)

    def discard_locked(self, frames_lost: bool | None) -> None:
        """(Lock held.) Drop the queue. ``frames_lost``: whether handed bytes were
        lost too (reported by the next call, like dropped queued bytes); None: the
        stream was reset on purpose, nothing is left to report."""
        if frames_lost is None:
            self._unsent_lost = False
        else:
            self._unsent_lost |= frames_lost or self.length > 0
        if self._chunks:
            self._chunks.clear()
        self.length = 0

    def unsent(self) -> int:
        """Bytes queued, read under the lock."""
        with self._lock:
            return self.length

    # -- reactor side ------------------------------------------------------------------
    def fail(self, error: OSError, frames_lost: bool) -> None:
        """Writing failed (reading goes on): drop the queue, wake everyone."""
        with self._lock:
            if self._write_error is None:
                self._write_error = error
            self.discard_locked(frames_lost)
            self._state.notify_all()

    def refuse(self, error: OSError) -> None:
        """New writes (and blocked writers) raise ``error``; queued bytes still go."""
        with self._lock:
            if self._refused is None:
                self._refused = error
            self._writable.notify_all()

    def wire_sent(self, total: int) -> None:
        """The connection has sent ``total`` bytes; wake a waiting flush."""
        with self._lock:
            self._wire_sent = total
            self._writable.notify_all()

    def pop(self, limit: int) -> memoryview | None:
        """Take at most ``limit`` queued bytes (None when nothing is queued)."""
        with self._lock:
            send = self._chunks
            if not send or limit <= 0:
                return None
            chunk = send[0]
            if len(chunk) <= limit:
                return send.popleft()
            send[0] = chunk[limit:]
            return chunk[:limit]

    def unpop(self, rest: memoryview) -> None:
        """Put back the part of a :meth:`pop` chunk the muxer did not take."""
        with self._lock:
            if len(rest):
                self._chunks.appendleft(rest)

    def taken(self, n: int, wire_mark: int) -> None:
        """``n`` bytes were handed to the muxer; their frames end at ``wire_mark``."""
        with self._lock:
            self.length -= n
            self._handed += n
            self.wire_mark = wire_mark
            if self.length <= SEND_BUFFER_HIGH_WATER:
                self._writable.notify_all()

    def pass_done(self) -> tuple[bool, bool]:
        """After a flush pass: (data still queued, FIN wanted now)."""
        with self._lock:
            pending = bool(self._chunks)
            self._flush_scheduled = pending
            return pending, self.write_closed and not pending


def _wait(condition: threading.Condition, deadline: float | None, message: str) -> None:
    """(Lock held.) Wait once on ``condition``; raise if ``deadline`` has passed."""
    if deadline is None:
        condition.wait()
        return
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError(message)
    condition.wait(remaining)


def fresh_error(error: OSError) -> OSError:
    """A new exception like ``error`` for each raise: re-raising one stored object
    would grow its traceback on every call and share it between threads."""
    copy = error.__class__.__new__(error.__class__, *error.args)
    copy.args = error.args
    copy.__dict__.update(error.__dict__)  # e.g. UnsupportedProtocol.protocol
    copy.__cause__ = error.__cause__
    return copy
