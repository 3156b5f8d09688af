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
from typing import TYPE_CHECKING, Any, Callable, Protocol

from multiaddr import Multiaddr

from ..codec.circuit import (HOP_PROTOCOL, STOP_PROTOCOL, HopMessage, HopType, Limit,
                             MessageReader, Status, StopMessage, StopType, frame)
from ..control import Control, PeerLike
from ..engines.relay_state import BoundedCounts
from ..errors import DecodeError, ProtocolError
from ..identity import PeerId
from ..identity.envelope import InvalidEnvelope, open_voucher
from ..logthrottle import LogThrottle
from ..timeouts import check_timeout, deadline_after, time_left
from ..transport.circuit import CircuitTransport, RelayRefused, new_pump
from .relay_io import ReadOneMessage, send, send_and_close

if TYPE_CHECKING:
    from ..connection import Connection
    from ..stream import Stream

log = logging.getLogger(__name__)

#: Stop handshakes (relays announcing circuits to us) under way at once ...
MAX_STOP_HANDSHAKES = 64
#: ... and of those, announced by one relay.
MAX_STOP_HANDSHAKES_PER_RELAY = 16
#: Seconds a relay has to send its stop request once it opened the stream.
STOP_TIMEOUT = 10.0
#: A reservation is refreshed this long before it ends (a quarter of its length when
#: that is shorter), and retried every :data:`RETRY_INTERVAL` at most until it ends.
REFRESH_MARGIN = 60.0
RETRY_INTERVAL = 10.0
#: Relay addresses kept from one reservation answer.
MAX_RELAY_ADDRS = 16


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

    def accept_channel(self, transport: Any, channel: Any, remote_addr: tuple) -> None: ...


@dataclass
class _Kept:
    """A reservation the node keeps refreshed."""

    target: PeerLike
    current: RelayReservation | None = None
    refresh: Any = None
    expiry: Any = None
    stopped: bool = False


