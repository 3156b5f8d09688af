"""Completing ``concurrent.futures.Future`` s from the reactor without races.

An application thread that times out cancels its future; the reactor must then
undo what it did for it (reset a stream, close a connection) instead of raising
``InvalidStateError``.
"""

from __future__ import annotations

import concurrent.futures
from concurrent.futures import Future
from typing import Any


def result(future: Future, timeout: float | None) -> Any:
    """``future.result(timeout)`` raising the built-in ``TimeoutError`` on Python 3.10 too
    (``concurrent.futures.TimeoutError`` became an alias of it only in 3.11)."""
    try:
        return future.result(timeout)
    except concurrent.futures.TimeoutError as exc:
        if isinstance(exc, TimeoutError):
            raise
        raise TimeoutError(str(exc) or "timed out") from None


def complete(future: Future, value: Any) -> bool:
    """Set ``value`` unless the waiter gave up; return False when it did."""
    if not future.set_running_or_notify_cancel():
        return False
    future.set_result(value)
    return True


def fail(future: Future | None, error: BaseException) -> None:
    """Set ``error`` on ``future`` (if any) unless it is already done or cancelled."""
    if future is None or future.done():
        return
    if future.set_running_or_notify_cancel():
        future.set_exception(error)


def wait(future: Future, timeout: float | None) -> Any:
    """Wait for ``future``; on timeout cancel it and raise ``TimeoutError``.

    If the reactor claimed the future just before we cancelled, its result is
    moments away and is returned.
    """
    try:
        return result(future, timeout)
    except TimeoutError:
        if future.cancel():
            raise
        return future.result()
