"""Circuit relay v2, the client's side: reservations and the stop protocol.

* :meth:`RelayClient.reserve` asks a relay for a slot (blocking); with ``keep=True``
  (``Node.add_relay``, ``Node(relays=...)``) the node refreshes it on its own before it
  ends (a reactor timer starts one job on the node's handler pool) and reports a slot
  it could not keep (WARNING log, ``RelayClient.on_reservation_lost`` hooks). While we
  hold slots, our listen addresses (hence identify) include
  ``<relay addr>/p2p/<relay>/p2p-circuit``.
* :class:`StopHandler` serves ``/libp2p/circuit/relay/0.2.0/stop`` on the reactor: a
  relay we hold a slot on announces a circuit, we answer OK and upgrade the stream into
  an inbound connection (``transport.circuit``): the dialer is the security initiator.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable, Protocol

from multiaddr import Multiaddr

from ..codec.circuit import (HOP_PROTOCOL, STOP_PROTOCOL, HopMessage, HopType, Limit,
                             MessageReader, Status, StopMessage, StopType, frame)
from ..control import Control, PeerLike
from ..engines.relay_state import BoundedCounts
from ..errors import DecodeError, ProtocolError
from ..identity import PeerId
from ..identity.envelope import InvalidEnvelope, open_voucher
from ..logthrottle import LogThrottle
from ..timeouts import check_timeout, deadline_after, step_timeout
from ..transport.circuit import CircuitTransport, RelayRefused, new_pump
from ..transport.tcp import to_multiaddr
from .relay_io import ReadOneMessage, send, send_and_close

if TYPE_CHECKING:
    from ..connection import Connection
    from ..limits import Limits
    from ..stream import Stream

log = logging.getLogger(__name__)

#: Seconds a relay has to send its stop request once it opened the stream.
STOP_TIMEOUT = 10.0
#: A reservation is refreshed this long before it ends (a quarter of its length when
#: that is shorter), and retried every :data:`RETRY_INTERVAL` at most until it ends.
REFRESH_MARGIN = 60.0
RETRY_INTERVAL = 10.0
#: Relay addresses kept from one reservation answer.
MAX_RELAY_ADDRS = 16
#: How often a kept slot checks that its connection to the relay is still there.
CHECK_INTERVAL = 30.0


@dataclass(frozen=True)
class RelayReservation:
    """A slot we hold on a relay: until ``expire`` (UNIX seconds), the relay's
    addresses (each ending in ``/p2p/<relay>``), the circuit limit it applies (None:
    none) and its signed voucher (``identity.envelope.open_voucher`` verified it)."""

    relay: PeerId
    expire: int
    relay_addrs: tuple[Multiaddr, ...]
    limit: Limit | None = None
    voucher: bytes | None = field(default=None, repr=False)

    @property
    def circuit_addrs(self) -> list[Multiaddr]:
        """Our addresses through this relay: ``<relay addr>/p2p-circuit``."""
        return [Multiaddr(f"{addr}/p2p-circuit") for addr in self.relay_addrs]


class ClientHost(Protocol):
    """What the relay client needs of its node (public ``Node`` methods)."""

    peer_id: PeerId
    limits: "Limits"
    on_protocols_changed: list[Callable[[], None]]

    @property
    def reactor(self) -> Any: ...

    @property
    def closed(self) -> bool: ...

    def new_control(self) -> Control: ...

    def peer_for_open(self, peer: PeerLike) -> PeerId: ...

    def usable_connection(self, peer_id: PeerId) -> "Connection | None": ...

    def run_in_worker(self, fn: Callable[..., Any], *args: Any,
                      peer: PeerId | None = None) -> Any: ...

    def serve_on_reactor(self, protocol: str,
                         handler: Callable[["Connection", "Stream"], None]) -> None: ...


#: ``accept(transport, channel, remote_addr)``, reactor: upgrade an inbound relayed
#: channel as a listener's accepted socket is (``Listeners.accepted``).
AcceptChannel = Callable[[Any, Any, tuple], None]


@dataclass
class _Held:
    """A slot we hold on one relay; ``refreshing``: the node keeps it (``keep=True``)."""

    target: PeerLike
    refreshing: bool
    current: RelayReservation | None = None
    #: Reactor timers: the next refresh attempt, the end, the connection check.
    refresh: Any = None
    expiry: Any = None
    check: Any = None
    stopped: bool = False


class RelayClient:
    """Our reservations on relays and their refreshing (module docstring)."""

    def __init__(self, host: ClientHost, transport: CircuitTransport,
                 accept: AcceptChannel) -> None:
        """Serves the stop protocol on ``host`` for circuits of ``transport`` (at most
        ``Limits.max_stop_handshakes`` under way, ``..._per_relay`` per relay); the
        relayed connections go to ``accept``."""
        self._host = host
        self._lock = threading.Lock()
        self._held: dict[PeerId, _Held] = {}
        #: Called (on a worker or the reactor thread) with the relay's id when a
        #: reservation ended without a successful refresh.
        self.on_reservation_lost: list[Callable[[PeerId], None]] = []
        self.stop_handler = StopHandler(host, transport, self, accept,
                                        host.limits.max_stop_handshakes,
                                        host.limits.max_stop_handshakes_per_relay)

    # -- public API ------------------------------------------------------------------------
    def reserve(self, relay: PeerLike, timeout: float | None = 10.0, *,
                keep: bool = False) -> RelayReservation:
        """Reserve a slot on ``relay`` (a multiaddr ending in ``/p2p/<id>``, or a peer
        we know addresses of) and return it. While it lasts we accept circuits from the
        relay and advertise our address through it. ``keep``: refresh it before it
        ends, for as long as the node runs (or until :meth:`release`).

        Raises :class:`RelayRefused` (with the relay's ``status``) when refused,
        ``ValueError`` for a malformed address, :class:`OpenStreamError` /
        ``TimeoutError`` when the relay cannot be reached or does not answer within
        ``timeout``, :class:`ProtocolError` for a malformed answer or voucher.
        """
        seconds = check_timeout(timeout)
        relay_id = self._host.peer_for_open(relay)
        if relay_id == self._host.peer_id:
            raise ValueError("a node cannot reserve a slot on itself")
        self.stop_handler.serve()  # circuits may be announced right after the answer
        reservation = self._request(relay, relay_id, seconds)
        with self._lock:
            held = self._held.get(relay_id)
            if held is None or held.stopped:
                held = self._held[relay_id] = _Held(relay, keep)
            held.refreshing |= keep
        self._store(relay_id, held, reservation)
        return reservation

    def release(self, relay: "PeerId | str") -> None:
        """Give up the slot on ``relay``: no more refreshing, advertising, circuits."""
        relay_id = relay if isinstance(relay, PeerId) else PeerId.from_string(relay)
        with self._lock:
            held = self._held.pop(relay_id, None)
        if held is not None:
            self._stop(relay_id, held)
            self._addresses_changed()

    def reservations(self) -> list[RelayReservation]:
        """The slots we hold, right now."""
        with self._lock:
            return [h.current for h in self._held.values() if h.current is not None]

    def holds_reservation(self, relay: PeerId) -> bool:
        """Whether we hold a slot on ``relay`` (stop requests from others are refused)."""
        with self._lock:
            held = self._held.get(relay)
            return held is not None and held.current is not None

    def circuit_addrs(self) -> list[Multiaddr]:
        """Our addresses through the relays we hold slots on."""
        return [addr for r in self.reservations() for addr in r.circuit_addrs]

    @staticmethod
    def checked_relays(relays: Iterable[Any], parse: Callable[[Any], Any]
                       ) -> list[Multiaddr]:
        """``Node(relays=...)``, checked: dialable multiaddrs (``parse`` is the
        dialer's ``target_of``) that name their peer, else ValueError."""
        checked = []
        for relay in relays:
            ma = to_multiaddr(relay)
            target = parse(ma)
            if isinstance(target, PeerId) or target.peer_id is None:
                raise ValueError(f"relay address {ma} names no peer: "
                                 f"end it in /p2p/<relay id>")
            checked.append(ma)
        return checked

    def keep_trying_all(self, relays: Iterable[PeerLike]) -> None:
        """:meth:`keep_trying` each of ``relays``."""
        for relay in relays:
            self.keep_trying(relay)

    def keep_trying(self, relay: PeerLike, retry_after: float = 30.0) -> None:
        """Reserve on ``relay`` in the background and keep the slot; on failure try
        again every ``retry_after`` seconds while the node runs (``Node(relays=...)``)."""
        def attempt() -> None:
            if self._host.closed:
                return
            try:
                self.reserve(relay, keep=True)
            except (OSError, ValueError, ProtocolError) as exc:
                log.warning("relay %s: no reservation (%s); trying again in %.0f s",
                            relay, exc, retry_after)
                self._host.reactor.call_later(retry_after, start)

        def start() -> None:
            if not self._host.closed and self._host.run_in_worker(attempt) is None:
                self._host.reactor.call_later(retry_after, start)  # the pool is full

        self._host.reactor.call_soon(start)

    # -- the request -------------------------------------------------------------------------
    def _request(self, relay: PeerLike, relay_id: PeerId, seconds: float | None
                 ) -> RelayReservation:
        deadline = deadline_after(seconds)
        stream = self._host.new_control().open_stream(relay, HOP_PROTOCOL, timeout=seconds)
        try:
            stream.settimeout(step_timeout(deadline, "reservation"))
            stream.write(frame(HopMessage(HopType.RESERVE)))
            answer = HopMessage.decode(_read_message(stream, deadline))
        except BaseException:
            stream.reset()
            raise
        stream.close()
        if answer.type != HopType.STATUS or answer.status != Status.OK:
            status = answer.status if answer.type == HopType.STATUS else None
            raise RelayRefused(f"relay {relay_id} refused the reservation: "
                               f"{status.name if status else answer.type.name}", status)
        if answer.reservation is None or not answer.reservation.expire:
            raise ProtocolError(f"relay {relay_id} accepted without a reservation")
        held = answer.reservation
        if held.expire <= time.time():
            raise ProtocolError(f"relay {relay_id} granted a reservation already ended")
        if held.voucher is not None:
            try:
                open_voucher(held.voucher, relay=relay_id, peer=self._host.peer_id)
            except InvalidEnvelope as exc:
                raise ProtocolError(f"relay {relay_id} sent a bad voucher: {exc}") from exc
        conn = self._host.usable_connection(relay_id)
        if conn is not None:
            conn.keep_alive = True  # the slot lasts while the connection does
        return RelayReservation(relay_id, held.expire, _relay_addrs(relay_id, held.addrs),
                                answer.limit, held.voucher)

    # -- keeping reservations ----------------------------------------------------------------
    def _store(self, relay: PeerId, held: _Held, reservation: RelayReservation) -> None:
        """Remember the fresh ``reservation`` and plan its refresh and its end."""
        with self._lock:
            if held.stopped:
                return
            changed = held.current is None or \
                held.current.relay_addrs != reservation.relay_addrs
            held.current = reservation
        self._host.reactor.call_soon(self._plan, relay, held, reservation)
        if changed:
            self._addresses_changed()

    def _plan(self, relay: PeerId, held: _Held, reservation: RelayReservation) -> None:
        """Reactor: arm the refresh, expiry and connection-check timers of ``held``."""
        self._cancel_timers(held)
        if held.stopped:
            return
        reactor = self._host.reactor
        left = reservation.expire - time.time()
        if held.refreshing:
            margin = min(REFRESH_MARGIN, left / 4)
            held.refresh = reactor.call_later(max(0.0, left - margin),
                                              lambda: self._refresh_soon(relay, held))
            held.check = reactor.call_later(CHECK_INTERVAL,
                                            lambda: self._check(relay, held))
        held.expiry = reactor.call_later(max(0.0, left),
                                         lambda: self._expired(relay, held, reservation))

    def _check(self, relay: PeerId, held: _Held) -> None:
        """Reactor: the slot lasts only while our connection to the relay does; when
        it is gone, reserve again now rather than at the planned refresh."""
        held.check = None
        if held.stopped:
            return
        if self._host.usable_connection(relay) is None:
            log.info("relay %s: the connection is gone; reserving again", relay)
            if held.refresh is not None:
                held.refresh.cancel()
            self._refresh_soon(relay, held)
        else:
            held.check = self._host.reactor.call_later(CHECK_INTERVAL,
                                                       lambda: self._check(relay, held))

    def _refresh_soon(self, relay: PeerId, held: _Held) -> None:
        held.refresh = None
        if not held.stopped and self._host.run_in_worker(self._refresh, relay, held) is None:
            held.refresh = self._host.reactor.call_later(
                RETRY_INTERVAL, lambda: self._refresh_soon(relay, held))

    def _refresh(self, relay: PeerId, held: _Held) -> None:
        """Worker: one refresh attempt; on failure, another before the slot ends."""
        if held.stopped or self._host.closed:
            return
        try:
            reservation = self._request(held.target, relay, RETRY_INTERVAL)
        except (OSError, ValueError, ProtocolError) as exc:
            current = held.current
            left = current.expire - time.time() if current is not None else RETRY_INTERVAL
            log.info("relay %s: refreshing the reservation failed (%s)", relay, exc)
            self._host.reactor.call_soon(self._retry_later, relay, held,
                                         max(0.1, min(RETRY_INTERVAL, left / 2)))
            return
        self._store(relay, held, reservation)

    def _retry_later(self, relay: PeerId, held: _Held, delay: float) -> None:
        if held.stopped:
            return
        if held.refresh is not None:
            held.refresh.cancel()
        held.refresh = self._host.reactor.call_later(
            delay, lambda: self._refresh_soon(relay, held))

    def _expired(self, relay: PeerId, held: _Held, reservation: RelayReservation) -> None:
        """Reactor: ``reservation`` ended without a refresh."""
        held.expiry = None
        with self._lock:
            if held.current is not reservation or held.stopped:
                return
            held.current = None
            if not held.refreshing:
                self._held.pop(relay, None)
                held.stopped = True
        log.warning("relay %s: the reservation ended%s", relay,
                    " and could not be refreshed" if held.refreshing else "")
        for hook in list(self.on_reservation_lost):
            try:
                hook(relay)
            except Exception:
                log.exception("reservation-lost hook %r failed", hook)
        self._addresses_changed()
        self._let_connection_idle(relay)
        if held.stopped:
            self._cancel_timers(held)
        elif held.refresh is None:  # keep trying to get one back
            held.refresh = self._host.reactor.call_later(
                RETRY_INTERVAL, lambda: self._refresh_soon(relay, held))

    def _let_connection_idle(self, relay: PeerId) -> None:
        conn = self._host.usable_connection(relay)
        if conn is not None:
            conn.keep_alive = False

    @staticmethod
    def _cancel_timers(held: _Held) -> None:
        for timer in (held.refresh, held.expiry, held.check):
            if timer is not None:
                timer.cancel()
        held.refresh = held.expiry = held.check = None

    def _stop(self, relay: PeerId, held: _Held) -> None:
        held.stopped = True

        def stop() -> None:
            self._cancel_timers(held)
            self._let_connection_idle(relay)
        self._host.reactor.call_soon(stop)

    def _addresses_changed(self) -> None:
        """Our listen addresses changed: tell connected peers (identify push)."""
        for hook in list(self._host.on_protocols_changed):
            try:
                hook()
            except Exception:
                log.exception("address-change hook %r failed", hook)


def _read_message(stream: "Stream", deadline: float) -> bytes:
    """Blocking: one length-prefixed message from ``stream`` by ``deadline``."""
    reader = MessageReader()
    while True:
        stream.settimeout(step_timeout(deadline, "reservation"))
        data = stream.read(4096)
        if not data:
            raise ProtocolError("the relay closed the stream without an answer")
        body = reader.feed(data)
        if body is not None:
            return body


def _relay_addrs(relay: PeerId, raw_addrs: tuple[bytes, ...]) -> tuple[Multiaddr, ...]:
    """The reservation's relay addresses that end in ``/p2p/<relay>`` (others and
    malformed ones left out); ``/p2p/<relay>`` alone when none is usable."""
    suffix = f"/p2p/{relay}"
    addrs = []
    for raw in raw_addrs[:MAX_RELAY_ADDRS]:
        try:
            ma = Multiaddr(raw)
        except Exception:  # the multiaddr package raises assorted types
            continue
        text = str(ma)
        if not text.endswith(suffix):
            if "/p2p/" in text:
                continue  # names another peer
            ma = Multiaddr(text + suffix)
        addrs.append(ma)
    return tuple(addrs) or (Multiaddr(suffix),)


class StopHandler:
    """Serves the stop protocol on the reactor once :meth:`serve` was called (module
    docstring); at most
    ``max_pending`` handshakes at once, ``max_pending_per_relay`` per relay
    (``Limits.max_stop_handshakes``, ``max_stop_handshakes_per_relay``)."""

    def __init__(self, host: ClientHost, transport: CircuitTransport, client: RelayClient,
                 accept: AcceptChannel, max_pending: int, max_pending_per_relay: int
                 ) -> None:
        """Serves the stop protocol on ``host`` (from the first :meth:`serve`)."""
        self._host = host
        self._transport = transport
        self._accept = accept
        self._client = client
        self._pending = BoundedCounts(max_pending, max_pending_per_relay)
        self._refusals = LogThrottle()
        self._serving = False
        self._serve_lock = threading.Lock()

    def serve(self) -> None:
        """Start serving the stop protocol (the first reservation calls this: a node
        that uses no relay does not offer it)."""
        with self._serve_lock:
            if not self._serving:
                self._host.serve_on_reactor(STOP_PROTOCOL, self._on_stop)
                self._serving = True

    def _on_stop(self, conn: "Connection", stream: "Stream") -> None:
        relay = stream.peer_id
        if not self._pending.admit(relay):
            if self._refusals.ready(relay):
                log.warning("relay %s: resetting a stop stream: %d stop handshakes of "
                            "it under way", relay, self._pending.count(relay))
            stream.reset()
            return

        def read(body: bytes | None, rest: bytes, error: BaseException | None) -> None:
            self._pending.release(relay)
            self._request(conn, stream, body, rest, error)

        ReadOneMessage(conn, stream, self._host.reactor.call_later, STOP_TIMEOUT, read)

    def _answer(self, stream: "Stream", status: Status) -> None:
        send_and_close(stream, StopMessage(StopType.STATUS, status=status))

    def _request(self, conn: "Connection", stream: "Stream", body: bytes | None,
                 rest: bytes, error: BaseException | None) -> None:
        relay = stream.peer_id
        if error is not None or body is None:
            if isinstance(error, DecodeError):
                self._answer(stream, Status.MALFORMED_MESSAGE)
            else:
                log.debug("relay %s: stop request failed: %s", relay, error)
                stream.reset()
            return
        try:
            request = StopMessage.decode(body)
            if request.type != StopType.CONNECT:
                self._answer(stream, Status.UNEXPECTED_MESSAGE)
                return
            if request.peer is None:
                raise DecodeError("CONNECT without a peer")
            src = PeerId.from_bytes(request.peer.id)
        except (DecodeError, ValueError) as exc:
            log.debug("relay %s: malformed stop request: %s", relay, exc)
            self._answer(stream, Status.MALFORMED_MESSAGE)
            return
        if conn.relayed or not self._client.holds_reservation(relay):
            self._answer(stream, Status.PERMISSION_DENIED)
            return
        if not send(stream, StopMessage(StopType.STATUS, status=Status.OK)):
            return
        channel, pump = new_pump(self._host.reactor, relay)
        channel.limit = request.limit
        pump.attach(stream, conn, rest)
        log.debug("relay %s: accepting a relayed connection from %s", relay, src)
        self._accept(self._transport, channel, (str(relay), str(src)))