class RelayClient:
    """Our reservations on relays and their refreshing (module docstring)."""

    def __init__(self, host: ClientHost, transport: CircuitTransport) -> None:
        """Serves the stop protocol on ``host`` for circuits of ``transport``."""
        self._host = host
        self._lock = threading.Lock()
        self._kept: dict[PeerId, _Kept] = {}
        #: Called (on a worker or the reactor thread) with the relay's id when a kept
        #: reservation ended without a successful refresh.
        self.on_reservation_lost: list[Callable[[PeerId], None]] = []
        self.stop_handler = StopHandler(host, transport, self)

    # -- public API ------------------------------------------------------------------------
    def reserve(self, relay: PeerLike, timeout: float | None = 10.0, *,
                keep: bool = False) -> RelayReservation:
        """Reserve a slot on ``relay`` (a multiaddr ending in ``/p2p/<id>``, or a peer
        we know addresses of) and return it. ``keep``: refresh it before it ends, for
        as long as the node runs (or until :meth:`release`).

        Raises :class:`RelayRefused` (with the relay's ``status``) when refused,
        ``ValueError`` for a malformed address, :class:`OpenStreamError` /
        ``TimeoutError`` when the relay cannot be reached or does not answer within
        ``timeout``, :class:`ProtocolError` for a malformed answer or voucher.
        """
        relay_id = self._host.peer_for_open(relay)
        if relay_id == self._host.peer_id:
            raise ValueError("a node cannot reserve a slot on itself")
        reservation = self._request(relay, relay_id, check_timeout(timeout))
        if keep:
            with self._lock:
                kept = self._kept.get(relay_id)
                if kept is None or kept.stopped:
                    kept = self._kept[relay_id] = _Kept(relay)
            self._store(relay_id, kept, reservation)
        return reservation

    def release(self, relay: "PeerId | str") -> None:
        """Stop refreshing the slot on ``relay`` and stop advertising it."""
        relay_id = relay if isinstance(relay, PeerId) else PeerId.from_string(relay)
        with self._lock:
            kept = self._kept.pop(relay_id, None)
        if kept is not None:
            self._stop(kept)
            self._addresses_changed()

    def reservations(self) -> list[RelayReservation]:
        """The slots the node keeps, right now."""
        with self._lock:
            return [k.current for k in self._kept.values() if k.current is not None]

    def holds_reservation(self, relay: PeerId) -> bool:
        """Whether we keep a slot on ``relay`` (stop requests from others are refused)."""
        with self._lock:
            kept = self._kept.get(relay)
            return kept is not None and kept.current is not None

    def circuit_addrs(self) -> list[Multiaddr]:
        """Our addresses through the relays we hold slots on."""
        return [addr for r in self.reservations() for addr in r.circuit_addrs]

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
                self._host.reactor.call_later(
                    retry_after, lambda: self._host.run_in_worker(attempt))
        if self._host.run_in_worker(attempt) is None:
            self._host.reactor.call_later(retry_after,
                                          lambda: self._host.run_in_worker(attempt))

    # -- the request -------------------------------------------------------------------------
    def _request(self, relay: PeerLike, relay_id: PeerId, seconds: float | None
                 ) -> RelayReservation:
        deadline = deadline_after(seconds)
        stream = self._host.new_control().open_stream(relay, HOP_PROTOCOL, timeout=seconds)
        try:
            stream.settimeout(time_left(deadline))
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
    def _store(self, relay: PeerId, kept: _Kept, reservation: RelayReservation) -> None:
        """Remember the fresh ``reservation`` and plan its refresh and its end."""
        with self._lock:
            if kept.stopped:
                return
            changed = kept.current is None or \
                kept.current.relay_addrs != reservation.relay_addrs
            kept.current = reservation
        self._host.reactor.call_soon(self._plan, relay, kept, reservation)
        if changed:
            self._addresses_changed()

    def _plan(self, relay: PeerId, kept: _Kept, reservation: RelayReservation) -> None:
        """Reactor: arm the refresh and expiry timers of ``kept``."""
        for timer in (kept.refresh, kept.expiry):
            if timer is not None:
                timer.cancel()
        if kept.stopped:
            return
        left = reservation.expire - time.time()
        margin = min(REFRESH_MARGIN, left / 4)
        kept.refresh = self._host.reactor.call_later(
            max(0.0, left - margin), lambda: self._refresh_soon(relay, kept))
        kept.expiry = self._host.reactor.call_later(
            max(0.0, left), lambda: self._expired(relay, kept, reservation))

    def _refresh_soon(self, relay: PeerId, kept: _Kept) -> None:
        kept.refresh = None
        if not kept.stopped and self._host.run_in_worker(self._refresh, relay, kept) is None:
            kept.refresh = self._host.reactor.call_later(
                RETRY_INTERVAL, lambda: self._refresh_soon(relay, kept))

    def _refresh(self, relay: PeerId, kept: _Kept) -> None:
        """Worker: one refresh attempt; on failure, another before the slot ends."""
        if kept.stopped or self._host.closed:
            return
        try:
            reservation = self._request(kept.target, relay, RETRY_INTERVAL)
        except (OSError, ValueError, ProtocolError) as exc:
            current = kept.current
            left = current.expire - time.time() if current is not None else 0
            log.info("relay %s: refreshing the reservation failed (%s)", relay, exc)
            if left > 1.0 and not kept.stopped:
                delay = min(RETRY_INTERVAL, left / 2)
                self._host.reactor.call_soon(self._retry_later, relay, kept, delay)
            return
        self._store(relay, kept, reservation)

    def _retry_later(self, relay: PeerId, kept: _Kept, delay: float) -> None:
        if kept.refresh is not None:
            kept.refresh.cancel()
        kept.refresh = self._host.reactor.call_later(
            delay, lambda: self._refresh_soon(relay, kept))

    def _expired(self, relay: PeerId, kept: _Kept, reservation: RelayReservation) -> None:
        """Reactor: ``reservation`` ended without a refresh."""
        kept.expiry = None
        with self._lock:
            if kept.current is not reservation or kept.stopped:
                return
            kept.current = None
        log.warning("relay %s: the reservation ended and could not be refreshed", relay)
        for hook in list(self.on_reservation_lost):
            try:
                hook(relay)
            except Exception:
                log.exception("reservation-lost hook %r failed", hook)
        self._addresses_changed()
        conn = self._host.usable_connection(relay)
        if conn is not None:
            conn.keep_alive = False
        if kept.refresh is None and not kept.stopped:  # keep trying to get one back
            kept.refresh = self._host.reactor.call_later(
                RETRY_INTERVAL, lambda: self._refresh_soon(relay, kept))

    def _stop(self, kept: _Kept) -> None:
        kept.stopped = True

        def cancel() -> None:
            for timer in (kept.refresh, kept.expiry):
                if timer is not None:
                    timer.cancel()
            kept.refresh = kept.expiry = None
        self._host.reactor.call_soon(cancel)

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
        stream.settimeout(time_left(deadline))
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
    """Serves the stop protocol on the reactor (module docstring); at most
    :data:`MAX_STOP_HANDSHAKES` at once, :data:`MAX_STOP_HANDSHAKES_PER_RELAY` per relay."""

    def __init__(self, host: ClientHost, transport: CircuitTransport,
                 client: RelayClient) -> None:
        """Registers the stop protocol on ``host``."""
        self._host = host
        self._transport = transport
        self._client = client
        self._pending = BoundedCounts(MAX_STOP_HANDSHAKES, MAX_STOP_HANDSHAKES_PER_RELAY)
        self._refusals = LogThrottle()
        host.serve_on_reactor(STOP_PROTOCOL, self._on_stop)

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
        pump.attach(stream, conn, rest)
        log.debug("relay %s: accepting a relayed connection from %s", relay, src)
        self._host.accept_channel(self._transport, channel, (str(relay), str(src)))
