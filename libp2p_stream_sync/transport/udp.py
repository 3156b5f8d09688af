"""One UDP socket on the reactor carrying QUIC connections (:class:`QuicSocket`).

Reading: up to ``RECV_PER_TURN`` datagrams per readable event (so one busy socket
cannot starve the reactor's other sockets), each routed by its destination
connection id (``engines.quic_endpoint.QuicEndpoint``) to the
:class:`~..quic_connection.QuicConnection` of its QUIC connection. Writing: each
connection hands its datagrams to :meth:`QuicSocket.send`; when the kernel's send
buffer is full, at most ``MAX_QUEUED`` datagrams wait for the socket to become
writable and the rest are dropped (QUIC's loss recovery resends what matters, as
after a loss on the path). Python has no ``sendmmsg``: one ``sendto`` per datagram.
"""

from __future__ import annotations

import collections
import ipaddress
import logging
import selectors
import socket
import time
from typing import TYPE_CHECKING, Any, Callable

from ..engines.muxer_events import DataReceived
from ..engines.quic_endpoint import QuicEndpoint
from ..quic_connection import QuicConnection, quic_settings

if TYPE_CHECKING:
    from ..engines.quic import QuicMuxer
    from ..interfaces import ConnectionOwner

log = logging.getLogger("libp2p_stream_sync.node")

#: Datagrams read per readable event before other sockets get their turn.
RECV_PER_TURN = 64
#: Datagrams kept while the kernel refuses more (EAGAIN); more are dropped.
MAX_QUEUED = 1024
#: Kernel socket buffers we ask for (the kernel caps them at net.core.[rw]mem_max).
SOCKET_BUFFER = 4 * 1024 * 1024
_MAX_DATAGRAM = 65536

OnInbound = Callable[["QuicSocket", "QuicMuxer", tuple], "QuicConnection | None"]


def bind_udp(family: int, sockaddr: tuple, label: Any) -> socket.socket:
    """A bound, non-blocking UDP socket (IPv6 sockets are IPv6-only); ``OSError``
    naming ``label`` when it cannot be bound."""
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            try:
                sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER)
            except OSError:
                pass  # the default buffer will do
        sock.bind(sockaddr)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        if exc.errno is None:
            raise OSError(f"cannot listen on {label}: {exc}") from exc
        raise type(exc)(exc.errno, f"cannot listen on {label}: {exc.strerror}") from exc
    return sock


def coalesce(events: list) -> list:
    """``events`` with runs of ``DataReceived`` of one stream joined into one (what a
    batch of datagrams brought a stream is fed, and wakes its reader, once)."""
    if len(events) < 2:
        return events
    out: list = []
    run: list = []
    for event in events:
        if type(event) is DataReceived:
            if run and run[0].stream_id != event.stream_id:
                out.append(_joined(run))
                run = []
            run.append(event)
            continue
        if run:
            out.append(_joined(run))
            run = []
        out.append(event)
    if run:
        out.append(_joined(run))
    return out


def _joined(run: list) -> Any:
    if len(run) == 1:
        return run[0]
    return DataReceived(run[0].stream_id, b"".join(event.data for event in run))


