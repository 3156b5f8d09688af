"""Circuit relay v2, the relay's side: the hop protocol server and the bridge.

``Node(relay_service=RelayLimits())`` serves ``/libp2p/circuit/relay/0.2.0/hop`` on the
reactor (no thread per request or circuit):

* ``RESERVE``: a reservation (``limits.RelayLimits`` bounds them; one per peer, a
  refresh replaces it) with our addresses, a signed voucher and the circuit limit;
  the peer's connection is kept open (``Connection.keep_alive``) while it lasts.
* ``CONNECT``: the target must hold a reservation and a direct connection; we open a
  stop stream to it, and on its OK answer the initiator and :class:`Bridge` the two
  streams byte for byte until both ends finish. Beyond ``circuit_data`` bytes in one
  direction or ``circuit_duration`` seconds both streams are reset.

Requests over a relayed connection are refused (``PERMISSION_DENIED``), as go does.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, Callable, Protocol

from multiaddr import Multiaddr

from ..codec.circuit import (HOP_PROTOCOL, STOP_PROTOCOL, HopMessage, HopType, Limit, Peer,
                             Reservation, Status, StopMessage, StopType)
from ..engines.relay_state import BoundedCounts, Reservations
from ..errors import DecodeError
from ..identity import PeerId
from ..identity.envelope import seal_voucher
from ..limits import RelayLimits
from ..logthrottle import LogThrottle
from ..transport.circuit import is_circuit_multiaddr
from .relay_io import ReadOneMessage, send, send_and_close

if TYPE_CHECKING:
    from ..connection import Connection
    from ..stream import Stream

log = logging.getLogger(__name__)

#: Bytes a bridge moves per read; it stops reading one side while the other side's
#: stream holds :data:`BRIDGE_HIGH_WATER` unsent bytes.
BRIDGE_CHUNK = 64 * 1024
BRIDGE_HIGH_WATER = 256 * 1024
#: How often a paused bridge looks whether the slow side drained.
BRIDGE_POLL_INTERVAL = 0.005
#: Longest pause between sweeps of ended reservations.
SWEEP_INTERVAL = 60.0


class RelayHost(Protocol):
    """What the hop server needs of its node (public ``Node`` methods)."""

    keypair: Any
    peer_id: PeerId

    @property
    def reactor(self) -> Any: ...

    @property
    def closed(self) -> bool: ...

    def direct_listen_addrs(self) -> list[Multiaddr]: ...

    def serve_on_reactor(self, protocol: str,
                         handler: Callable[["Connection", "Stream"], None]) -> None: ...

    def usable_connection(self, peer_id: PeerId) -> "Connection | None": ...

    def connections(self, peer: PeerId | None = None) -> list["Connection"]: ...


def _remote_ip(conn: "Connection") -> str | None:
    addr = conn.remote_addr
    if isinstance(addr, tuple) and addr and isinstance(addr[0], str) and not conn.relayed:
        return addr[0]
    return None


class HopServer:
    """Serves the hop protocol for ``host`` within ``limits`` (module docstring)."""

    def __init__(self, host: RelayHost, limits: RelayLimits) -> None:
        """Registers the hop protocol on ``host`` (reactor-side handler)."""
        self._host = host
        self.limits = limits
        self._reservations = Reservations(limits.reservation_ttl, limits.max_reservations,
                                          limits.max_reservations_per_peer,
                                          limits.max_reservations_per_ip)
        self._circuits = BoundedCounts(limits.max_circuits, limits.max_circuits_per_peer)
        self._pending = BoundedCounts(limits.max_pending_hops,
                                      limits.max_pending_hops_per_peer)
        self._refusals = LogThrottle()
        self._sweep_timer: Any = None
        host.serve_on_reactor(HOP_PROTOCOL, self._on_hop)

    # -- monitoring (approximate from other threads) ----------------------------------------
    def counts(self) -> dict[str, int]:
        """``reservations``, ``circuits`` and ``pending`` hop streams right now."""
        return {"reservations": len(self._reservations), "circuits": self._circuits.total,
                "pending": self._pending.total}

    def reserved_peers(self) -> list[PeerId]:
        """Peers holding a reservation (ended ones until the next sweep)."""
        return list(self._reservations.peers())

    # -- requests ------------------------------------------------------------------------
    def _on_hop(self, conn: "Connection", stream: "Stream") -> None:
        peer = stream.peer_id
        if not self._pending.admit(peer):
            if self._refusals.ready(("pending", peer)):
                log.warning("relay: resetting a hop stream of %s: %d of its hop streams "
                            "pending, %d in all", peer, self._pending.count(peer),
                            self._pending.total)
            stream.reset()
            return

        def read(body: bytes | None, rest: bytes, error: BaseException | None) -> None:
            self._request(conn, stream, body, rest, error)

        ReadOneMessage(conn, stream, self._host.reactor.call_later,
                       self.limits.handshake_timeout, read)

    def _request(self, conn: "Connection", stream: "Stream", body: bytes | None,
                 rest: bytes, error: BaseException | None) -> None:
        peer = stream.peer_id
        if error is not None or body is None:
            self._pending.release(peer)
            if isinstance(error, DecodeError):
                self._answer(stream, Status.MALFORMED_MESSAGE)
            else:
                log.debug("relay: hop request of %s failed: %s", peer, error)
                stream.reset()
            return
        try:
            request = HopMessage.decode(body)
        except DecodeError as exc:
            log.debug("relay: malformed hop request from %s: %s", peer, exc)
            self._pending.release(peer)
            self._answer(stream, Status.MALFORMED_MESSAGE)
            return
        if request.type == HopType.RESERVE:
            self._pending.release(peer)
            self._reserve(conn, stream)
        elif request.type == HopType.CONNECT:
            self._connect(conn, stream, request, rest)
        else:
            self._pending.release(peer)
            self._answer(stream, Status.UNEXPECTED_MESSAGE)

    def _answer(self, stream: "Stream", status: Status) -> None:
        send_and_close(stream, HopMessage(HopType.STATUS, status=status))

    def _limit(self) -> Limit | None:
        duration = int(self.limits.circuit_duration)
        data = self.limits.circuit_data
        return Limit(duration, data) if duration or data else None

    # -- RESERVE ---------------------------------------------------------------------------
    def _reserve(self, conn: "Connection", stream: "Stream") -> None:
        peer = stream.peer_id
        if conn.relayed:
            self._answer(stream, Status.PERMISSION_DENIED)
            return
        if self._reservations.reserve(peer, _remote_ip(conn), time.monotonic()) is None:
            if self._refusals.ready(("reserve", peer)):
                log.info("relay: refusing a reservation of %s (%d held)", peer,
                         len(self._reservations))
            self._answer(stream, Status.RESERVATION_REFUSED)
            return
        expire = int(time.time() + self.limits.reservation_ttl)
        conn.keep_alive = True
        self._arm_sweep()
        reservation = Reservation(expire, tuple(self._our_addrs()),
                                  seal_voucher(self._host.keypair, peer, expire))
        send_and_close(stream, HopMessage(HopType.STATUS, reservation=reservation,
                                          limit=self._limit(), status=Status.OK))
        log.debug("relay: reserved a slot for %s until %d", peer, expire)

    def _our_addrs(self) -> list[bytes]:
        me = f"/p2p/{self._host.peer_id}"
        addrs = [ma for ma in self._host.direct_listen_addrs()
                 if not is_circuit_multiaddr(ma)]
        return [Multiaddr(f"{ma}{me}").to_bytes()
                for ma in addrs[:self.limits.max_reservation_addrs]]

    def _arm_sweep(self) -> None:
        if self._sweep_timer is None:
            delay = min(SWEEP_INTERVAL, self.limits.reservation_ttl)
            self._sweep_timer = self._host.reactor.call_later(delay, self._sweep)

    def _sweep(self) -> None:
        """Reactor: drop ended reservations and those whose peer left."""
        self._sweep_timer = None
        gone = self._reservations.expire(time.monotonic())
        for peer in self._reservations.peers():
            if self._host.usable_connection(peer) is None:
                self._reservations.drop(peer)
                gone.append(peer)
        for peer in gone:
            for conn in self._host.connections(peer):
                conn.keep_alive = False
        if len(self._reservations) and not self._host.closed:
            self._arm_sweep()

    # -- CONNECT ---------------------------------------------------------------------------
    def _connect(self, conn: "Connection", stream: "Stream", request: HopMessage,
                 rest: bytes) -> None:
        src = stream.peer_id

        def refuse(status: Status) -> None:
            self._pending.release(src)
            self._answer(stream, status)

        if conn.relayed:
            refuse(Status.PERMISSION_DENIED)
            return
        try:
            if request.peer is None:
                raise DecodeError("CONNECT without a peer")
            dest = PeerId.from_bytes(request.peer.id)
        except (DecodeError, ValueError):
            refuse(Status.MALFORMED_MESSAGE)
            return
        dest_conn = self._host.usable_connection(dest)
        if dest_conn is not None and dest_conn.relayed:
            dest_conn = None
        if dest_conn is None or not self._reservations.holds(dest, time.monotonic()):
            if dest_conn is None:
                self._reservations.drop(dest)
            refuse(Status.NO_RESERVATION)
            return
        if not self._circuits.admit(src, dest):
            if self._refusals.ready(("circuits", src)):
                log.info("relay: refusing a circuit %s -> %s: circuit limit", src, dest)
            refuse(Status.RESOURCE_LIMIT_EXCEEDED)
            return
        _StopDial(self, conn, stream, dest_conn, rest).start()

    def circuit_started(self, src: PeerId) -> None:
        """A circuit's handshake is over (the hop stream is no longer pending)."""
        self._pending.release(src)

    def circuit_ended(self, src: PeerId, dest: PeerId) -> None:
        """A circuit (admitted by ``_connect``) is gone."""
        self._circuits.release(src, dest)


