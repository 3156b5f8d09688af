"""Completing ``concurrent.futures.Future`` s from the reactor without races.

An application thread that times out cancels its future; the reactor must then
undo what it did for it (reset a stream, close a connection) instead of raising
``InvalidStateError``.
"""

from __future__ import annotations

from concurrent.futures import Future
from typing import Any


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
        return future.result(timeout)
    except TimeoutError:
        if future.cancel():
            raise
        return future.result()
