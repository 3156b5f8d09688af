"""One QUIC connection (``/quic-v1``): the sibling of the byte-channel ``Connection``.

QUIC brings its own security (TLS 1.3 with the libp2p certificate) and streams, so
there is no upgrade: once the engine (``engines.quic.QuicMuxer``) has verified the
peer's certificate, a :class:`~.muxed.MuxedSession` routes its streams exactly as over
yamux, and the :class:`QuicConnection` is its link (``interfaces.SessionLink``): the
muxer's output leaves as datagrams through the connection's UDP socket
(``transport.udp.QuicSocket``), which also feeds it the datagrams routed to it.
The calls the node, protocols and streams make are :class:`SessionConnection`'s.

``bytes_sent`` and the sent-marks count *stream payload* that went into packets (the
muxer's ``payload_sent``), so ``Stream.flush()`` returns once the data is in datagrams
handed to the kernel, as on TCP once it is in the socket. Reactor thread only, except
the methods marked *thread-safe*.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Callable

from .engines.quic import HandshakeComplete
from .engines.upgrade import PEER_MISMATCH_ERRORS
from .errors import ProtocolError
from .muxed import MuxedSession
from .session_connection import SessionConnection

if TYPE_CHECKING:
    from .engines.quic import QuicMuxer
    from .identity import PeerId
    from .interfaces import ConnectionOwner
    from .limits import Limits

log = logging.getLogger("libp2p_stream_sync.connection")

#: The protocol name our QUIC connections report as their security and muxer.
QUIC_V1 = "/quic-v1"
#: How long a gracefully closing connection may take to have its data acknowledged.
_LINGER = 2.0
#: QUIC idle timeout when keepalive is off (``Limits.keepalive_interval=None``).
_IDLE_TIMEOUT = 30.0
_HANDSHAKING, _OPEN, _CLOSING, _CLOSED = range(4)


def quic_settings(limits: "Limits") -> dict[str, Any]:
    """The ``QuicMuxer`` settings a node's limits imply (README, limits table)."""
    interval = limits.keepalive_interval
    idle = _IDLE_TIMEOUT if interval is None else interval + limits.keepalive_timeout
    return {"stream_window": limits.max_stream_buffer,
            "connection_window": limits.max_connection_buffer,
            "send_buffer": limits.quic_send_buffer,
            "max_streams": limits.max_streams_per_connection,
            "max_datagram_size": limits.quic_max_datagram_size,
            "idle_timeout": idle, "keepalive_interval": interval}


