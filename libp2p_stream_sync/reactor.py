"""The I/O thread: one ``selectors`` loop per node that owns every socket and engine.

Other threads hand work to the reactor with :meth:`Reactor.call_soon` (thread-safe)
and wait for results on futures or conditions. The loop holds its *hold lock* all the
time except while it waits in ``select``; another thread may take it then with
:meth:`Reactor.try_hold` (never blocking) and, until :meth:`Reactor.release_hold`, do
what the reactor thread does (the write-through of small stream writes does).
"""

from __future__ import annotations

import collections
import heapq
import itertools
import logging
import math
import selectors
import socket
import threading
import time
from typing import Any, Callable

log = logging.getLogger(__name__)

#: How long a loop iteration may block in ``select`` when nothing is scheduled.
_IDLE_WAIT = 3600.0
#: Pause after an iteration of the loop itself failed, so a persistent error cannot
#: turn the loop into a busy spin.
_ERROR_PAUSE = 0.05


class TimerHandle:
    """A scheduled call; :meth:`cancel` it from the reactor thread."""

    __slots__ = ("when", "callback", "cancelled", "_reactor")

    def __init__(self, when: float, callback: Callable[[], Any], reactor: "Reactor") -> None:
        self.when = when
        self.callback: Callable[[], Any] | None = callback
        self.cancelled = False
        self._reactor = reactor

    def cancel(self) -> None:
        if not self.cancelled:
            self.cancelled = True
            self.callback = None  # do not keep its owner alive until the deadline
            self._reactor._timer_cancelled()