class _StopDial:
    """Reactor: the stop handshake with a circuit's target, then the bridge."""

    def __init__(self, server: HopServer, src_conn: "Connection", src: "Stream",
                 dest_conn: "Connection", early: bytes) -> None:
        self.server = server
        self.src_conn = src_conn
        self.src = src
        self.dest_conn = dest_conn
        self.early = early
        self.dest_id: PeerId = dest_conn.remote_peer_id  # type: ignore[assignment]
        self.stop: "Stream | None" = None
        self.opening: Future | None = None
        self.deadline = 0.0
        self.timer: Any = None
        self.failed = False

    def start(self) -> None:
        """Open the stop stream; the whole handshake gets ``handshake_timeout``."""
        timeout = self.server.limits.handshake_timeout
        self.deadline = time.monotonic() + timeout
        self.timer = self.server._host.reactor.call_later(timeout, self._open_timed_out)
        future = self.opening = Future()
        future.add_done_callback(self._opened)
        self.dest_conn.open_stream(STOP_PROTOCOL, future)

    def _open_timed_out(self) -> None:
        """The target did not even agree on the stop protocol in time."""
        self.timer = None
        if self.opening is not None and self.opening.cancel():
            self.dest_conn.abandon_open(self.opening)
        self._fail("the target did not open the stop stream in time")

    def _fail(self, why: Any) -> None:
        if self.failed:
            return
        self.failed = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        log.debug("relay: circuit %s -> %s failed: %s", self.src.peer_id, self.dest_id, why)
        if self.stop is not None:
            self.stop.reset()
        self.server.circuit_started(self.src.peer_id)
        self.server.circuit_ended(self.src.peer_id, self.dest_id)
        send_and_close(self.src, HopMessage(HopType.STATUS,
                                            status=Status.CONNECTION_FAILED))

    def _opened(self, future: Future) -> None:
        if future.cancelled():
            return  # timed out: _open_timed_out answered
        error = future.exception()
        if error is not None:
            self._fail(error)
            return
        stop = future.result()
        if self.failed:
            stop.reset()
            return
        self.stop = stop
        self.timer.cancel()
        self.timer = None
        request = StopMessage(StopType.CONNECT, peer=Peer(self.src.peer_id.to_bytes()),
                              limit=self.server._limit())
        if not send(stop, request):
            self._fail("the stop stream failed")
            return
        ReadOneMessage(self.dest_conn, stop, self.server._host.reactor.call_later,
                       max(0.0, self.deadline - time.monotonic()), self._answered)

    def _answered(self, body: bytes | None, rest: bytes, error: BaseException | None
                  ) -> None:
        if error is not None or body is None:
            self._fail(error)
            return
        try:
            answer = StopMessage.decode(body)
        except DecodeError as exc:
            self._fail(exc)
            return
        if answer.type != StopType.STATUS or answer.status != Status.OK:
            self._fail(f"the target answered {answer.type.name} {answer.status}")
            return
        assert self.stop is not None
        server = self.server
        server.circuit_started(self.src.peer_id)
        if not send(self.src, HopMessage(HopType.STATUS, limit=server._limit(),
                                         status=Status.OK)):
            self.stop.reset()
            server.circuit_ended(self.src.peer_id, self.dest_id)
            return
        src_id, dest_id = self.src.peer_id, self.dest_id
        log.debug("relay: relaying %s -> %s", src_id, dest_id)
        Bridge(server._host.reactor.call_later,
               (self.src_conn, self.src, self.early), (self.dest_conn, self.stop, rest),
               server.limits.circuit_data, server.limits.circuit_duration,
               lambda: server.circuit_ended(src_id, dest_id)).start()


