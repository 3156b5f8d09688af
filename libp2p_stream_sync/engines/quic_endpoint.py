"""The server side of one UDP socket: datagrams to QUIC connections, sans-IO.

:class:`QuicEndpoint` routes each datagram by its *destination connection id* (not by
address, so a peer that changes address or connection id keeps its connection), and
makes a new :class:`.quic.QuicMuxer` only for a full-size (>= 1200 bytes) Initial of
QUIC v1. Anything else is dropped, except a long-header packet of another version,
answered with Version Negotiation (stateless, never larger than what came in).

Bounds on what unauthenticated senders can make us hold (a connection is *half-open*
until the peer's libp2p certificate was verified):

* ``max_half_open_per_host`` half-open connections per source IP, ``max_half_open``
  in all, each given up after ``handshake_timeout`` seconds;
* ``max_connections`` connections in all;
* an Initial that does not decrypt leaves no state at all.

Connections we dial (:meth:`QuicEndpoint.connect`) share the socket and its routing
table (as go-libp2p dials from its listening socket); ``accept=False`` makes an endpoint
that only dials.

With ``retry=True`` the endpoint first answers an Initial with a stateless Retry and
makes the connection only when the client echoes the token, proving its address.
"""

from __future__ import annotations

import os
from collections import Counter
from typing import Any, Iterable

from ..identity import Keypair
from .quic import NetworkAddress, QuicIdentity, QuicMuxer, require_aioquic

try:
    from aioquic.buffer import Buffer
    from aioquic.quic.packet import (
        QuicPacketType, QuicProtocolVersion, encode_quic_retry,
        encode_quic_version_negotiation, pull_quic_header,
    )
    from aioquic.quic.retry import QuicRetryTokenHandler
except ImportError:  # the optional extra is not installed; QuicEndpoint() says so
    pass

__all__ = ["QuicEndpoint", "SUPPORTED_VERSIONS", "MIN_INITIAL_SIZE"]

#: QUIC v1 (RFC 9000) only, as /quic-v1 says.
SUPPORTED_VERSIONS = [0x00000001]
#: A client's Initial must fill a datagram of at least this size (RFC 9000 14.1).
MIN_INITIAL_SIZE = 1200
#: aioquic's connection ids are 8 bytes long (its default, which we keep).
CID_LENGTH = 8


