"""One connection over a byte channel (TCP, WebSocket): the upgrade, then muxed streams.

Upgrade (engines/upgrade.py): multistream-select (``/noise`` or ``/tls/1.0.0``) → the
security handshake → muxer (early, in the Noise payload or TLS ALPN, else
multistream-select over the secure channel) → open. Once open, a
:class:`~.muxed.MuxedSession` routes the muxer's streams; the :class:`Connection` is its
link (``interfaces.SessionLink``): it moves bytes between the channel and the muxer.

Everything here runs on the reactor thread, except the methods marked
*thread-safe*, which only queue work for it.
"""

from __future__ import annotations

import errno
import logging
import selectors
import socket
from typing import TYPE_CHECKING, Any, Callable

from .channel_io import RECV_BUFFER, ChannelIO
from .engines.upgrade import Upgrade
from .errors import DialError, ProtocolError
from .muxed import MuxedSession
from .session_connection import SessionConnection

if TYPE_CHECKING:
    from .identity import PeerId
    from .interfaces import ByteChannel, ConnectionOwner, Muxer

log = logging.getLogger(__name__)

YAMUX = "/yamux/1.0.0"
MPLEX = "/mplex/6.7.0"

#: Stop taking data from streams while this much ciphertext waits for the socket.
_WIRE_HIGH_WATER = 1024 * 1024
#: Stop reading the socket while this much output waits for it: what a peer that
#: does not read makes us answer (pongs, negotiation answers, resets) is bounded.
#: Stream data alone stays below (at most _WIRE_HIGH_WATER plus one chunk), so two
#: nodes writing to each other can never both stop reading; reading resumes once
#: the queue is back under _WIRE_HIGH_WATER.
_OUTPUT_PAUSE_AT = 2 * _WIRE_HIGH_WATER
#: Muxer answers (pongs, resets) to one read that end the connection's turn.
_ANSWERS_PER_TURN = 64 * 1024

_READ = selectors.EVENT_READ
_WRITE = selectors.EVENT_WRITE

_CONNECTING, _UPGRADING, _OPEN, _CLOSED, _CLOSING = range(5)
_MUXING = (_OPEN, _CLOSING)
#: How long a gracefully closing connection may take to deliver what was written.
_LINGER = 2.0


