"""Timeout arguments, checked the same way by every public call that takes one.

The rules follow ``socket.settimeout`` and ``queue.Queue.get``: a timeout is ``None``
(no deadline of the caller's) or a non-negative number of seconds. ``inf`` means the
same as ``None``, and so does any value beyond ``threading.TIMEOUT_MAX`` (centuries),
which no wait could honour; ``nan`` and negative numbers raise ``ValueError``; anything
that is not a real number raises ``TypeError``.
"""

from __future__ import annotations

import math
import numbers
import threading
import time

#: Seconds after which ``open_stream`` and ``dial`` called with ``timeout=None`` give up
#: anyway. In practice the node's own bounds end them first (``Limits.handshake_timeout``
#: for each connection attempt); this cap bounds what has no bound of its own, such as
#: a peer that accepts a stream but never answers its protocol negotiation. Like a
#: blocking ``socket.connect``, which the OS gives up after about two minutes.
MAX_UNBOUNDED_WAIT = 120.0


def check_timeout(value: object, name: str = "timeout") -> float | None:
    """Return ``value`` as seconds (``float``), or ``None`` for no deadline.

    ``None``, ``inf`` and values beyond ``threading.TIMEOUT_MAX`` give ``None``; ``0``
    is allowed (the caller decides what an
    immediate deadline means). Raises ``ValueError`` for ``nan`` and negative values and
    ``TypeError`` for non-numbers.
    """
    if value is None:
        return None
    if not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number of seconds, not {type(value).__name__}")
    seconds = float(value)
    if math.isnan(seconds):
        raise ValueError(f"{name} must be a number of seconds, not nan")
    if seconds < 0:
        raise ValueError(f"{name} must not be negative (got {value!r})")
    if seconds > threading.TIMEOUT_MAX:  # inf, or too far away for any wait
        return None
    return seconds


def deadline_after(timeout: float | None, cap: float | None = None) -> float:
    """The ``time.monotonic()`` deadline ``timeout`` seconds from now.

    A ``None`` timeout gives ``now + cap``, or ``inf`` when there is no cap either.
    """
    if timeout is None:
        timeout = math.inf if cap is None else cap
    return time.monotonic() + timeout


def time_left(deadline: float) -> float | None:
    """Seconds until ``deadline`` (never negative); ``None`` when it is infinite.

    The result can be passed to ``Future.result`` or ``Condition.wait``, which reject
    an infinite timeout.
    """
    if math.isinf(deadline):
        return None
    return max(0.0, deadline - time.monotonic())


#: Seconds a blocking step of ping or perf called with ``timeout=None`` may go without
#: progress before it fails: no deadline of the caller's, but a silent peer still ends it.
STALL_TIMEOUT = 60.0


def step_timeout(deadline: float, what: str) -> float:
    """Seconds the next blocking step may wait for: until ``deadline``, or
    :data:`STALL_TIMEOUT` when the deadline is infinite. Raises ``TimeoutError``
    (``"<what> timed out"``) once the deadline has passed."""
    if math.isinf(deadline):
        return STALL_TIMEOUT
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError(f"{what} timed out")
    return remaining
