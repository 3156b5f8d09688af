"""DCUtR, Direct Connection Upgrade through Relay (``/libp2p/dcutr``, libp2p specs
``relay/DCUtR.md``): from a relayed connection to a direct one by TCP hole punching.

Roles, as go-libp2p and py-libp2p take them (their peers rely on it):

* The **initiator** is the peer that *received* the relayed connection (it sits behind
  a NAT and holds a relay slot). Once identify ran on that connection it dials the
  peer directly if the peer advertises a public address (the spec's unilateral
  upgrade); otherwise it opens ``/libp2p/dcutr`` on the relayed connection, sends
  ``CONNECT`` with its addresses, times the answer (the relayed round trip), reads the
  peer's ``CONNECT``, sends ``SYNC``, waits half the round trip and dials the peer's
  addresses. Up to :data:`ROUNDS` rounds on that stream (a new one if the peer closed
  it after a round, as go's receiver does).
* The **receiver** (it dialed through the relay) serves ``/libp2p/dcutr`` only on a
  relayed connection it dialed; it answers each ``CONNECT`` with its addresses and
  dials the moment ``SYNC`` arrives.

Both dial from their TCP listen port (``SO_REUSEPORT``), so that an endpoint-independent
NAT maps the dial to the address we advertised, and the two SYNs cross: a TCP
simultaneous open, one connection that both sides dialed. Its upgrade roles are fixed:
the receiver is the security initiator, the DCUtR initiator the responder (go's
``WithSimultaneousConnect`` roles, py-libp2p's ``dial_addr_as_responder``). A dial
refused at once (the far router answers RST while the far side's SYN has not yet opened
its mapping) is repeated within the round, from the same port.

Our addresses are what connected peers observed (identify; one observer is enough, as
in py-libp2p: usually only the relay sees us), with our listen ports (AutoNAT's
``candidate_addrs``: a NAT that keeps ports maps the listen port so), public TCP ones only
(``Node(public_networks=...)`` for test networks); the peer's are the public TCP
addresses of its ``CONNECT``. With none on either side nothing is dialed, and the
relayed connection stays in use, as after failed rounds. After a punch the connection
table prefers the direct connection for new streams; streams on the relayed one finish
undisturbed (it ends with the relay's circuit limit, or idle).

Bounds (README limits table): ``Limits.max_hole_punches`` sessions at once (either
role, one per peer), ``max_hole_punches_per_peer`` sessions per peer per minute, a
4 KiB message within :data:`MESSAGE_TIMEOUT`, :data:`MAX_DIAL_ADDRS` addresses dialed,
:data:`ROUNDS` rounds of :attr:`HolePuncher.dial_window` seconds, at most
:data:`MAX_REDIALS` re-dials of an address per round. Sessions run on the node's
handler pool (``max_handler_jobs*``).
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import errno
import logging
import threading
import time
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, Callable, Iterable, Protocol

from multiaddr import Multiaddr

from ..codec.circuit import MessageReader
from ..codec.dcutr import MAX_MESSAGE_SIZE, PROTOCOL, HolePunch, HolePunchType
from ..engines.relay_state import BoundedCounts
from ..errors import DecodeError, ProtocolError
from ..identity import PeerId
from ..ipscope import IpScope, ip_of
from ..transport import tcp
from .autonat.client import candidate_addrs
from .autonat.server import RateLimiter

if TYPE_CHECKING:
    from ..connection import Connection
    from ..limits import Limits
    from ..stream import Stream
    from .identify import IdentifyInfo

log = logging.getLogger(__name__)

#: Rounds of CONNECT/SYNC and dialing per session (the spec: "retry twice").
ROUNDS = 3
#: Seconds to wait for each DCUtR message, and for identify on the relayed connection.
MESSAGE_TIMEOUT = 10.0
#: Seconds of dialing per round (go-libp2p's hole-punch ``dialTimeout``).
DIAL_WINDOW = 5.0
#: Addresses of a peer dialed per round, and our addresses sent in ``CONNECT``.
MAX_DIAL_ADDRS = 8
#: Re-dials of one address per round after an immediate refusal, and the pause first.
MAX_REDIALS = 20
REDIAL_DELAY = 0.02
#: The initiator's wait after ``SYNC`` is half the round trip, at most this (py-libp2p).
MAX_SYNC_DELAY = 2.0
#: The window of ``Limits.max_hole_punches_per_peer``; sessions of all peers in it are
#: bounded by :data:`SESSIONS_PER_WINDOW` times ``max_hole_punches``.
RATE_WINDOW = 60.0
SESSIONS_PER_WINDOW = 8


class HolePunchHost(Protocol):
    """What hole punching needs of its node (public ``Node`` methods)."""

    limits: "Limits"
    on_connection_ready: list[Callable[["Connection"], None]]

    @property
    def reactor(self) -> Any: ...

    def run_in_worker(self, fn: Callable[..., Any], *args: Any,
                      peer: PeerId | None = None) -> Any: ...

    def serve_on_reactor(self, protocol: str,
                         handler: Callable[["Connection", "Stream"], None]) -> None: ...

    def wait_identified(self, peer: PeerId, timeout: float | None = 10.0
                        ) -> "IdentifyInfo": ...

    def usable_connection(self, peer_id: PeerId, direct: bool = False
                          ) -> "Connection | None": ...

    def direct_listen_addrs(self) -> list[Multiaddr]: ...

    def connected_peers(self) -> list[PeerId]: ...

    def identify_info(self, peer: PeerId) -> "IdentifyInfo | None": ...

    def open_on(self, conn: "Connection", protocol: Any, deadline: float,
                lazy: bool = False) -> "Stream": ...

    def dial_new_connection(self, addr: Any, timeout: float | None) -> "Connection": ...


class PunchDialer(Protocol):
    """The dialer's reactor-side attempt from a given local address (``Dialer``)."""

    def start_punch_dial(self, target: tcp.TcpTarget, source: tuple, initiator: bool,
                         future: Future, timeout: float) -> None: ...


