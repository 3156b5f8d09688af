"""Thread-safe calls on a connection read its session once: the reactor drops the
session when it aborts the connection, possibly between two reads of another thread
(which then raised AttributeError from inside an open's cleanup, hiding the real error).
"""

from concurrent.futures import Future
from types import SimpleNamespace

from libp2p_stream_sync.session_connection import SessionConnection


class _Reactor:
    def __init__(self) -> None:
        self.scheduled: list = []

    def call_soon(self, fn, *args) -> None:
        self.scheduled.append((fn, args))


class _AbortedBetweenReads(SessionConnection):
    """``session`` is there on the first read and gone (aborted) on every later one."""

    def __init__(self) -> None:
        self._reads = 0
        self._reactor = _Reactor()
        self.abandoned = SimpleNamespace(abandon=lambda future: None)

    @property
    def session(self):  # type: ignore[override]
        self._reads += 1
        if self._reads == 1:
            return SimpleNamespace(negotiations=self.abandoned, goaway_received=True)
        return None


def test_abandon_open_survives_an_abort_between_reads() -> None:
    conn = _AbortedBetweenReads()
    future: Future = Future()
    conn.abandon_open(future)
    assert conn._reactor.scheduled == [(conn.abandoned.abandon, (future,))]


def test_goaway_received_survives_an_abort_between_reads() -> None:
    assert _AbortedBetweenReads().goaway_received is True