class _Side:
    """One direction of a bridge: bytes read from ``src`` are written to ``dst``."""

    __slots__ = ("src", "dst", "moved", "ended", "early")

    def __init__(self, src: "Stream", dst: "Stream", early: bytes) -> None:
        self.src = src
        self.dst = dst
        self.moved = 0
        self.ended = False
        self.early = early


class Bridge:
    """Reactor: joins two streams byte for byte, with back-pressure (it stops reading
    a side while the other holds :data:`BRIDGE_HIGH_WATER` unsent bytes), a data limit
    per direction and a time limit (0: none; beyond either both streams are reset).
    A FIN is passed on; once both directions ended, both streams are closed."""

    def __init__(self, call_later: Callable[[float, Callable[[], None]], Any],
                 a: "tuple[Connection, Stream, bytes]", b: "tuple[Connection, Stream, bytes]",
                 data_limit: int, duration: float, on_done: Callable[[], None]) -> None:
        """``a``, ``b``: (connection, stream, bytes already read from that stream)."""
        self._call_later = call_later
        (self._a_conn, a_stream, a_early), (self._b_conn, b_stream, b_early) = a, b
        self._sides = (_Side(a_stream, b_stream, a_early), _Side(b_stream, a_stream, b_early))
        self._data_limit = data_limit
        self._duration = duration
        self._on_done: Callable[[], None] | None = on_done
        self._timer: Any = None
        self._poll: Any = None

    @property
    def done(self) -> bool:
        """True once the circuit is over."""
        return self._on_done is None

    def start(self) -> None:
        """Begin moving bytes (and arm the time limit)."""
        if self._duration:
            self._timer = self._call_later(self._duration, self._time_up)
        forward, backward = self._sides
        for side in self._sides:
            side.src.settimeout(0)
        self._a_conn.watch_stream(forward.src, lambda: self._move(forward))
        self._b_conn.watch_stream(backward.src, lambda: self._move(backward))
        for side in self._sides:
            if side.early:
                early, side.early = side.early, b""
                if not self._deliver(side, early):
                    return
            self._move(side)

    def _move(self, side: _Side) -> None:
        while not self.done and not side.ended:
            if side.dst.unsent_bytes >= BRIDGE_HIGH_WATER:
                self._wait_for_drain()
                return
            try:
                data = side.src.read(BRIDGE_CHUNK)
            except BlockingIOError:
                return
            except OSError as exc:
                self._end(reset=True, why=f"{side.src.peer_id}: {exc}")
                return
            if not data:
                side.ended = True
                try:
                    side.dst.close_write()
                except OSError as exc:
                    self._end(reset=True, why=str(exc))
                    return
                if all(s.ended for s in self._sides):
                    self._end(reset=False, why="both ends finished")
                return
            if not self._deliver(side, data):
                return

    def _deliver(self, side: _Side, data: bytes) -> bool:
        side.moved += len(data)
        if self._data_limit and side.moved > self._data_limit:
            self._end(reset=True, why=f"more than {self._data_limit} bytes from "
                                      f"{side.src.peer_id}")
            return False
        try:
            side.dst.write(data)
        except OSError as exc:
            self._end(reset=True, why=f"{side.dst.peer_id}: {exc}")
            return False
        return True

    def _wait_for_drain(self) -> None:
        if self._poll is None:
            self._poll = self._call_later(BRIDGE_POLL_INTERVAL, self._drain_check)

    def _drain_check(self) -> None:
        self._poll = None
        for side in self._sides:
            self._move(side)

    def _time_up(self) -> None:
        self._timer = None
        self._end(reset=True, why=f"the circuit lasted {self._duration} s")

    def _end(self, *, reset: bool, why: str) -> None:
        on_done, self._on_done = self._on_done, None
        if on_done is None:
            return
        log.debug("relay: circuit %s <-> %s over: %s", self._sides[0].src.peer_id,
                  self._sides[1].src.peer_id, why)
        for timer in (self._timer, self._poll):
            if timer is not None:
                timer.cancel()
        self._timer = self._poll = None
        for side in self._sides:
            if reset:
                side.src.reset()
            else:
                try:
                    side.src.close()
                except OSError:
                    pass
        on_done()