class _StreamEnded(ProtocolError):
    """The peer closed the DCUtR stream (between rounds: it is done)."""


class HolePuncher:
    """The node's DCUtR, both roles (module docstring); ``scope`` says which IPs are
    public."""

    def __init__(self, host: HolePunchHost, dialer: PunchDialer, scope: IpScope) -> None:
        """Watches new connections (and serves ``/libp2p/dcutr`` from the first relayed
        one on), unless ``Limits.max_hole_punches`` is 0 (hole punching off)."""
        self._host = host
        self._dialer = dialer
        self.scope = scope
        limits = host.limits
        #: Seconds of dialing per round (tests shorten it).
        self.dial_window = DIAL_WINDOW
        self._tcp = tcp.TcpTransport()
        self._lock = threading.Lock()
        self._active = BoundedCounts(limits.max_hole_punches, 1)
        self._rate = RateLimiter(limits.max_hole_punches_per_peer,
                                 max(1, limits.max_hole_punches) * SESSIONS_PER_WINDOW,
                                 RATE_WINDOW)
        self._outcomes: collections.Counter[str] = collections.Counter()
        self._serving = False
        if limits.max_hole_punches > 0:
            host.on_connection_ready.append(self._connection_ready)

    def counts(self) -> dict[str, int]:
        """``active`` sessions, and how finished ones ended: ``punched`` (a hole punch
        made a direct connection), ``direct`` (one was there or a plain dial made it),
        ``failed`` (every round failed), ``skipped`` (no public address of ours),
        ``refused`` (a bound was reached), ``error`` (the exchange broke: a reset, a
        timeout, a malformed or unexpected message)."""
        with self._lock:
            return dict(self._outcomes, active=self._active.total)

    # -- admission (any thread) ---------------------------------------------------------
    def _admit(self, peer: PeerId) -> bool:
        with self._lock:
            if self._active.count(peer) or not self._active.admit(peer):
                self._outcomes["refused"] += 1
                return False
            if not self._rate.admit(peer):
                self._active.release(peer)
                self._outcomes["refused"] += 1
                return False
            return True

    def _finish(self, peer: PeerId, outcome: str) -> None:
        with self._lock:
            self._active.release(peer)
            self._outcomes[outcome] += 1

    # -- the initiator ---------------------------------------------------------------------
    def _connection_ready(self, conn: "Connection") -> None:
        """Reactor: a relayed connection someone made to us starts a session. The
        first relayed connection registers the protocol: a node that uses no relay
        does not offer it (nobody could use it: it is served on relayed ones only)."""
        if not getattr(conn, "relayed", False):
            return
        if not self._serving:
            self._serving = True
            self._host.serve_on_reactor(PROTOCOL, self._on_stream)
        if conn.initiator:
            return
        peer = conn.remote_peer_id
        if peer is None or not self._admit(peer):
            return
        if self._host.run_in_worker(self._initiate, conn, peer, peer=peer) is None:
            self._finish(peer, "refused")

    def _initiate(self, conn: "Connection", peer: PeerId) -> None:
        """Worker: one initiator session."""
        outcome = "error"
        try:
            outcome = self._initiate_session(conn, peer)
        except (OSError, ProtocolError) as exc:
            log.info("hole punch with %s: %s", peer, exc)
        finally:
            self._finish(peer, outcome)
        log.debug("hole punch with %s (initiator): %s", peer, outcome)

    def _initiate_session(self, conn: "Connection", peer: PeerId) -> str:
        info = self._host.wait_identified(peer, MESSAGE_TIMEOUT)
        if self._direct(peer) or self._dial_directly(peer, info.listen_addrs):
            return "direct"
        ours = self._ours()
        if not ours:
            return "skipped"
        stream: "Stream | None" = None
        reader = MessageReader(MAX_MESSAGE_SIZE)
        try:
            for _ in range(ROUNDS):
                if stream is None or stream.input_finished:
                    stream, reader = self._open(conn, stream)
                try:
                    answer, rtt = _connect(stream, reader, ours)
                except _StreamEnded:  # it serves one round per stream (go): a new one
                    stream, reader = self._open(conn, stream)
                    answer, rtt = _connect(stream, reader, ours)
                theirs = self._dialable(answer.obs_addrs, peer)
                if not theirs:
                    raise ProtocolError("the peer's CONNECT has no public TCP address")
                _send(stream, HolePunch(HolePunchType.SYNC))
                time.sleep(min(rtt / 2, MAX_SYNC_DELAY))
                if self._punch(peer, theirs, initiator=False):
                    stream.close()
                    return "punched"
                ours = self._ours() or ours
            stream.close()
            return "failed"
        except BaseException:
            if stream is not None:
                stream.reset()
            raise

    def _open(self, conn: "Connection", old: "Stream | None"
              ) -> tuple["Stream", MessageReader]:
        """A new DCUtR stream on the relayed connection (the old one closed)."""
        if old is not None:
            old.close()
        stream = self._host.open_on(conn, PROTOCOL, time.monotonic() + MESSAGE_TIMEOUT)
        return stream, MessageReader(MAX_MESSAGE_SIZE)

    def _dial_directly(self, peer: PeerId, listen_addrs: Iterable[Multiaddr]) -> bool:
        """The unilateral upgrade: dial the peer's public addresses, if it has any."""
        deadline = time.monotonic() + self.dial_window
        for target in self._dialable((ma.to_bytes() for ma in listen_addrs), peer):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            addr = f"{_multiaddr(target)}/p2p/{peer}"
            try:
                self._host.dial_new_connection(addr, remaining)
                return True
            except (OSError, ValueError) as exc:
                log.debug("hole punch with %s: direct dial of %s failed: %s", peer, addr,
                          exc)
        return False

    # -- the receiver ----------------------------------------------------------------------
    def _on_stream(self, conn: "Connection", stream: "Stream") -> None:
        """Reactor: ``/libp2p/dcutr`` from a peer we dialed through a relay."""
        peer = stream.peer_id
        if not getattr(conn, "relayed", False) or not conn.initiator:
            log.info("resetting a DCUtR stream from %s: not on a relayed connection we "
                     "made", peer)
            stream.reset()
            return
        if not self._admit(peer):
            stream.reset()
            return
        if self._host.run_in_worker(self._receive, stream, peer=peer) is None:
            self._finish(peer, "refused")
            stream.reset()

    def _receive(self, stream: "Stream") -> None:
        """Worker: answer the initiator's rounds until it is done."""
        peer = stream.peer_id
        outcome = "error"
        try:
            outcome = self._receive_rounds(stream, peer)
            if outcome == "skipped":
                stream.reset()  # as go-libp2p: we cannot tell the peer where to dial
            else:
                stream.close()
        except (OSError, ProtocolError) as exc:
            log.info("hole punch with %s: resetting its DCUtR stream: %s", peer, exc)
            stream.reset()
        finally:
            self._finish(peer, outcome)
        log.debug("hole punch with %s (receiver): %s", peer, outcome)

    def _receive_rounds(self, stream: "Stream", peer: PeerId) -> str:
        reader = MessageReader(MAX_MESSAGE_SIZE)
        for round_ in range(ROUNDS):
            try:
                request = _read(stream, reader)
            except _StreamEnded:
                if round_ == 0:
                    raise
                return "failed"  # the initiator gave up
            theirs = self._dialable(_expect(request, HolePunchType.CONNECT).obs_addrs,
                                    peer)
            if not theirs:
                raise ProtocolError("the peer's CONNECT has no public TCP address")
            ours = self._ours()
            if not ours:
                return "skipped"
            _send(stream, HolePunch(HolePunchType.CONNECT, _encode(ours)))
            _expect(_read(stream, reader), HolePunchType.SYNC)
            if self._punch(peer, theirs, initiator=True):
                return "punched"
        return "failed"

    # -- addresses and dials -------------------------------------------------------------
    def _ours(self) -> list[tcp.TcpTarget]:
        """Our public TCP addresses worth sending (module docstring)."""
        observed = []
        for peer in self._host.connected_peers():
            info = self._host.identify_info(peer)
            ip = ip_of(info.observed_addr) if info and info.observed_addr else None
            if ip is not None and ip not in observed:
                observed.append(ip)
        addrs = candidate_addrs(self._host.direct_listen_addrs(), observed, self.scope)
        return self._dialable((ma.to_bytes() for ma in addrs), None)

    def _dialable(self, raw_addrs: Iterable[bytes], peer: PeerId | None
                  ) -> list[tcp.TcpTarget]:
        """The public ``/ip4|ip6/.../tcp/...`` addresses among ``raw_addrs`` (multiaddr
        bytes; a ``/p2p/`` part must name ``peer``), at most :data:`MAX_DIAL_ADDRS`."""
        found: list[tcp.TcpTarget] = []
        for raw in raw_addrs:
            try:
                target = tcp.parse_tcp_multiaddr(Multiaddr(raw))
            except Exception:  # relayed, another transport, or not a multiaddr at all
                continue
            if target.needs_resolution or not self.scope.is_public(target.host):
                continue
            if target.peer_id is not None and target.peer_id != peer:
                continue
            target = dataclasses.replace(target, peer_id=peer, transport=self._tcp)
            if target not in found:
                found.append(target)
            if len(found) == MAX_DIAL_ADDRS:
                break
        return found

    def _sources(self) -> dict[int, tuple]:
        """Per address family, the local ``(ip, port)`` of our first TCP listener."""
        sources: dict[int, tuple] = {}
        for ma in self._host.direct_listen_addrs():
            try:
                target = tcp.parse_tcp_multiaddr(ma)
            except ValueError:
                continue
            sources.setdefault(target.family, (target.host, target.port))
        return sources

    def _direct(self, peer: PeerId) -> bool:
        return self._host.usable_connection(peer, direct=True) is not None

    def _punch(self, peer: PeerId, targets: list[tcp.TcpTarget], initiator: bool) -> bool:
        """Dial every target from our listen port for one round; True once a direct
        connection to ``peer`` is open (ours, or the peer's dial that we accepted)."""
        sources = self._sources()
        targets = [t for t in targets if t.family in sources]
        if not targets:
            return self._direct(peer)
        deadline = time.monotonic() + self.dial_window
        tries = {i: 0 for i in range(len(targets))}
        pending: dict[Future, int] = {}

        def start(i: int) -> None:
            future: Future = Future()
            pending[future] = i
            target = targets[i]
            self._host.reactor.call_soon(
                self._dialer.start_punch_dial, target, sources[target.family],
                initiator, future, self._host.limits.handshake_timeout)

        for i in tries:
            start(i)
        while not self._direct(peer):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not pending:
                return self._direct(peer)
            done, _ = concurrent.futures.wait(list(pending), min(remaining, 0.05),
                                              concurrent.futures.FIRST_COMPLETED)
            for future in done:
                i = pending.pop(future)
                error = future.exception()
                log.debug("hole punch with %s: dial %d of %s: %s", peer, tries[i] + 1,
                          _multiaddr(targets[i]), error or "connected")
                if error is None:
                    return True
                if _refused(error) and tries[i] < MAX_REDIALS:
                    tries[i] += 1
                    time.sleep(REDIAL_DELAY)
                    start(i)
        return True


