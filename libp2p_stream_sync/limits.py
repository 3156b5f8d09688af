"""Resource limits of a node, with defaults that suit a single-process service."""

from __future__ import annotations

from dataclasses import dataclass

from .timeouts import check_timeout


@dataclass(frozen=True)
class Limits:
    """Bounds on what remote peers (and our own application) may make a node hold.

    Pass an instance as ``Node(limits=Limits(...))``; every field has a default.
    Counts are non-negative ints. Timeouts are positive seconds; the two that accept
    ``None`` (never) take ``inf`` as ``None``; ``nan``, zero, negative and infinite
    values elsewhere raise ``ValueError``, non-numbers ``TypeError``.
    """

    #: Open connections that remote peers dialed; further inbound TCP connections
    #: are closed at once.
    max_inbound_connections: int = 1024
    #: Open connections we dialed; further dials fail with ``DialError``.
    max_outbound_connections: int = 1024
    #: Open connections with one peer (both directions); a further inbound one is
    #: closed once the peer is authenticated, so one identity cannot take every slot.
    max_connections_per_peer: int = 8
    #: Streams open at once on one connection (both directions, per muxer session).
    max_streams_per_connection: int = 8192
    #: Inbound streams of one protocol from one peer open at once; more are reset.
    #: (An accept queue also bounds each peer's share of it: ``accept(max_per_peer=)``.)
    max_inbound_streams_per_protocol_per_peer: int = 1024
    #: Inbound streams of one peer open at once, over all its connections (negotiating
    #: ones included); more are reset at once.
    max_inbound_streams_per_peer: int = 2048
    #: ... and of all peers together.
    max_inbound_streams: int = 32768
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
    #: ... and all connections of one peer together (its share of the node's buffer
    #: budget): beyond it the node stops reading that peer's connections; stuck for
    #: 5 s, each resets its largest holder.
    max_peer_buffer: int = 64 * 1024 * 1024
    #: ... and all connections of the node together: beyond it the node stops reading
    #: every connection that receives stream data, until the application has read
    #: enough (below three quarters of the bound); stuck for 5 s, as above.
    max_node_buffer: int = 256 * 1024 * 1024
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
    #: Jobs on the node's handler thread pool (perf streams, identify pushes we
    #: send), queued or running; beyond it the stream is reset.
    max_handler_jobs: int = 256
    #: ... and of those, jobs on behalf of one peer, so one peer cannot fill the pool.
    max_handler_jobs_per_peer: int = 8
    #: Peers in the address book: up to this many whose addresses the application
    #: gave, and apart from them as many learned through identify (learned entries of
    #: peers we are not connected to are evicted first; configured ones never by them).
    max_address_book_peers: int = 10_000
    #: Circuit relay: stop handshakes under way (relays announcing circuits to us,
    #: until the relay's request arrives), in all ...
    max_stop_handshakes: int = 64
    #: ... and from one relay; more stop streams are reset.
    max_stop_handshakes_per_relay: int = 16
    #: DCUtR hole punches (``/libp2p/dcutr`` sessions, either role) under way at once,
    #: one per peer; 0 turns hole punching off. More are not started (or reset) ...
    max_hole_punches: int = 8
    #: ... and sessions one peer may start (or make us start) per minute.
    max_hole_punches_per_peer: int = 3
    #: QUIC: bytes we hold per stream until the peer acknowledges them (unsent plus
    #: unacknowledged); a writer beyond it blocks.
    quic_send_buffer: int = 4 * 1024 * 1024
    #: QUIC: the largest UDP payload we send. 1200 fits every IPv4 and IPv6 path
    #: (RFC 9000 14); the engine has no path MTU discovery, so raise it only where
    #: the path is known to carry more (loopback, a LAN: 1452 for a 1500-byte MTU).
    quic_max_datagram_size: int = 1200
    #: QUIC: connections per UDP socket whose peer is not verified yet (handshakes in
    #: progress, each given up after ``handshake_timeout``); more Initials are dropped ...
    quic_max_half_open: int = 256
    #: ... and of those, from one source IP.
    quic_max_half_open_per_host: int = 16
    #: AutoNAT server (``Node(enable_autonat_server=True)``): requests of one peer
    #: that we dial back per minute, v1 and v2 together (charged once a dial will
    #: happen: after a v2 requester paid its dial data); more are answered v1
    #: ``E_DIAL_REFUSED``, v2 ``E_REQUEST_REJECTED`` ...
    max_autonat_dialbacks_per_peer: int = 3
    #: ... and of all peers together (go-libp2p's defaults: 3 and 30).
    max_autonat_dialbacks: int = 30
    #: Seconds one AutoNAT dial-back (all of a request's addresses) may take.
    autonat_dial_timeout: float = 15.0

    def __post_init__(self) -> None:
        for name in _COUNTS:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"{name} must be an int, not {type(value).__name__}")
            if value < 0:
                raise ValueError(f"{name} must not be negative")
        for name in _POSITIVE_COUNTS:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        for name in _TIMEOUTS:
            seconds = check_timeout(getattr(self, name), name)
            if seconds is None or seconds == 0:
                raise ValueError(f"{name} must be a positive, finite number of seconds "
                                 f"(got {getattr(self, name)!r})")
            object.__setattr__(self, name, seconds)
        for name in _OPTIONAL_TIMEOUTS:
            seconds = check_timeout(getattr(self, name), name)  # inf means None: never
            if seconds == 0:
                raise ValueError(f"{name} must be positive or None")
            object.__setattr__(self, name, seconds)
        if self.max_stream_buffer < 256 * 1024:
            raise ValueError("max_stream_buffer must be at least 256 KiB (yamux's window)")
        if self.max_connection_buffer < self.max_stream_buffer:
            raise ValueError("max_connection_buffer must be at least max_stream_buffer")
        if not self.max_stream_buffer <= self.max_peer_buffer <= self.max_node_buffer:
            raise ValueError("buffers must grow from stream to peer to node: "
                             "max_stream_buffer <= max_peer_buffer <= max_node_buffer")
        if not 1200 <= self.quic_max_datagram_size <= 65527:
            raise ValueError("quic_max_datagram_size must be 1200 to 65527 (RFC 9000)")
        if self.max_negotiation_buffer < 4096:
            raise ValueError("max_negotiation_buffer must be at least 4 KiB (two protocol "
                             "ids of the longest length peers accept)")