class QuicEndpoint:
    """Many QUIC connections behind one UDP socket; no I/O of its own.

    ``connection_kwargs`` go to every :meth:`QuicMuxer.server` (windows, timeouts).
    """

    def __init__(self, keypair: Keypair, *, identity: QuicIdentity | None = None,
                 retry: bool = False, max_connections: int = 1024,
                 max_half_open: int = 256, max_half_open_per_host: int = 16,
                 handshake_timeout: float = 10.0,
                 connection_kwargs: dict[str, Any] | None = None,
                 accept: bool = True) -> None:
        """``accept=False``: make no connection for a peer's Initial (dial only)."""
        require_aioquic()
        self.accept = accept
        self.keypair = keypair
        self.identity = identity or QuicIdentity(keypair)
        self._retry = QuicRetryTokenHandler() if retry else None
        self.max_connections = max_connections
        self.max_half_open = max_half_open
        self.max_half_open_per_host = max_half_open_per_host
        self.handshake_timeout = handshake_timeout
        self._kwargs = dict(connection_kwargs or {})
        self._routes: dict[bytes, QuicMuxer] = {}
        self._cids: dict[QuicMuxer, set[bytes]] = {}
        self._half_open: dict[QuicMuxer, tuple[str, float]] = {}  # host, deadline
        self._per_host: Counter[str] = Counter()
        self._out: list[tuple[bytes, NetworkAddress]] = []
        #: Datagrams dropped, by reason; stateless replies sent, by kind (stats).
        self.dropped: Counter[str] = Counter()
        self.stateless_replies: Counter[str] = Counter()

    @property
    def connections(self) -> list[QuicMuxer]:
        """The live connections (half-open ones included)."""
        return list(self._cids)

    @property
    def half_open(self) -> int:
        """Connections whose peer is not verified yet."""
        return len(self._half_open)

    def connect(self, addr: NetworkAddress, now: float, **kwargs: Any) -> QuicMuxer:
        """A new client connection to ``addr`` from this endpoint's socket (routed
        here; not half-open: we chose to dial it). ``kwargs`` as for
        :meth:`QuicMuxer.client`, over ``connection_kwargs``."""
        if len(self._cids) >= self.max_connections:
            raise ConnectionRefusedError(f"{self.max_connections} QUIC connections open")
        conn = QuicMuxer.client(self.keypair, addr, now, identity=self.identity,
                                **{**self._kwargs, **kwargs})
        self._cids[conn] = set()
        self._route(conn, [conn.host_cid])
        return conn

    def datagrams_of(self, conn: QuicMuxer, now: float) -> list[tuple[bytes, NetworkAddress]]:
        """What one connection has to send now (its routes followed, and the
        connection forgotten once terminated)."""
        out = conn.datagrams_to_send(now)
        self._after_call(conn)
        if conn.is_terminated:
            self._forget(conn)
        return out

    def discard(self, conn: QuicMuxer) -> None:
        """Stop routing to ``conn`` now (its last datagrams were taken)."""
        self._forget(conn)

    def stateless_to_send(self) -> list[tuple[bytes, NetworkAddress]]:
        """The stateless replies (version negotiation, retry) queued so far."""
        out, self._out = self._out, []
        return out

    # ------------------------------------------------------------------ datagrams

    def receive_datagram(self, data: bytes, addr: NetworkAddress,
                         now: float) -> list[tuple[QuicMuxer, list]]:
        """Route one datagram; return ``[(connection, events)]`` (empty when dropped).

        A connection seen here for the first time is new (its first events are
        about the handshake). Never raises for what a peer sends.
        """
        data = bytes(data)
        foreign = _foreign_long_header(data)
        if foreign is not None:
            self._negotiate_version(*foreign, data, addr)
            return []
        try:
            header = pull_quic_header(Buffer(data=data), host_cid_length=CID_LENGTH)
        except ValueError:
            self.dropped["unparsable"] += 1
            return []
        conn = self._routes.get(header.destination_cid)
        if conn is None:
            accepted = self._maybe_accept(header, data, addr, now)
            if accepted is None:
                return []
            conn, events = accepted
        else:
            events = conn.receive_datagram(data, addr, now)
        self._after_call(conn)
        return [(conn, events)]

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, NetworkAddress]]:
        """Every datagram to send now (stateless replies and all connections')."""
        out, self._out = self._out, []
        for conn in list(self._cids):
            out += conn.datagrams_to_send(now)
            self._after_call(conn)
            if conn.is_terminated:  # its last words (CONNECTION_CLOSE) are in ``out``
                self._forget(conn)
        return out

    def get_timer(self) -> float | None:
        """The earliest timer of all connections and handshake deadlines."""
        timers = [t for t in (c.get_timer() for c in self._cids) if t is not None]
        timers += [deadline for _host, deadline in self._half_open.values()]
        return min(timers) if timers else None

    def handle_timer(self, now: float) -> list[tuple[QuicMuxer, list]]:
        """Fire due timers; give up on handshakes past ``handshake_timeout``."""
        results = []
        for conn in list(self._cids):
            events: list = []
            half_open = self._half_open.get(conn)
            if half_open is not None and now >= half_open[1]:
                conn.close(reason="handshake timeout")
                self._forget(conn)  # nothing verified: no need to drain it
                continue
            timer = conn.get_timer()
            if timer is not None and now >= timer:
                events = conn.handle_timer(now)
            self._after_call(conn)
            if events:
                results.append((conn, events))
        return results

    # ------------------------------------------------------------------ new peers

    def _maybe_accept(self, header: Any, data: bytes, addr: NetworkAddress,
                      now: float) -> tuple[QuicMuxer, list] | None:
        """A new connection (fed ``data``) and its events for a datagram no route
        knows, or None (dropped or answered statelessly)."""
        if header.version is None:
            self.dropped["unknown connection id"] += 1
            return None
        if not self.accept:
            self.dropped["not accepting"] += 1
            return None
        if (header.version not in SUPPORTED_VERSIONS
                or header.packet_type != QuicPacketType.INITIAL
                or len(data) < MIN_INITIAL_SIZE):
            self.dropped["not an initial"] += 1
            return None
        host = str(addr[0])
        if (len(self._cids) >= self.max_connections
                or len(self._half_open) >= self.max_half_open
                or self._per_host[host] >= self.max_half_open_per_host):
            self.dropped["over limits"] += 1
            return None
        ids = self._retry_ids(header, addr, now)
        if ids is None:
            return None
        conn = QuicMuxer.server(self.keypair, now, identity=self.identity,
                                original_destination_connection_id=ids[0],
                                retry_source_connection_id=ids[1], **self._kwargs)
        events = conn.receive_datagram(data, addr, now)
        first_flight = conn.datagrams_to_send(now)
        if not first_flight:  # it did not decrypt: keep nothing
            self.dropped["bad initial"] += 1
            return None
        self._out += first_flight
        self._cids[conn] = set()
        self._half_open[conn] = (host, now + self.handshake_timeout)
        self._per_host[host] += 1
        self._route(conn, [header.destination_cid, conn.host_cid])
        return conn, events

    def _negotiate_version(self, version: int, dcid: bytes | None, scid: bytes | None,
                           data: bytes, addr: NetworkAddress) -> None:
        if (version == QuicProtocolVersion.NEGOTIATION or len(data) < MIN_INITIAL_SIZE
                or dcid is None or scid is None):
            self.dropped["version"] += 1  # never answer a VN (reflection loops)
            return
        self.stateless_replies["version negotiation"] += 1
        self._out.append((encode_quic_version_negotiation(
            source_cid=dcid, destination_cid=scid,
            supported_versions=SUPPORTED_VERSIONS), addr))

    def _retry_ids(self, header: Any, addr: NetworkAddress,
                   now: float) -> tuple[bytes, bytes | None] | None:
        """``(original destination cid, retry source cid)`` for the new connection;
        None when a Retry was sent instead or the token is invalid (dropped)."""
        if self._retry is None:
            return header.destination_cid, None
        if not header.token:
            source_cid = _random_cid()
            token = self._retry.create_token(
                address=addr, original_destination_connection_id=header.destination_cid,
                retry_source_connection_id=source_cid, now=now)
            self.stateless_replies["retry"] += 1
            self._out.append((encode_quic_retry(
                version=header.version, source_cid=source_cid,
                destination_cid=header.source_cid,
                original_destination_cid=header.destination_cid, retry_token=token), addr))
            return None
        try:
            original = self._retry.validate_token(
                address=addr, destination_cid=header.destination_cid, token=header.token,
                now=now)
        except ValueError:
            self.dropped["invalid token"] += 1
            return None
        return original, header.destination_cid

    # ------------------------------------------------------------------ bookkeeping

    def _after_call(self, conn: QuicMuxer) -> None:
        """Follow a connection's state: routes, half-open accounting, removal."""
        if conn not in self._cids:
            return
        for cid, issued in conn.take_connection_id_changes():
            if issued:
                self._route(conn, [cid])
            elif self._routes.get(cid) is conn:
                del self._routes[cid]
                self._cids[conn].discard(cid)
        if conn.is_verified or conn.is_terminated:
            self._count_done(conn)

    def _route(self, conn: QuicMuxer, cids: Iterable[bytes]) -> None:
        for cid in cids:
            self._routes[cid] = conn
            self._cids[conn].add(cid)

    def _count_done(self, conn: QuicMuxer) -> None:
        entry = self._half_open.pop(conn, None)
        if entry is not None:
            self._per_host[entry[0]] -= 1
            if not self._per_host[entry[0]]:
                del self._per_host[entry[0]]

    def _forget(self, conn: QuicMuxer) -> None:
        self._count_done(conn)
        for cid in self._cids.pop(conn, ()):
            if self._routes.get(cid) is conn:
                del self._routes[cid]


def _foreign_long_header(data: bytes) -> tuple[int, bytes | None, bytes | None] | None:
    """``(version, destination cid, source cid)`` of a long-header packet of a version
    we do not speak (read by the version-independent rules of RFC 8999), else None."""
    if len(data) < 7 or not data[0] & 0x80:
        return None
    version = int.from_bytes(data[1:5], "big")
    if version in SUPPORTED_VERSIONS:
        return None
    dcid_end = 6 + data[5]
    if data[5] > 20 or dcid_end >= len(data) or data[dcid_end] > 20 \
            or dcid_end + 1 + data[dcid_end] > len(data):
        return version, None, None  # malformed: dropped
    return version, data[6:dcid_end], data[dcid_end + 1:dcid_end + 1 + data[dcid_end]]


def _random_cid() -> bytes:
    return os.urandom(CID_LENGTH)