class Reactor:
    """A selector loop running in its own daemon thread.

    Handlers registered with :meth:`register` get ``on_readable()`` /
    ``on_writable()`` calls. Callables passed to :meth:`call_soon` run on the
    reactor thread in order. Objects passed to :meth:`mark_dirty` get one
    ``flush()`` call at the end of the loop iteration, so many writes made during
    one iteration leave in one batch.
    """

    def __init__(self, name: str = "libp2p-reactor") -> None:
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._calls: collections.deque[tuple[Callable[..., Any], tuple]] = collections.deque()
        self._wake_pending = False
        self._sleeping = False  # True while the loop is (about to be) blocked in select
        self._wake_lock = threading.Lock()
        self._timers: list[tuple[float, int, TimerHandle]] = []
        self._cancelled_timers = 0
        self._timer_seq = itertools.count()
        self._dirty: dict[int, Any] = {}
        #: Held by the loop except while it waits in select (see try_hold).
        self._hold = threading.Lock()
        #: When the loop's current select times out (monotonic; inf: never).
        self._wait_until = math.inf
        #: A holder set a timer earlier than the loop's wake-up: wake it at release.
        self._kick = False
        #: Scratch receive buffer shared by every handler: only this thread reads
        #: sockets, and engines copy what they keep.
        self.scratch = bytearray(64 * 1024)
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    # -- lifecycle -------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    @property
    def thread(self) -> threading.Thread:
        return self._thread

    def in_reactor_thread(self) -> bool:
        return threading.current_thread() is self._thread

    def call_now_or_soon(self, fn: Callable[..., Any], *args: Any) -> None:
        """*Thread-safe.* Run ``fn(*args)`` in this thread at once if the loop is idle
        in ``select`` with nothing queued (the caller then holds the loop, see
        :meth:`try_hold`, and flushes what ``fn`` marked dirty), else
        :meth:`call_soon` it. For short work that neither blocks nor waits."""
        if not self.try_hold():
            self.call_soon(fn, *args)
            return
        try:
            self._guarded(fn, *args)
        finally:
            self.release_hold()

    def try_hold(self) -> bool:
        """*Thread-safe, never blocks.* Take the loop's hold lock if the loop waits in
        ``select`` and no call is queued (queued calls must run first); True: until
        :meth:`release_hold` the caller may do what the reactor thread does (engines,
        sockets, ``mark_dirty``, ``call_later``), as long as it neither blocks nor
        waits for the reactor. False (always in the reactor thread itself): the
        loop is busy, hand the work over with :meth:`call_soon`."""
        if not self._sleeping or self._calls or not self._hold.acquire(False):
            return False
        if self._calls:  # queued just before we took it: they come first
            self._hold.release()
            return False
        return True

    def release_hold(self) -> None:
        """End a hold: flush what the holder marked dirty, as the loop does at the end
        of a turn, then give the hold back; wake the loop if the holder queued an
        earlier timer or left something dirty."""
        try:
            self._flush_dirty()
        finally:
            kick = self._kick or bool(self._dirty)
            self._kick = False
            self._hold.release()
        if kick:
            self._wake()

    def stop(self) -> None:
        """Ask the loop to end after the current iteration (thread-safe)."""
        self.call_soon(self._set_stopping)

    def join(self, timeout: float | None = None) -> None:
        if self._thread.is_alive() and not self.in_reactor_thread():
            self._thread.join(timeout)

    def _set_stopping(self) -> None:
        self._stopping = True

    # -- scheduling --------------------------------------------------------------------
    def call_soon(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` on the reactor thread (callable from any thread)."""
        self._calls.append((fn, args))
        # A busy loop finds the call when it next looks (it sets _sleeping before its
        # last look at _calls), so only a sleeping loop needs the wake-up syscall.
        if not self._sleeping or self.in_reactor_thread():
            return
        self._wake()

    def _wake(self) -> None:
        """Make a loop waiting in select return (at most one wake-up byte pending)."""
        with self._wake_lock:
            if self._wake_pending:
                return
            self._wake_pending = True
        try:
            self._wake_w.send(b"\0")
        except (BlockingIOError, OSError):
            pass  # a full or closed wake-up pipe means the loop is awake or gone

    def call_later(self, delay: float, fn: Callable[[], Any]) -> TimerHandle:
        """Schedule ``fn()`` after ``delay`` seconds (reactor thread or hold only).

        ``delay`` may be ``inf`` (never fires); ``nan`` raises ``ValueError`` (it would
        break the timer heap's order).
        """
        if math.isnan(delay):
            raise ValueError("timer delay must not be nan")
        handle = TimerHandle(time.monotonic() + delay, fn, self)
        heapq.heappush(self._timers, (handle.when, next(self._timer_seq), handle))
        if handle.when < self._wait_until:
            self._kick = True  # a holder's timer earlier than the loop's wake-up
        return handle

    def _timer_cancelled(self) -> None:
        # Cancelled timers stay in the heap until they reach its front; when they
        # are most of it, rebuild it so long-dead timers cost no memory.
        self._cancelled_timers += 1
        if self._cancelled_timers > 64 and self._cancelled_timers * 2 > len(self._timers):
            self._timers = [entry for entry in self._timers if not entry[2].cancelled]
            heapq.heapify(self._timers)
            self._cancelled_timers = 0

    def mark_dirty(self, obj: Any) -> None:
        """Have ``obj.flush()`` called at the end of this iteration (reactor thread or
        hold only; a holder's objects are flushed when it releases the hold)."""
        self._dirty[id(obj)] = obj

    # -- sockets -----------------------------------------------------------------------
    def register(self, sock: socket.socket, events: int, handler: Any) -> None:
        self._selector.register(sock, events, handler)

    def modify(self, sock: socket.socket, events: int, handler: Any) -> None:
        self._selector.modify(sock, events, handler)

    def unregister(self, sock: socket.socket) -> None:
        try:
            self._selector.unregister(sock)
        except (KeyError, ValueError):
            pass

    # -- the loop ----------------------------------------------------------------------
    def _run(self) -> None:
        self._hold.acquire()
        try:
            while not self._stopping:
                try:
                    self._iterate()
                except Exception:  # select() or the loop's own bookkeeping failed
                    log.exception("reactor loop iteration failed; continuing")
                    time.sleep(_ERROR_PAUSE)  # a persistent error must not spin a core
        finally:
            self.close_resources()
            self._hold.release()

    def _iterate(self) -> None:
        self._sleeping = True
        timeout = self._next_timeout()
        self._wait_until = time.monotonic() + timeout
        self._kick = False
        self._hold.release()
        try:
            events = self._selector.select(timeout)
        finally:
            self._hold.acquire()
            self._sleeping = False
            self._wait_until = -math.inf  # the loop's own timers need no kick
        for key, mask in events:
            handler = key.data
            if handler is None:
                self._drain_wakeups()
                continue
            self._guarded(self._dispatch_io, handler, mask)
        self._run_timers()
        self._run_calls()
        self._flush_dirty()

    def _next_timeout(self) -> float:
        if self._calls or self._dirty:
            return 0.0
        while self._timers and self._timers[0][2].cancelled:
            heapq.heappop(self._timers)
            self._cancelled_timers -= 1
        if not self._timers:
            return _IDLE_WAIT
        # Clamped: select() raises OverflowError for timeouts too far away.
        return min(_IDLE_WAIT, max(0.0, self._timers[0][0] - time.monotonic()))

    @staticmethod
    def _dispatch_io(handler: Any, mask: int) -> None:
        if mask & selectors.EVENT_READ:
            handler.on_readable()
        if mask & selectors.EVENT_WRITE:
            handler.on_writable()

    def _drain_wakeups(self) -> None:
        # Read the bytes first, then clear the flag: cleared first, a wake-up byte
        # sent in between would be swallowed here while the flag stayed set, and
        # later calls would never wake us. Calls queued before the clear run in this
        # iteration's _run_calls.
        # One read: at most one byte is pending (_wake_pending), and a second one
        # sent after the clear below wakes the next select.
        try:
            self._wake_r.recv(4096)
        except (BlockingIOError, InterruptedError):
            pass
        with self._wake_lock:
            self._wake_pending = False

    def _run_timers(self) -> None:
        now = time.monotonic()
        while self._timers and self._timers[0][0] <= now:
            _, _, handle = heapq.heappop(self._timers)
            if handle.cancelled:
                self._cancelled_timers -= 1
            else:
                callback, handle.callback = handle.callback, None
                handle.cancelled = True  # fired: a later cancel() is a no-op
                self._guarded(callback)

    def _run_calls(self) -> None:
        # Calls queued while we run wait for the next iteration, so timers and I/O
        # cannot starve.
        for _ in range(len(self._calls)):
            fn, args = self._calls.popleft()
            self._guarded(fn, *args)

    def _flush_dirty(self) -> None:
        while self._dirty:
            dirty, self._dirty = self._dirty, {}
            for obj in dirty.values():
                self._guarded(obj.flush)

    @staticmethod
    def _guarded(fn: Callable[..., Any], *args: Any) -> None:
        try:
            fn(*args)
        except Exception:  # the reactor must survive any bug in a handler
            log.exception("unhandled error in reactor callback %r", fn)

    def close_resources(self) -> None:
        """Close the selector and the wakeup pipe (the loop does it when it ends; the
        node calls it when it fails before starting the loop)."""
        self._selector.close()
        self._wake_r.close()
        self._wake_w.close()
