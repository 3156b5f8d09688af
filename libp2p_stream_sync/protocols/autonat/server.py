"""The AutoNAT v1 server: dial a requester back on the addresses it names, and say
whether that worked.

What it dials (the spec's rule against using us to attack a third party, RFC 3489
12.1.1): only addresses on the IP we observe the requester at, never over a relayed
connection, only when that IP is public (``IpScope``), only addresses we can dial
(``targets.dialable``), and only on a **new** connection (an existing one proves
nothing about a NAT). At most
:data:`MAX_DIAL_ADDRS` addresses per request, within ``Limits.autonat_dial_timeout``.
Rate limits (``Limits.max_autonat_dialbacks_per_peer`` and ``max_autonat_dialbacks``
per :data:`RATE_WINDOW` seconds) are charged only for requests that lead to a dial.
Requests are served on the node's bounded handler pool.
"""

from __future__ import annotations

import collections
import ipaddress
import logging
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Protocol, Union

from multiaddr import Multiaddr

from ...errors import DecodeError
from ...identity import PeerId
from ...ipscope import IpScope, ip_of
from .messages import Status, decode_request, encode_response
from .streams import read_message
from .targets import close_late_dial, dialable

if TYPE_CHECKING:
    from ...connection import Connection
    from ...stream import Stream

log = logging.getLogger(__name__)

IP = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]

#: Seconds over which the dial-back rate limits count requests.
RATE_WINDOW = 60.0
#: Addresses of one request we try at most (rust-libp2p's default too).
MAX_DIAL_ADDRS = 16
#: Seconds a requester has to send its request once the stream is open.
REQUEST_TIMEOUT = 10.0
#: Seconds we give our response to leave before the stream is reset.
RESPONSE_TIMEOUT = 5.0


class ServerHost(Protocol):
    """What the server needs of its node (public :class:`Node` methods)."""

    limits: Any
    #: The node's transport table (what we can dial back).
    transports: Any

    @property
    def reactor(self) -> Any: ...

    def run_in_worker(self, fn: Callable[..., Any], *args: Any,
                      peer: PeerId | None = None) -> Any: ...

    def dial_new_connection(self, addr: Any, timeout: float | None) -> "Connection": ...

    def connections(self, peer: PeerId | None = None) -> list["Connection"]: ...