def _refused(error: BaseException) -> bool:
    """A refusal worth a re-dial: the far NAT's RST (not "address in use": an
    earlier dial of this round is still under way)."""
    return getattr(error, "errno", None) == errno.ECONNREFUSED


def _multiaddr(target: tcp.TcpTarget) -> Multiaddr:
    return tcp.sockaddr_to_multiaddr(target.family, (target.host, target.port))


def _encode(targets: list[tcp.TcpTarget]) -> tuple[bytes, ...]:
    return tuple(_multiaddr(t).to_bytes() for t in targets)


def _connect(stream: "Stream", reader: MessageReader, ours: list[tcp.TcpTarget]
             ) -> tuple[HolePunch, float]:
    """Send our ``CONNECT``; the peer's ``CONNECT`` and the round trip it took."""
    start = time.monotonic()
    _send(stream, HolePunch(HolePunchType.CONNECT, _encode(ours)))
    answer = _expect(_read(stream, reader), HolePunchType.CONNECT)
    return answer, time.monotonic() - start


def _expect(message: HolePunch, kind: HolePunchType) -> HolePunch:
    if message.type != kind:
        raise ProtocolError(f"expected a DCUtR {kind.name}, got {message.type.name}")
    return message


def _send(stream: "Stream", message: HolePunch) -> None:
    stream.settimeout(MESSAGE_TIMEOUT)
    stream.write(message.framed())


def _read(stream: "Stream", reader: MessageReader) -> HolePunch:
    """The next message within :data:`MESSAGE_TIMEOUT`; DecodeError when malformed or
    over 4 KiB, :class:`_StreamEnded` at the stream's end, TimeoutError."""
    deadline = time.monotonic() + MESSAGE_TIMEOUT
    body = reader.feed(b"")
    while body is None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no DCUtR message in time")
        stream.settimeout(remaining)
        chunk = stream.read(MAX_MESSAGE_SIZE)
        if not chunk:
            if reader.rest:
                raise DecodeError("the DCUtR stream ended inside a message")
            raise _StreamEnded("the peer closed the DCUtR stream")
        body = reader.feed(chunk)
    return HolePunch.decode(body)