class QuicSocket:
    """A UDP socket, its :class:`QuicEndpoint` and its connections (reactor thread,
    except the constructor). ``accept=False``: a dial-only socket."""

    def __init__(self, sock: socket.socket, owner: "ConnectionOwner", transport: Any, *,
                 accept: bool) -> None:
        self.sock = sock
        self.family = sock.family
        #: The bound address (the real port for port 0).
        self.sockname: tuple = sock.getsockname()[:2]
        self._owner = owner
        self._reactor = owner.reactor
        self.transport = transport
        limits = owner.limits
        self.endpoint = QuicEndpoint(
            owner.keypair, identity=transport.identity, accept=accept,
            max_connections=limits.max_inbound_connections
            + limits.max_outbound_connections,
            max_half_open=limits.quic_max_half_open,
            max_half_open_per_host=limits.quic_max_half_open_per_host,
            handshake_timeout=limits.handshake_timeout,
            connection_kwargs=quic_settings(limits))
        self._conns: dict[Any, QuicConnection] = {}
        self._on_inbound: OnInbound | None = None
        self._queue: collections.deque[tuple[bytes, tuple]] = collections.deque()
        self._buffer = bytearray(_MAX_DATAGRAM)
        self._registered = False
        self._closed = False
        #: No new connections; the socket closes once its connections are gone.
        self.closing = False
        #: Datagrams received / sent / dropped because the send queue was full.
        self.stats = collections.Counter[str]()

    def __repr__(self) -> str:
        return f"<QuicSocket {self.sockname}>"

    def can_reach(self, host: str) -> bool:
        """Whether a dial to ``host`` can leave from this socket's address (a
        loopback-bound socket reaches only loopback addresses, and vice versa)."""
        try:
            mine = ipaddress.ip_address(self.sockname[0])
            theirs = ipaddress.ip_address(host)
        except ValueError:
            return False
        return mine.is_unspecified or mine.is_loopback == theirs.is_loopback

    def start(self, on_inbound: OnInbound | None) -> None:
        """Reactor: read the socket; ``on_inbound(socket, muxer, addr)`` makes the
        connection for a new inbound QUIC connection (None refuses it)."""
        self._on_inbound = on_inbound
        self._set_interest(False)

    # -- input -----------------------------------------------------------------------
    def on_readable(self) -> None:
        """The reactor: datagrams arrived (at most ``RECV_PER_TURN`` this turn)."""
        buffer, endpoint = self._buffer, self.endpoint
        view = memoryview(buffer)
        now = time.monotonic()
        batch: dict[QuicConnection, list] = {}
        for _ in range(RECV_PER_TURN):
            try:
                n, addr = self.sock.recvfrom_into(buffer)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:  # e.g. an ICMP error reported on the socket
                log.debug("%r: recvfrom failed: %s", self, exc)
                continue
            self.stats["received"] += 1
            addr = addr[:2]
            data = bytes(view[:n])  # the one copy the engines keep
            for muxer, events in endpoint.receive_datagram(data, addr, now):
                conn = self._conns.get(muxer)
                if conn is None:
                    conn = self._accept(muxer, addr, now)
                    if conn is None:
                        continue
                batch.setdefault(conn, []).extend(events)
        for conn, events in batch.items():  # once per turn: one wake-up per stream
            conn.muxer_events(coalesce(events))
        replies = endpoint.stateless_to_send()
        if replies:
            self.send(replies)

    def _accept(self, muxer: "QuicMuxer", addr: tuple, now: float) -> QuicConnection | None:
        conn = None
        if self._on_inbound is not None and not self.closing:
            conn = self._on_inbound(self, muxer, addr)
        if conn is None:
            muxer.close(reason="refused")
            self.send(self.endpoint.datagrams_of(muxer, now))
            self.endpoint.discard(muxer)
            return None
        self._conns[muxer] = conn
        return conn

    # -- output ----------------------------------------------------------------------
    def send(self, datagrams: list[tuple[bytes, tuple]]) -> None:
        """Send datagrams now; those the kernel refuses wait (up to ``MAX_QUEUED``)."""
        if self._closed:
            return
        if self._queue:
            self._enqueue(datagrams, 0)
            return
        sendto = self.sock.sendto
        for i, (data, addr) in enumerate(datagrams):
            try:
                sendto(data, addr)
            except (BlockingIOError, InterruptedError):
                self._enqueue(datagrams, i)
                self._set_interest(True)
                return
            except OSError as exc:  # unreachable and the like: a lost datagram
                log.debug("%r: sendto %s failed: %s", self, addr, exc)
        self.stats["sent"] += len(datagrams)

    def _enqueue(self, datagrams: list[tuple[bytes, tuple]], start: int) -> None:
        room = MAX_QUEUED - len(self._queue)
        rest = datagrams[start:]
        self._queue.extend(rest[:max(0, room)])
        if len(rest) > room:
            self.stats["dropped"] += len(rest) - max(0, room)

    @property
    def backlogged(self) -> bool:
        """Datagrams wait for the kernel: connections should not produce more."""
        return bool(self._queue)

    def on_writable(self) -> None:
        """The reactor: the kernel takes datagrams again."""
        queue = self._queue
        while queue:
            data, addr = queue[0]
            try:
                self.sock.sendto(data, addr)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.debug("%r: sendto %s failed: %s", self, addr, exc)
            queue.popleft()
            self.stats["sent"] += 1
        self._set_interest(False)
        for conn in list(self._conns.values()):
            self._reactor.mark_dirty(conn)  # they held back while we were full

    def _set_interest(self, write: bool) -> None:
        if self._closed:
            return
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if write else 0)
        if self._registered:
            self._reactor.modify(self.sock, events, self)
        else:
            self._reactor.register(self.sock, events, self)
            self._registered = True

    # -- connections -----------------------------------------------------------------
    def connect(self, sockaddr: tuple, expected: Any, on_ready: Callable) -> QuicConnection:
        """Reactor: a new client connection from this socket (not started)."""
        if self.closing:
            raise ConnectionAbortedError("the QUIC socket is closing")
        muxer = self.endpoint.connect(sockaddr, time.monotonic(), expected_peer=expected)
        conn = QuicConnection(self._owner, self, muxer, initiator=True,
                              remote_addr=tuple(sockaddr), transport=self.transport,
                              expected_peer=expected, on_ready=on_ready)
        self._conns[muxer] = conn
        return conn

    def datagrams_of(self, muxer: "QuicMuxer", now: float) -> list[tuple[bytes, tuple]]:
        """What ``muxer`` has to send now (the endpoint follows its connection ids)."""
        return self.endpoint.datagrams_of(muxer, now)

    def forget(self, conn: QuicConnection) -> None:
        """``conn`` is closed: route nothing more to it."""
        if self._conns.pop(conn.muxer, None) is not None:
            self.endpoint.discard(conn.muxer)
        if self.closing and not self._conns:
            self._close_now()

    @property
    def connection_count(self) -> int:
        """Connections on this socket (half-open ones included)."""
        return len(self._conns)

    def close(self) -> None:
        """Reactor: accept no more; close the socket once its connections are gone."""
        self.closing = True
        self.endpoint.accept = False
        if not self._conns:
            self._close_now()

    def _close_now(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._registered:
            self._reactor.unregister(self.sock)
        self.sock.close()