class RateLimiter:
    """Counts events per peer and in all over a sliding window; thread-safe. Its
    memory is bounded by ``total`` (one entry per admitted event)."""

    def __init__(self, per_peer: int, total: int, window: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.per_peer = per_peer
        self.total = total
        self.window = window
        self._clock = clock
        self._lock = threading.Lock()
        self._events: collections.deque[tuple[float, PeerId]] = collections.deque()
        self._by_peer: dict[PeerId, int] = {}

    def allows(self, peer: PeerId) -> bool:
        """Whether :meth:`admit` would count an event of ``peer`` now (nothing is
        counted: ask before work that must not be wasted, admit once it is done)."""
        with self._lock:
            self._expire(self._clock())
            return self._by_peer.get(peer, 0) < self.per_peer \
                and len(self._events) < self.total

    def _expire(self, now: float) -> None:
        while self._events and self._events[0][0] <= now - self.window:
            _, old = self._events.popleft()
            left = self._by_peer[old] - 1
            if left:
                self._by_peer[old] = left
            else:
                del self._by_peer[old]

    def admit(self, peer: PeerId) -> bool:
        """Count one event of ``peer``; False (nothing counted) beyond a bound."""
        now = self._clock()
        with self._lock:
            self._expire(now)
            mine = self._by_peer.get(peer, 0)
            if mine >= self.per_peer or len(self._events) >= self.total:
                return False
            self._events.append((now, peer))
            self._by_peer[peer] = mine + 1
            return True


class AutoNATServer:
    """Serves ``/libp2p/autonat/1.0.0`` for one node (see the module docstring)."""

    def __init__(self, host: ServerHost, scope: IpScope,
                 rate: RateLimiter | None = None) -> None:
        self._host = host
        self.scope = scope
        limits = host.limits
        self.dial_timeout: float = limits.autonat_dial_timeout
        #: The dial-back budget (shared with the v2 server when given).
        self.rate = rate or RateLimiter(limits.max_autonat_dialbacks_per_peer,
                                        limits.max_autonat_dialbacks, RATE_WINDOW)

    def on_stream(self, conn: "Connection", stream: "Stream") -> None:
        """Reactor: note where the requester comes from (the socket is the reactor's)
        and hand the request to the handler pool (reset when it is full)."""
        if self._host.run_in_worker(self.serve, conn.remote_peer_id, observed_ip(conn),
                                    stream, peer=stream.peer_id) is None:
            stream.reset()

    def serve(self, peer: PeerId, observed: "IP | None", stream: "Stream") -> None:
        """Worker: read one request of ``peer`` (seen at ``observed``), answer it,
        close the stream. A request that cannot be framed (oversized, silent, cut
        short) gets the stream reset; one that is framed but malformed gets
        ``E_BAD_REQUEST``."""
        try:
            body = read_message(stream, time.monotonic() + REQUEST_TIMEOUT)
        except (OSError, DecodeError) as exc:
            log.info("AutoNAT request from %s unreadable: %s", peer, exc)
            stream.reset()
            return
        status, text, addr = self.answer(peer, observed, body)
        log.debug("AutoNAT request from %s: %s %s", peer, status.name, text)
        try:
            stream.settimeout(RESPONSE_TIMEOUT)
            stream.write(encode_response(status, text, addr))
            stream.close()
        except OSError as exc:
            log.debug("AutoNAT response to %s lost: %s", peer, exc)
            stream.reset()

    def answer(self, peer: PeerId, observed: "IP | None", body: bytes
               ) -> tuple[Status, str, bytes | None]:
        """Worker: the response to request ``body`` from ``peer``, whose connection
        comes from ``observed`` (None: relayed), dialing it back if the request
        deserves it."""
        try:
            request = decode_request(body)
            claimed = PeerId.from_bytes(request.peer_id) if request.peer_id else None
        except (DecodeError, ValueError) as exc:
            return Status.E_BAD_REQUEST, str(exc), None
        if claimed is not None and claimed != peer:
            return Status.E_BAD_REQUEST, "peer id does not match the connection", None
        if observed is None:
            return Status.E_DIAL_REFUSED, "no observed IP (relayed connection?)", None
        if not self.scope.is_public(observed):
            return Status.E_DIAL_REFUSED, "observed IP is not public", None
        targets = dial_targets(request.addrs, observed, peer, self._host.transports)
        if not targets:
            return Status.E_DIAL_REFUSED, "no dialable address on the observed IP", None
        if not self.rate.admit(peer):
            return Status.E_DIAL_REFUSED, "too many dial requests", None
        reached = self._dial_back(peer, targets)
        if reached is None:
            return Status.E_DIAL_ERROR, "dial back failed", None
        return Status.OK, "", reached.to_bytes()

    def _dial_back(self, peer: PeerId, targets: list[Multiaddr]) -> Multiaddr | None:
        deadline = time.monotonic() + self.dial_timeout
        for target in targets:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            before = self._host.connections(peer)
            try:
                conn = self._host.dial_new_connection(f"{target}/p2p/{peer}", remaining)
            except (OSError, ValueError, ImportError) as exc:
                log.debug("AutoNAT dial back to %s failed: %s", target, exc)
                if isinstance(exc, TimeoutError):
                    close_late_dial(self._host, peer, target, before)
                continue
            self._host.reactor.call_soon(conn.close)
            return target
        return None


def observed_ip(conn: "Connection") -> "IP | None":
    """Reactor thread only (it reads the connection's socket): the IP the peer on
    ``conn`` comes from; None over a relayed connection."""
    try:
        observed = conn.transport.remote_multiaddr(conn.sock, conn.remote_addr)
    except (OSError, ValueError, AttributeError):
        return None
    if any(proto.name == "p2p-circuit" for proto, _ in observed.items()):
        return None
    ip = ip_of(observed)
    return ipaddress.ip_address(ip) if ip is not None else None


def dial_targets(raw_addrs: list[bytes], observed: "IP", peer: PeerId,
                 transports: Any) -> list[Multiaddr]:
    """The requested addresses we may dial: :func:`targets.dialable` ones on the
    ``observed`` IP; ``/p2p/`` stripped, duplicates dropped, at most
    :data:`MAX_DIAL_ADDRS`."""
    found: list[Multiaddr] = []
    for raw in raw_addrs:
        if len(found) >= MAX_DIAL_ADDRS:
            break
        ma = dialable(raw, peer, transports)
        if ma is not None and ipaddress.ip_address(ip_of(ma) or "") == observed \
                and ma not in found:
            found.append(ma)
    return found