class QuicConnection(SessionConnection):
    """A connection to one peer over QUIC: the handshake (the engine's), the link
    below its :attr:`session`, timers before the session exists, close and abort.
    Made by the QUIC transport on the reactor thread (``qsock`` is its
    ``transport.udp.QuicSocket``)."""

    def __init__(self, owner: "ConnectionOwner", qsock: Any, muxer: "QuicMuxer", *,
                 initiator: bool, remote_addr: tuple, transport: Any,
                 expected_peer: "PeerId | None" = None,
                 on_ready: Callable[["QuicConnection", BaseException | None], None]) -> None:
        self.owner = owner
        #: The UDP socket (``transport.remote_multiaddr(sock, ...)`` reads its family).
        self.sock = qsock
        self.muxer = muxer
        self.initiator = initiator
        self.remote_addr = remote_addr
        self.transport = transport
        self.remote_peer_id: PeerId | None = None
        self.security_protocol = QUIC_V1
        self.muxer_protocol = QUIC_V1
        self.session: MuxedSession | None = None
        self.closed_reason: str | None = None
        #: Never set: a UDP socket does not push back per connection (SessionLink).
        self.output_paused = False
        self._expected_peer = expected_peer
        self._on_ready: Callable | None = on_ready
        self._reactor = owner.reactor
        self._state = _HANDSHAKING
        self._deadline_timer: Any = None
        self._linger_timer: Any = None
        self._timer: Any = None       # the engine's timer until the session has it
        self._timer_when: float | None = None

    def __repr__(self) -> str:
        return f"<QuicConnection {self.remote_peer_id or '?'} {self.remote_addr}>"

    def buffer_usage(self) -> dict[str, int]:
        """Reactor thread only: bytes this connection holds because of its peer (as
        ``Connection.buffer_usage``; ``output`` is 0: datagrams leave at once)."""
        usage = {"output": 0, "negotiations": 0, "unread": 0, "deferred": 0}
        if self.session is not None:
            usage.update(self.session.buffer_usage())
        return usage

    def buffered_bytes(self) -> int:
        """Reactor thread only: the sum of :meth:`buffer_usage`."""
        return sum(self.buffer_usage().values())

    @property
    def bytes_sent(self) -> int:
        """*Thread-safe.* Stream payload bytes put into datagrams so far."""
        return self.muxer.payload_sent

    # -- start -------------------------------------------------------------------------
    def start(self, handshake_timeout: float) -> None:
        """Begin: a client's first Initial goes out; both sides give up after
        ``handshake_timeout``."""
        self._deadline_timer = self._reactor.call_later(handshake_timeout,
                                                        self._handshake_timed_out)
        self._reactor.mark_dirty(self)

    def _handshake_timed_out(self) -> None:
        self._deadline_timer = None
        if self._state == _HANDSHAKING:
            self.abort(TimeoutError("QUIC handshake timed out"))

    # -- input (from the socket) -------------------------------------------------------
    def muxer_events(self, events: list) -> None:
        """Events of the engine for a datagram routed to us (or a timer)."""
        if self._state == _CLOSED:
            return
        try:
            if self.session is None:
                events = self._handshake_events(events)
            if self.session is not None and events:
                self.session.muxer_input(events)
        except Exception as exc:
            self.input_failed(exc)
            return
        self._reactor.mark_dirty(self)

    def _handshake_events(self, events: list) -> list:
        """Before the peer is verified: open on ``HandshakeComplete``; return the
        events after it (for the session)."""
        for i, event in enumerate(events):
            if type(event) is HandshakeComplete:
                self._open(event.peer_id)
                return events[i + 1:]
            if self.muxer.is_terminated:
                self._handshake_failed(event)
                return []
        if self.muxer.is_terminated:
            self._handshake_failed(None)
        return []

    def _handshake_failed(self, event: Any) -> None:
        cause = self.muxer.handshake_error
        reason = getattr(event, "reason", "the connection was closed")
        error: OSError = ConnectionAbortedError(f"QUIC handshake failed: {reason}")
        if isinstance(cause, PEER_MISMATCH_ERRORS):  # the dialer reports it as such
            error = ConnectionRefusedError(f"QUIC handshake failed: {cause}")
        self._flush_now()
        self.abort(error, cause=cause)

    def _open(self, peer: "PeerId") -> None:
        self.remote_peer_id = peer
        self._cancel_timer()
        self.session = MuxedSession(self, self.owner, self.muxer, self, peer)
        self._state = _OPEN
        if self._deadline_timer is not None:
            self._deadline_timer.cancel()
            self._deadline_timer = None
        log.debug("%r: open", self)
        on_ready, self._on_ready = self._on_ready, None
        if on_ready is not None:
            on_ready(self, None)

    def input_failed(self, exc: Exception) -> None:
        """(In an ``except`` block.) Handling the peer's input raised: close."""
        if isinstance(exc, ProtocolError):
            log.info("%r: closing after a protocol error: %s", self, exc)
            self.abort(ConnectionAbortedError(f"protocol error: {exc}"), cause=exc)
        else:  # a bug of ours must cost one connection, not the node
            log.exception("%r: internal error while handling input", self)
            self.abort(ConnectionAbortedError(f"internal error: {exc!r}"), cause=exc)

    # -- output (interfaces.SessionLink) -----------------------------------------------
    def has_output_room(self) -> bool:
        """False while the socket has datagrams the kernel did not take yet."""
        return not self.sock.backlogged

    def take_muxer_output(self) -> int:
        """The ``bytes_sent`` position at which what the muxer took will have left."""
        return self.muxer.payload_queued

    def interest_changed(self) -> None:
        """Nothing to do: the socket is shared, and QUIC's flow control (not a paused
        read) bounds what the peer can make us hold."""

    def peer_hung_up(self) -> bool:
        """Whether the connection is over (the engine saw CONNECTION_CLOSE or idle)."""
        return self.muxer.is_terminated

    def session_ended(self, error: OSError, cause: BaseException | None) -> None:
        """The QUIC connection is over: send its last datagrams, then close."""
        self._flush_now()
        self.abort(error, cause=cause)

    def flush(self) -> None:
        """Move stream data into the engine and its datagrams onto the socket."""
        if self._state == _CLOSED:
            return
        try:
            session = self.session
            if session is not None:
                session.pull()
            self._flush_now()
            if session is None:
                self._arm_timer()
            if session is not None:
                session.arm_timer()  # sending moved the engine's timers (pacing, ACKs)
            if session is not None and session.sent_watch:
                session.output.wake_sent_watchers(self.muxer.payload_sent)
            if self._state == _CLOSING:
                self._finish_closing()
        except Exception as exc:  # a bug of ours must cost one connection, not the node
            log.exception("%r: internal error while sending", self)
            self.abort(ConnectionAbortedError(f"internal error: {exc!r}"), cause=exc)

    def _flush_now(self) -> None:
        if not self.sock.backlogged:
            out = self.sock.datagrams_of(self.muxer, time.monotonic())
            if out:
                self.sock.send(out)

    def _arm_timer(self) -> None:
        """Before the session exists, we run the engine's timer (retransmissions)."""
        when = self.muxer.get_timer()
        if when == self._timer_when:
            return
        self._cancel_timer()
        self._timer_when = when
        if when is not None:
            self._timer = self._reactor.call_later(max(0.0, when - time.monotonic()),
                                                   self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_when = None
        if self._state == _HANDSHAKING:
            self.muxer_events(self.muxer.handle_timer(time.monotonic()))
            self._reactor.mark_dirty(self)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_when = None

    # -- closing -----------------------------------------------------------------------
    def close(self) -> None:
        """Close gracefully: no new streams, deliver what streams have queued (until
        acknowledged, at most ``_LINGER`` seconds), then CONNECTION_CLOSE."""
        if self._state != _OPEN:
            if self._state != _CLOSING:
                self.abort(ConnectionAbortedError("connection closed locally"))
            return
        self._state = _CLOSING
        self.session.begin_close()  # type: ignore[union-attr]
        self._linger_timer = self._reactor.call_later(
            _LINGER, lambda: self.abort(ConnectionAbortedError("connection closed locally")))
        self.flush()

    def _finish_closing(self) -> None:
        session = self.session
        if session is None or session.to_flush or session.window_blocked:
            return
        if self.muxer.unacknowledged_bytes():
            return  # an acknowledgement flushes us again
        self.abort(ConnectionAbortedError("connection closed locally"))

    def abort(self, error: OSError, cause: BaseException | None = None) -> None:
        """Close at once (CONNECTION_CLOSE goes out); every stream and waiter gets
        ``error``."""
        if self._state == _CLOSED:
            return
        if cause is not None and error.__cause__ is None:
            error.__cause__ = cause
        was_open = self._state in (_OPEN, _CLOSING)
        self._state = _CLOSED
        self.closed_reason = str(error)
        for timer in (self._deadline_timer, self._linger_timer):
            if timer is not None:
                timer.cancel()
        self._cancel_timer()
        if not self.muxer.is_terminated:
            self.muxer.close(reason=str(error)[:100])
            self._flush_now()
        self.sock.forget(self)
        session, self.session = self.session, None
        if session is not None:
            session.abort(error)
        on_ready, self._on_ready = self._on_ready, None
        if on_ready is not None:
            on_ready(self, error)
        self.owner.connection_closed(self, was_open)
