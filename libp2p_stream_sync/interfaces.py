"""The written contracts between the layers above the engines.

* :class:`Muxer`: what a connection needs of a stream muxer engine (yamux, mplex; a
  QUIC connection's own streams later). The engines implement it without importing it.
* :class:`ConnectionOwner`: what a connection may call *up* (the node implements it and
  hands it to every connection); the connection imports nothing above itself.
* :class:`SessionLink`: what a ``muxed.MuxedSession`` (one muxer session's streams)
  calls on the connection below it, which moves the muxer's input and output.
* :class:`ByteChannel`: the socket-like object a byte-stream transport hands to the
  upgrade (a TCP socket today; a WebSocket channel next).

These are ``typing.Protocol`` classes: structural, nothing subclasses them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Protocol, Sequence

if TYPE_CHECKING:
    from .budget import BufferBudget
    from .engines.upgrade import SecurityProtocol
    from .identity import Keypair
    from .limits import Limits
    from .reactor import Reactor


class Muxer(Protocol):
    """A sans-IO stream muxer session (engines/yamux.py, engines/mplex.py).

    Events are those of ``engines/muxer_events.py``. Stream calls raise
    ``StreamClosedError`` for a stream that is gone, ``open_stream`` raises
    ``StreamLimitError`` beyond the stream limit.
    """

    #: False when the muxer has no per-stream windows (mplex): the connection then
    #: pauses reading the socket so that TCP pushes back on the sender.
    has_flow_control: bool

    @property
    def is_terminated(self) -> bool:
        """The session is over (protocol violation, keepalive timeout, error GoAway)."""

    @property
    def outbound_unacked(self) -> int:
        """Our streams the remote has not acknowledged yet (0: no ACK backlog)."""

    def receive_data(self, data: Any, now: float | None = None) -> list:
        """Feed bytes from the peer; return the events they caused."""

    def data_to_send(self) -> Any:
        """Take every frame queued for the wire (``b""`` when none)."""

    def open_stream(self) -> int:
        """Open an outbound stream; return its id."""

    def send_window(self, stream_id: int) -> int:
        """How many bytes :meth:`send_data` would take now."""

    def send_data(self, stream_id: int, data: Any) -> int:
        """Frame some of ``data``; return how many bytes were taken."""

    def close_stream(self, stream_id: int) -> None:
        """Half-close our side (FIN)."""

    def reset_stream(self, stream_id: int) -> None:
        """Abort the stream both ways (RST)."""

    def consumed(self, stream_id: int, n: int, now: float) -> None:
        """The application read ``n`` bytes of the stream (window updates)."""

    def go_away(self, code: int) -> None:
        """No new streams either way from now on."""

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` wants to run next (monotonic), or None."""

    def handle_timer(self, now: float) -> list:
        """Run due timers (keepalive); return the events they caused."""


class ConnectionOwner(Protocol):
    """What a :class:`~libp2p_stream_sync.connection.Connection` calls up.

    All of it on the reactor thread, except the read-only attributes.
    """

    keypair: "Keypair"
    limits: "Limits"
    #: Muxer protocol ids we offer, most preferred first.
    muxers: Sequence[str]
    #: The security protocols we offer, most preferred first (engines/upgrade.py).
    security: Sequence["SecurityProtocol"]
    #: Their per-node state by protocol id (Noise: the signed static key).
    security_identities: Mapping[str, Any]
    #: Unread stream data of all connections, per peer and in all (reactor thread).
    buffer_budget: "BufferBudget"

    @property
    def reactor(self) -> "Reactor":
        """The reactor that runs the connection."""

    def make_muxer(self, protocol: str, initiator: bool) -> Muxer:
        """A new muxer session for the agreed ``protocol``."""

    def protocol_supported(self, protocol: str) -> bool:
        """Whether an inbound stream may negotiate ``protocol``."""

    def supported_protocols(self) -> Sequence[str]:
        """Our protocols, for a peer's ``ls`` (cheap: called per request)."""

    def inbound_stream(self, conn: Any, stream: Any) -> bool:
        """Take a negotiated inbound stream; False: refused (the connection resets
        it). A taken stream is counted until :meth:`inbound_stream_finished`."""

    def admit_inbound_stream(self, peer: Any) -> bool:
        """Count a stream the remote opens (before its negotiation); False: over the
        per-peer or node-wide stream bound (the connection resets it)."""

    def inbound_stream_gone(self, peer: Any) -> None:
        """A stream :meth:`admit_inbound_stream` counted is gone."""

    def inbound_stream_finished(self, stream: Any) -> None:
        """A stream :meth:`inbound_stream` took is gone."""

    def connection_closed(self, conn: Any, was_open: bool) -> None:
        """The connection is closed (``was_open``: it had finished its upgrade)."""


class SessionLink(Protocol):
    """What a :class:`~libp2p_stream_sync.muxed.MuxedSession` calls on the side below
    it: the connection that carries the muxer's input and output (a byte-channel
    ``Connection``; a QUIC connection whose muxer's I/O is datagrams).

    All of it on the reactor thread, except :attr:`bytes_sent`. The session also
    hands the link to ``Reactor.mark_dirty``: the reactor then calls ``flush()``,
    which calls the session's ``pull()`` while the session is open and then sends
    what the muxer has queued.
    """

    #: The peer does not read what we send: answer nothing more for now.
    output_paused: bool

    @property
    def bytes_sent(self) -> int:
        """*Thread-safe.* Bytes sent so far (what the streams' sent-marks count)."""

    def has_output_room(self) -> bool:
        """Whether the session may hand the muxer more stream data now."""

    def take_muxer_output(self) -> int:
        """Move what the muxer has queued toward the network; return the position
        (in :attr:`bytes_sent` terms) at which that output will have been sent."""

    def interest_changed(self) -> None:
        """Whether to read input may have changed (backlog, unread data)."""

    def peer_hung_up(self) -> bool:
        """Whether the peer has gone, seen without reading its input."""

    def input_failed(self, exc: Exception) -> None:
        """(In an ``except`` block.) Handling the peer's input raised: close."""

    def session_ended(self, error: OSError, cause: BaseException | None) -> None:
        """The muxer session is over: send its last output if possible, then close."""

    def close(self) -> None:
        """Close gracefully (the session has been idle too long)."""

    def flush(self) -> None:
        """Send what is queued (the reactor calls it at the end of a turn)."""


class ByteChannel(Protocol):
    """A non-blocking, socket-like byte stream (docs/ARCHITECTURE.md, transports).

    A channel that is not a plain socket may hold output of its own (WebSocket
    framing, pongs, a close frame); it then also has ``wants_write -> bool`` (keep
    write interest on) and ``flush() -> None`` (send that output, non-blocking).
    """

    def fileno(self) -> int:
        """What the reactor's selector watches."""

    def recv_into(self, buffer: Any, nbytes: int = 0) -> int:
        """Application bytes into ``buffer``; 0 at the end; BlockingIOError when none."""

    def sendmsg(self, buffers: Sequence[Any]) -> int:
        """Bytes of ``buffers`` accepted; BlockingIOError when none could be."""

    def shutdown(self, how: int) -> None:
        """``SHUT_WR``: graceful end of our side."""

    def close(self) -> None:
        """Release the channel."""

    def getsockopt(self, level: int, option: int) -> int:
        """For ``SO_ERROR`` after a non-blocking connect."""
