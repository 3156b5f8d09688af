"""What the node, the protocols and the streams call on a connection with muxed streams.

:class:`SessionConnection` is the base of the connections whose streams a
:class:`~.muxed.MuxedSession` routes (the byte-channel ``Connection``, the
``quic_connection.QuicConnection``): it serves those calls from its :attr:`session`, so that callers
need not know where the streams live. The subclass sets ``session`` once the muxer is
agreed, and ``closed_reason`` when it closes; it drops ``session`` when it aborts.
"""

from __future__ import annotations

from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, Callable

from .futures import fail

if TYPE_CHECKING:
    from .identity import PeerId
    from .muxed import MuxedSession
    from .stream import Stream


class SessionConnection:
    """The stream-facing calls of a connection, delegated to its session."""

    #: The muxed streams, once a muxer is agreed (None before, and after an abort).
    session: "MuxedSession | None"
    #: Why the connection closed, once it has.
    closed_reason: str | None
    remote_peer_id: "PeerId | None"
    _reactor: Any
    #: Set (from any thread) by a protocol that needs the connection while it has no
    #: stream (a relay reservation): the idle timeout then leaves it open.
    keep_alive = False

    @property
    def goaway_received(self) -> bool:
        """The remote sent GoAway: it takes no new streams."""
        session = self.session  # read once: the reactor may drop it meanwhile
        return session is not None and session.goaway_received

    def usable_for_new_streams(self) -> bool:
        """*Thread-safe* (reads flags the reactor sets; never the engine):
        open, no GoAway received, the muxer session not over."""
        session = self.session
        return session is not None and session.usable_for_new_streams()

    def buffer_usage(self) -> dict[str, int]:
        """Reactor thread only: bytes this connection holds because of its peer, by
        kind (the connection below says which kinds it has)."""
        raise NotImplementedError

    def buffered_bytes(self) -> int:
        """Reactor thread only: the sum of :meth:`buffer_usage`."""
        return sum(self.buffer_usage().values())

    def stream_counts(self) -> dict[str, int]:
        """Approximate (read from any thread): ``streams`` open, ``negotiating``."""
        session = self.session
        if session is None:
            return {"streams": 0, "negotiating": 0}
        return session.stream_counts()

    def open_stream(self, protocol: str, future: Future, lazy: bool = False) -> None:
        """*Thread-safe.* Open a stream and negotiate ``protocol``; resolve ``future``.

        ``lazy``: resolve at once; the negotiation finishes in the background and a
        refusal fails the stream's next read or write with ``UnsupportedProtocol``.
        Done in this thread while the reactor is idle and the session has few
        streams (``StreamCalls.few_streams``).
        """
        session = self.session  # read once: an abort drops it and its calls
        calls = session.calls if session is not None else None
        if calls is not None and calls.few_streams():
            self._reactor.call_now_or_soon(self._open_stream, protocol, future, lazy)
        else:
            self._reactor.call_soon(self._open_stream, protocol, future, lazy)

    def _open_stream(self, protocol: str, future: Future, lazy: bool) -> None:
        if self.session is not None:
            self.session.open(protocol, future, lazy)
        elif not future.cancelled():
            fail(future, self._not_open())

    def _not_open(self) -> OSError:
        return ConnectionResetError(f"connection to {self.remote_peer_id} "
                                    f"is closing: {self.closed_reason}")

    def abandon_open(self, future: Future) -> None:
        """*Thread-safe.* The opener timed out: reset its stream if still negotiating."""
        session = self.session  # read once: the reactor may drop it meanwhile
        if session is not None:
            self._reactor.call_soon(session.negotiations.abandon, future)

    def collect(self, protocol: str, limit: int, timeout: float,
                callback: Callable[[bytes | None, BaseException | None], None]) -> None:
        """Reactor thread only: read a whole response without an application thread.

        Opens a stream for ``protocol``, half-closes it at once and gathers what the
        remote sends until it closes; then calls ``callback(data, None)``, or
        ``callback(None, error)`` on failure, more than ``limit`` bytes, or
        ``timeout``. For request-less exchanges such as identify.
        """
        if self.session is not None:
            self.session.collectors.collect(protocol, limit, timeout, callback)
        else:
            callback(None, self._not_open())

    def watch_stream(self, stream: "Stream", on_event: Callable[[], None]) -> None:
        """Reactor thread only: call ``on_event()`` on the reactor whenever ``stream``
        receives data, its end or a reset, so a responder can serve it without a thread
        (it reads with timeout 0). Stops when the stream is forgotten."""
        if self.session is not None:
            self.session.table.watch(stream, on_event)

    def unsent_bytes(self, stream: "Stream") -> int:
        """Bytes written to ``stream`` that the muxer has not taken yet."""
        return stream.unsent_bytes
