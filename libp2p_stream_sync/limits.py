"""Resource limits of a node, with defaults that suit a single-process service."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    """Bounds on what remote peers (and our own application) may make a node hold.

    Pass an instance as ``Node(limits=Limits(...))``; every field has a default.
    """

    #: Open connections that remote peers dialed; further inbound TCP connections
    #: are closed at once.
    max_inbound_connections: int = 1024
    #: Open connections we dialed; further dials fail with ``DialError``.
    max_outbound_connections: int = 1024
    #: Streams open at once on one connection (both directions, per muxer session).
    max_streams_per_connection: int = 8192
    #: Inbound streams of one protocol from one peer open at once; more are reset.
    max_inbound_streams_per_protocol_per_peer: int = 1024
    #: yamux: inbound streams not yet acknowledged (the spec's backlog); more are reset.
    yamux_backlog: int = 256
    #: Seconds a new connection may take to finish TCP + Noise + muxer negotiation.
    handshake_timeout: float = 10.0
    #: Seconds a connection may stay without any stream before we close it
    #: (``None``: never).
    idle_connection_timeout: float | None = 300.0
    #: Seconds a stream we closed may wait for the remote to finish its side before
    #: it is reset (so peers that never close cannot pin streams).
    stream_close_timeout: float = 60.0
    #: Most unread bytes a stream may hold: the largest yamux receive window it grows
    #: to, and mplex's per-stream buffer bound (mplex resets a stream beyond it).
    max_stream_buffer: int = 16 * 1024 * 1024
    #: Most unread bytes all streams of one connection may hold together (data the
    #: application has not read yet, streams not yet accepted included). Beyond it the
    #: node stops reading that connection, so TCP pushes back on the sender; if it
    #: stays stuck for 5 s, the streams holding the most are reset.
    max_connection_buffer: int = 32 * 1024 * 1024
    #: Seconds an inbound stream may take to agree on its protocol (multistream-select;
    #: go- and rust-libp2p use 10 s too) before it is reset.
    negotiation_timeout: float = 10.0
    #: Bytes the protocol negotiations of one connection may buffer together (partial
    #: multistream messages); the stream whose negotiation goes beyond it is reset.
    max_negotiation_buffer: int = 128 * 1024
    #: yamux keepalive: ping after this many idle seconds (``None``: no keepalive) ...
    keepalive_interval: float | None = 15.0
    #: ... and close the connection when the ping is not answered within this time.
    keepalive_timeout: float = 10.0

    def __post_init__(self) -> None:
        for name in ("max_inbound_connections", "max_outbound_connections",
                     "max_streams_per_connection",
                     "max_inbound_streams_per_protocol_per_peer", "yamux_backlog"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        if (self.handshake_timeout <= 0 or self.keepalive_timeout <= 0
                or self.stream_close_timeout <= 0 or self.negotiation_timeout <= 0):
            raise ValueError("timeouts must be positive")
        if self.max_stream_buffer < 256 * 1024:
            raise ValueError("max_stream_buffer must be at least 256 KiB (yamux's window)")
        if self.max_connection_buffer < self.max_stream_buffer:
            raise ValueError("max_connection_buffer must be at least max_stream_buffer")
        if self.max_negotiation_buffer < 4096:
            raise ValueError("max_negotiation_buffer must be at least 4 KiB (two protocol "
                             "ids of the longest length peers accept)")