class Connection(SessionConnection):
    """A connection to one peer over a byte channel: channel I/O, the upgrade, the
    close, and the link below its :attr:`session` (which has its streams; the calls on
    them are :class:`SessionConnection`'s). Created by the node on the reactor thread."""

    def __init__(self, owner: "ConnectionOwner", sock: "ByteChannel", *, initiator: bool,
                 remote_addr: tuple, transport: Any, expected_peer: "PeerId | None" = None,
                 on_ready: Callable[["Connection", BaseException | None], None],
                 connecting: bool = False) -> None:
        #: Who this connection calls up (the node), see interfaces.ConnectionOwner.
        self.owner = owner
        #: The byte channel (interfaces.ByteChannel): a TCP socket, or a channel of
        #: another byte-stream transport (e.g. WebSocket) wrapping one.
        self.sock = sock
        self._io = ChannelIO(sock, owner.reactor)
        self.initiator = initiator
        self.remote_addr = remote_addr
        #: The transport that made the channel (``remote_multiaddr`` names the peer).
        self.transport = transport
        #: True when the connection runs through a circuit relay (``/p2p-circuit``).
        self.relayed = bool(getattr(transport, "relayed", False))
        self.remote_peer_id: PeerId | None = None
        #: The agreed security protocol (``/noise``, ``/tls/1.0.0``) once secure.
        self.security_protocol: str | None = None
        self.muxer_protocol: str | None = None
        #: The muxed streams, once a muxer is agreed (None before, and after an abort).
        self.session: MuxedSession | None = None
        #: The peer does not read: neither do we (output over _OUTPUT_PAUSE_AT).
        self.output_paused = False
        self._expected_peer = expected_peer
        self._on_ready: Callable | None = on_ready
        self._reactor = owner.reactor
        self._state = _CONNECTING if initiator or connecting else _UPGRADING  # DCUtR
        self._want_write = False
        self._flushing = False  # in flush(): what is queued is sent before it returns
        self._linger_timer: Any = None
        self._write_shut = False
        self._security_closed = False  # the secure transport's goodbye is queued
        self._upgrade: Upgrade | None = None
        self._transport: Any = None
        self._muxer: "Muxer" = None  # type: ignore[assignment]  # set once open
        self._deadline_timer: Any = None
        self.closed_reason: str | None = None

    def __repr__(self) -> str:
        return f"<Connection {self.remote_peer_id or '?'} {self.remote_addr}>"

    def buffer_usage(self) -> dict[str, int]:
        """Reactor thread only: bytes this connection holds because of its peer.

        ``output``: ciphertext waiting for the socket; ``negotiations``: partial
        multistream messages; ``unread``: data its streams hold that the application
        has not read; ``deferred``: input received but not handled yet.
        """
        usage = {"output": self._io.queued, "negotiations": 0, "unread": 0, "deferred": 0}
        if self.session is not None:
            usage.update(self.session.buffer_usage())
        return usage

    # -- start ---------------------------------------------------------------------------
    def start(self, handshake_timeout: float) -> None:
        """Register the socket and begin (connecting, or the listener side of the upgrade)."""
        self._deadline_timer = self._reactor.call_later(handshake_timeout,
                                                        self._handshake_timed_out)
        if self._state == _CONNECTING:
            self._want_write = True
        self.interest_changed()
        if self._state != _CONNECTING:
            self._begin_upgrade()

    def _handshake_timed_out(self) -> None:
        if self._state != _OPEN:
            self.abort(TimeoutError("connection upgrade timed out"))

    def _connected(self) -> None:
        err = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            self.abort(ConnectionRefusedError(err, f"connect to {self.remote_addr}: "
                                              f"{errno.errorcode.get(err, err)}"))
            return
        self._state = _UPGRADING
        self._want_write = False
        self.interest_changed()
        self._begin_upgrade()

    def _begin_upgrade(self) -> None:
        owner = self.owner
        self._upgrade = Upgrade(owner.keypair, initiator=self.initiator,
                                expected_peer=self._expected_peer, security=owner.security,
                                muxers=owner.muxers, identities=owner.security_identities)
        self._take_upgrade_output()

    # -- socket events ---------------------------------------------------------------------
    def on_readable(self) -> None:
        """The reactor: the channel has input (a few reads, then other connections)."""
        if self.session is not None:
            self.session.negotiations.new_turn()
        io = self._io
        for _ in range(4):
            transport = self._transport
            # Once secure, receive straight into the Noise engine's buffer: frames
            # split across reads are then never copied.
            size = io.recv_size
            try:
                n = io.recv(transport)
            except (BlockingIOError, InterruptedError):
                if io.channel_output and self.sock.wants_write:
                    self._reactor.mark_dirty(self)  # e.g. a WebSocket pong to send
                return
            except OSError as exc:
                self.abort(exc)
                return
            if n == 0:
                self._remote_closed()
                return
            try:
                if transport:
                    plain = transport.buffer_updated(n)
                    io.adapt(n, transport)
                    if plain:
                        self._secure_received(plain)
                    self._reactor.mark_dirty(self)
                    if getattr(transport, "peer_closed", False):  # TLS close_notify
                        self._remote_closed()
                        return
                else:
                    self._received(memoryview(self._reactor.scratch)[:n])
            except Exception as exc:
                self.input_failed(exc)
                return
            if self._state == _CLOSED or n < size or not self._reading_allowed():
                return
            if self._state in _MUXING and self._answered_much():
                return  # e.g. a ping flood: other connections' turn

    def _answered_much(self) -> bool:
        """Move the muxer's answers to this turn's input (pongs, resets) to the wire;
        True when they are a turn's worth."""
        out = self._muxer.data_to_send()
        if not out:
            return False
        self._queue_plain(self._transport.encrypt(out))
        return len(out) >= _ANSWERS_PER_TURN

    def input_failed(self, exc: Exception) -> None:
        """(In an ``except`` block.) Handling the peer's input raised: close."""
        if isinstance(exc, (ProtocolError, DialError)):
            log.info("%r: closing after a protocol error: %s", self, exc)
            self.abort(ConnectionAbortedError(f"protocol error: {exc}"), cause=exc)
        else:  # a bug of ours must cost one connection, not the node
            log.exception("%r: internal error while handling input", self)
            self.abort(ConnectionAbortedError(f"internal error: {exc!r}"), cause=exc)

    def on_writable(self) -> None:
        """The reactor: the channel takes output (or a connect finished)."""
        if self._state == _CONNECTING:
            self._connected()
        if self._io.channel_output:
            try:
                self.sock.flush()
            except (BlockingIOError, InterruptedError):
                pass
            except OSError as exc:  # the peer reset the channel: end it, do not spin
                self.abort(exc)
                return
        self.flush()

    def _remote_closed(self) -> None:
        if self._state == _CLOSING:  # the remote answered our close
            self.abort(ConnectionAbortedError("connection closed locally"))
            return
        if self._state == _OPEN:
            log.debug("%r: remote closed the connection", self)
        self.abort(ConnectionResetError("connection closed by the remote"))

    # -- input pipeline ---------------------------------------------------------------------
    def _received(self, data: memoryview) -> None:
        """Bytes that arrived before the connection was secured."""
        if self._state == _UPGRADING:
            upgrade = self._upgrade
            assert upgrade is not None
            upgrade.receive_data(data)
            self._upgrade_progressed(upgrade)
        self._reactor.mark_dirty(self)

    def _secure_received(self, plain: Any) -> None:
        if self._state in _MUXING:
            self.session.muxer_input(  # type: ignore[union-attr]
                self._muxer.receive_data(plain))
        elif self._state == _UPGRADING:
            upgrade = self._upgrade
            assert upgrade is not None
            upgrade.receive_plain(plain)
            self._upgrade_progressed(upgrade)

    def _upgrade_progressed(self, upgrade: Upgrade) -> None:
        """Send what the upgrade answered; once secure, read through its transport;
        once a muxer is agreed, open."""
        self._take_upgrade_output()
        if self._transport is None and upgrade.transport is not None:
            self._transport = upgrade.transport
            self.remote_peer_id = upgrade.remote_peer_id
            self.security_protocol = upgrade.security_protocol
        if upgrade.complete:
            self._upgrade = None
            self._start_muxer(upgrade.muxer_protocol)
            if upgrade.leftover and self._state in _MUXING:
                self.session.receive(upgrade.leftover)  # type: ignore[union-attr]

    def _take_upgrade_output(self) -> None:
        for chunk in self._upgrade.data_to_send():
            self._queue_plain(chunk)

    def _start_muxer(self, protocol: str) -> None:
        self.muxer_protocol = protocol
        self._muxer = self.owner.make_muxer(protocol, self.initiator)
        session = self.session = MuxedSession(self, self.owner, self._muxer, self,
                                              self.remote_peer_id)
        if session.tcp_flow_control:  # see MuxedSession: one read must fit a stream
            self._io.max_recv_size = min(RECV_BUFFER,
                                         self.owner.limits.max_stream_buffer // 4)
        self._state = _OPEN
        if self._deadline_timer is not None:
            self._deadline_timer.cancel()
            self._deadline_timer = None
        log.debug("%r: open with %s", self, protocol)
        on_ready, self._on_ready = self._on_ready, None
        if on_ready is not None:
            on_ready(self, None)

    # -- output (interfaces.SessionLink) ---------------------------------------------------
    def _queue_plain(self, data: Any) -> None:
        if data:
            io = self._io
            io.append(data)
            if io.queued > _OUTPUT_PAUSE_AT and not self.output_paused:
                self.output_paused = True  # the peer does not read: neither do we
                self.interest_changed()
            if not self._flushing:
                self._reactor.mark_dirty(self)

    def has_output_room(self) -> bool:
        """Below the mark up to which streams' data is taken into the wire queue."""
        return self._io.queued < _WIRE_HIGH_WATER

    def take_muxer_output(self) -> int:
        """Encrypt the muxer's frames into the wire queue; return the socket position
        at which they will have been sent."""
        out = self._muxer.data_to_send()
        if out:
            self._queue_plain(self._transport.encrypt(out))
        return self._io.sent + self._io.queued

    def peer_hung_up(self) -> bool:
        """Whether the peer closed (or reset) the channel, without reading from it."""
        return self._io.hung_up()

    def session_ended(self, error: OSError, cause: BaseException | None) -> None:
        """The muxer session is over: send its last frames if the socket takes them,
        then close."""
        self._flush_wire_now()
        self.abort(error, cause=cause)

    def flush(self) -> None:
        """Move stream data into the muxer, muxer output through Noise, and onto the socket."""
        if self._state == _CLOSED:
            return
        self._flushing = True
        try:
            if self._state in _MUXING:
                self.session.pull()  # type: ignore[union-attr]
                out = self._muxer.data_to_send()
                if out:
                    self._queue_plain(self._transport.encrypt(out))
            self._send_wire()
            if self._state == _CLOSING:
                self._finish_closing()
        except Exception as exc:  # a bug of ours must cost one connection, not the node
            log.exception("%r: internal error while sending", self)
            self.abort(ConnectionAbortedError(f"internal error: {exc!r}"), cause=exc)
        finally:
            self._flushing = False

    def _send_wire(self) -> None:
        io = self._io
        if io.queue:
            try:
                io.send()
            except OSError as exc:
                self.abort(exc)
                return
        session = self.session
        if session is not None and session.sent_watch:
            session.output.wake_sent_watchers(io.sent)
        if self.output_paused and io.queued <= _WIRE_HIGH_WATER:
            self.output_paused = False
            self.interest_changed()
            if session is not None:
                session.output_resumed()
        want_write = bool(io.queue) or self._state == _CONNECTING or (
            io.channel_output and self.sock.wants_write)
        if want_write != self._want_write:
            self._want_write = want_write
            self.interest_changed()
        if not io.queue and session is not None and session.to_flush \
                and self._state in _MUXING:
            self._reactor.mark_dirty(self)

    def interest_changed(self) -> None:
        """Register for the socket events we want now (none while paused and idle)."""
        if self._state == _CLOSED:
            return
        interest = 0
        if self._state == _CONNECTING or self._want_write:
            interest |= _WRITE
        if self._state != _CONNECTING and self._reading_allowed():
            interest |= _READ
        self._io.register(interest, self)

    def _reading_allowed(self) -> bool:
        """False while the peer has made us hold enough: its output, its unread data,
        or input we have not handled yet (unless it left: then it sends no more)."""
        session = self.session
        if session is None:
            return not self.output_paused
        pressure = session.pressure
        return pressure.peer_left or not (pressure.holding or self.output_paused
                                          or session.backlog)

    def _flush_wire_now(self) -> None:
        if self._muxer is not None and self._transport is not None:
            self.take_muxer_output()
        self._send_wire()

    # -- closing ---------------------------------------------------------------------------
    def close(self) -> None:
        """Close gracefully: no new streams (GoAway), deliver what streams have queued,
        send FIN, and close once the remote closed too (at most ``_LINGER`` seconds)."""
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
        """Once everything queued is on the wire, send FIN; the remote's FIN ends it."""
        session = self.session
        if (self._io.queue or session.to_flush or session.window_blocked  # type: ignore
                or self._write_shut):
            return
        if not self._security_closed and (self._queue_security_goodbye()
                                          or self._state == _CLOSED):
            return  # FIN once the goodbye is on the wire
        self._write_shut = True
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self.abort(ConnectionAbortedError("connection closed locally"))

    def _queue_security_goodbye(self) -> bool:
        """Queue the secure transport's closing bytes (TLS close_notify; Noise has
        none) once; True when some are still waiting for the socket."""
        self._security_closed = True
        goodbye = getattr(self._transport, "close", None)
        data = goodbye() if goodbye is not None else b""
        if not data:
            return False
        self._queue_plain(data)
        self._send_wire()
        return bool(self._io.queue)

    def abort(self, error: OSError, cause: BaseException | None = None) -> None:
        """Close at once; every stream and waiter gets ``error``."""
        if self._state == _CLOSED:
            return
        if cause is not None and error.__cause__ is None:
            error.__cause__ = cause
        was_open = self._state in _MUXING
        self._state = _CLOSED
        self.closed_reason = str(error)
        for timer in (self._deadline_timer, self._linger_timer):
            if timer is not None:
                timer.cancel()
        self._io.close()
        session, self.session = self.session, None  # it refers to us: no cycle left
        if session is not None:
            session.abort(error)
        on_ready, self._on_ready = self._on_ready, None
        if on_ready is not None:
            on_ready(self, error)
        self.owner.connection_closed(self, was_open)

    @property
    def bytes_sent(self) -> int:
        """*Thread-safe.* Bytes written to the socket so far."""
        return self._io.sent