_COUNTS = ("max_inbound_connections", "max_outbound_connections",
           "max_streams_per_connection", "max_inbound_streams_per_protocol_per_peer",
           "yamux_backlog", "max_stream_buffer", "max_connection_buffer",
           "max_peer_buffer", "max_node_buffer", "max_inbound_streams_per_peer",
           "max_inbound_streams",
           "max_negotiation_buffer", "max_connections_per_peer",
           "max_handler_jobs", "max_handler_jobs_per_peer", "max_address_book_peers",
           "max_stop_handshakes", "max_stop_handshakes_per_relay",
           "max_hole_punches", "max_hole_punches_per_peer",
           "max_autonat_dialbacks_per_peer", "max_autonat_dialbacks",
           "quic_send_buffer", "quic_max_half_open", "quic_max_half_open_per_host",
           "quic_max_datagram_size")
#: Counts that must be at least 1.
_POSITIVE_COUNTS = ("max_connections_per_peer", "max_handler_jobs",
                    "max_inbound_streams_per_peer", "max_inbound_streams",
                    "max_handler_jobs_per_peer", "max_address_book_peers",
                    "quic_send_buffer", "quic_max_half_open", "quic_max_half_open_per_host")
_TIMEOUTS = ("handshake_timeout", "stream_close_timeout", "keepalive_timeout",
             "negotiation_timeout", "autonat_dial_timeout")
_OPTIONAL_TIMEOUTS = ("idle_connection_timeout", "keepalive_interval")


@dataclass(frozen=True)
class RelayLimits:
    """What a node serving circuit relay v2 (``Node(relay_service=RelayLimits())``)
    grants and holds. Defaults follow go-libp2p's relay (``DefaultResources``).

    ``circuit_duration`` and ``circuit_data`` are sent to clients as the circuit's
    ``Limit`` (0: none); beyond them both streams of the circuit are reset.
    """

    #: Seconds a reservation (or its refresh) lasts.
    reservation_ttl: float = 3600.0
    #: Reservations held at once (one per peer; a refresh replaces it).
    max_reservations: int = 128
    #: Accepted reservation requests of one peer per ``reservation_ttl`` (refreshes
    #: included), so a peer cannot make us sign vouchers without end.
    max_reservations_per_peer: int = 4
    #: Reservations of peers connected from one IP address.
    max_reservations_per_ip: int = 8
    #: Seconds a circuit may last (0: no limit).
    circuit_duration: float = 120.0
    #: Bytes a circuit may carry in each direction (0: no limit).
    circuit_data: int = 128 * 1024
    #: Circuits open at once ...
    max_circuits: int = 1024
    #: ... and of those, circuits from or to one peer.
    max_circuits_per_peer: int = 16
    #: Hop streams (requests being read, stop handshakes under way) open at once ...
    max_pending_hops: int = 256
    #: ... and of those, streams of one peer.
    max_pending_hops_per_peer: int = 16
    #: Seconds a client has to send its hop request, and the target to answer the stop
    #: handshake.
    handshake_timeout: float = 10.0
    #: Relay addresses put in a reservation (our listen addresses, first ones).
    max_reservation_addrs: int = 16

    def __post_init__(self) -> None:
        for name in ("max_reservations", "max_reservations_per_peer",
                     "max_reservations_per_ip", "circuit_data", "max_circuits",
                     "max_circuits_per_peer", "max_pending_hops",
                     "max_pending_hops_per_peer", "max_reservation_addrs"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"{name} must be an int, not {type(value).__name__}")
            if value < 0:
                raise ValueError(f"{name} must not be negative")
        for name in ("reservation_ttl", "handshake_timeout"):
            seconds = check_timeout(getattr(self, name), name)
            if seconds is None or seconds == 0:
                raise ValueError(f"{name} must be a positive, finite number of seconds")
            object.__setattr__(self, name, seconds)
        duration = check_timeout(self.circuit_duration, "circuit_duration")
        object.__setattr__(self, "circuit_duration", duration or 0.0)
