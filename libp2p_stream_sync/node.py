"""The :class:`Node`: listeners, dialing, the address book, connections and protocols."""

from __future__ import annotations

import errno
import logging
import threading
from concurrent.futures import Future
from typing import Any, Callable, Iterable, Sequence

from multiaddr import Multiaddr

from .addressbook import AddressBook
from .connection import MPLEX, YAMUX, Connection
from .conntable import ConnectionTable
from .control import Control, IncomingStreams, PeerLike, StreamProtocol
from .dialer import Dialer
from .engines.tls import TlsUnavailable, tls_available
from .engines.upgrade import NOISE, TLS, SecurityProtocol
from .identity import Keypair, PeerId
from .ipscope import IpScope
from .limits import Limits, RelayLimits
from .listeners import Listeners
from .node_owner import NodeOwner
from .protocols import BuiltinProtocols, IdentifyInfo, PerfResult
from .protocols.autonat import AutoNAT, Reachability
from .protocols.dcutr import HolePuncher
from .protocols.perf import Progress
from .protocols.relay_client import RelayClient, RelayReservation
from .protocols.relay_policy import RelayPolicy
from .protocols.relay_service import HopServer
from .reactor import Reactor
from .registry import ProtocolRegistry
from .stream import Stream
from .transport import Transports, tcp
from .transport.circuit import CircuitTransport
from .transport.quic import QuicTransport
from .transport.websocket import WebSocketTransport
from .workers import WorkerPool

log = logging.getLogger(__name__)

#: The security protocols a node can offer, by the names ``Node(security=...)`` takes
#: (short names and multistream ids). A new one is one more entry here.
SECURITY_PROTOCOLS: dict[str, SecurityProtocol] = {
    "noise": NOISE, NOISE.protocol_id: NOISE, "tls": TLS, TLS.protocol_id: TLS}

_MUXER_NAMES = {"yamux": YAMUX, "mplex": MPLEX, YAMUX: YAMUX, MPLEX: MPLEX}
_CLOSE_TIMEOUT = 5.0

InternalHandler = Callable[["Connection", Stream], None]


class Node:
    """A libp2p node: one background I/O thread, TCP and WebSocket listeners, Noise and
    TLS, yamux/mplex, circuit relay v2 (client always; relay service on request).

    Use as a context manager, or call :meth:`close`. ``listen`` takes multiaddrs such
    as ``"/ip4/127.0.0.1/tcp/0"``; :attr:`listen_addrs` gives the bound addresses.
    ``muxers`` lists the stream muxers we offer, most preferred first. ``enable_perf``
    serves the perf protocol (off by default: it lets peers make us send data).
    """

    def __init__(self, keypair: Keypair | None = None, listen: Iterable[str] = (), *,
                 muxers: Sequence[str] = ("yamux", "mplex"),
                 security: Sequence[str] | None = None,
                 limits: Limits | None = None,
                 max_handler_threads: int = 64,
                 enable_perf: bool = False,
                 enable_autonat_server: bool = False,
                 public_networks: Iterable[str] = (),
                 relay_service: RelayLimits | None = None,
                 relays: Iterable[str] = (), reserve: str = "always") -> None:
        """Bind the ``listen`` addresses and start the I/O thread.

        ``keypair`` is the node's identity (a new Ed25519 key when None; keep one across
        runs with :meth:`Keypair.to_bytes` / :meth:`Keypair.from_bytes`). ``limits``
        bounds what peers can make us hold (:class:`Limits` defaults when None).
        ``max_handler_threads`` caps the threads that run built-in protocol handlers.
        ``security`` lists the security protocols we offer, most preferred first:
        ``"noise"``, ``"tls"`` (default: ``("noise", "tls")``, or ``("noise",)`` when
        pyOpenSSL is not installed). Raises ``OSError`` when an address cannot be
        bound, ``ValueError`` for an unknown muxer, security protocol or address,
        ``TypeError`` when ``listen`` is one address, not a list, and ``ImportError``
        naming the extra to install (``[tls]``, ``[ws]``, ``[quic]``) when ``security``
        names TLS or ``listen`` a ``/ws`` or ``/quic-v1`` address without its package.

        ``enable_autonat_server`` serves AutoNAT v1 and v2 (off by default: it makes us
        dial back whoever asks, within ``Limits.max_autonat_dialbacks*``).
        ``public_networks`` (CIDR strings) count as public IPs although they are in a
        special-use range (:class:`~.ipscope.IpScope`; for tests in private networks).
        ``relay_service``: serve circuit relay v2 (hop) within these bounds (off by
        default). ``relays``: relay multiaddrs (``.../p2p/<id>``) to hold a slot on
        (:meth:`add_relay`, kept trying in the background; docs/RELAY.md); ``reserve``
        ``"when-private"``: only while AutoNAT finds us private (``relay_policy.py``).
        """
        if isinstance(listen, (str, Multiaddr)):
            raise TypeError(f"listen takes a list of multiaddrs, not a "
                            f"{type(listen).__name__}")
        self.keypair = keypair or Keypair.generate()
        self.peer_id: PeerId = self.keypair.peer_id
        try:
            self.muxers = tuple(_MUXER_NAMES[m] for m in muxers)
        except KeyError as exc:
            raise ValueError(f"unknown muxer {exc.args[0]!r} (yamux or mplex)") from None
        if not self.muxers:
            raise ValueError("at least one muxer is needed")
        #: The security protocols we offer (multistream ids), most preferred first.
        self.security: tuple[str, ...] = tuple(
            entry.protocol_id for entry in _security_protocols(security))
        self.limits = limits or Limits()
        self._lock = threading.Lock()
        self._closed = False
        #: Changed under _lock, read by the reactor without it (see registry.py).
        self._registry = ProtocolRegistry(
            self.limits.max_inbound_streams_per_protocol_per_peer)
        self._reactor = Reactor(name=f"libp2p-reactor-{str(self.peer_id)[-6:]}")
        self._table = ConnectionTable(self.limits, self._reactor)
        self._addresses = AddressBook(self.limits.max_address_book_peers,
                                      self._table.has_connection)
        #: What our connections call up (interfaces.ConnectionOwner).
        self._owner = NodeOwner(self.keypair, self.limits, self.muxers,
                                [SECURITY_PROTOCOLS[p] for p in self.security],
                                self._reactor, self._registry, self._table)
        self._workers = WorkerPool(self.limits, max_handler_threads, lambda: self._closed)
        #: Called on the reactor thread with each connection once it is open.
        self.on_connection_ready: list[Callable[[Connection], None]] = \
            self._table.on_connection_ready
        #: Called (on the thread that changed them) after our accepted protocols change.
        self.on_protocols_changed: list[Callable[[], None]] = []
        #: Picks a transport by multiaddr (TCP is the fallback, transport/__init__.py);
        #: read-only for the package's layers (AutoNAT asks it what we can dial).
        self.transports = Transports(tcp.TcpTransport())
        self.transports.register(WebSocketTransport())
        self.transports.register(QuicTransport(self._owner))
        circuits = CircuitTransport(self)
        self.transports.register(circuits)
        self._dialer = Dialer(self._owner, self._table, self.transports, self._addresses,
                              lambda: self._closed)
        self._builtins = BuiltinProtocols(self, enable_perf=enable_perf)
        #: Our relay slots and the stop protocol (circuit relay v2 client).
        self.relay_client = RelayClient(self, circuits, lambda *a: self._listeners.accepted(*a))
        #: The hop server when ``relay_service`` was given, else None.
        self.relay_service = HopServer(self, relay_service) if relay_service else None
        #: Which IPs count as public (AutoNAT's choice of what to ask and to dial).
        self.ip_scope = IpScope(public_networks)
        self._autonat = AutoNAT(self, self.ip_scope, serve=enable_autonat_server)
        #: DCUtR: relayed connections upgraded to direct ones (``Limits.max_hole_punches``).
        self.hole_puncher = HolePuncher(self, self._dialer, self.ip_scope)
        try:
            self.relay_policy = RelayPolicy(self, reserve, self.relay_client.checked_relays(
                relays, self._dialer.target_of))
            self._listeners = Listeners(self._owner, self._table, self.transports, listen)
        except BaseException:
            self._reactor.close_resources()
            raise
        self._reactor.start()
        ready: Future = Future()
        self._reactor.call_soon(self._listeners.start, ready)
        ready.result(_CLOSE_TIMEOUT)
        self.relay_policy.start()

    def __repr__(self) -> str:
        return f"<Node {self.peer_id}>"

    def __enter__(self) -> "Node":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- public API ----------------------------------------------------------------------
    @property
    def listen_addrs(self) -> list[Multiaddr]:
        """The addresses we listen on, with the ports actually bound, then our
        addresses through the relays we hold slots on (``.../p2p-circuit``)."""
        return self._listeners.multiaddrs + self.relay_client.circuit_addrs()

    def direct_listen_addrs(self) -> list[Multiaddr]:
        """The addresses of our own listeners (no relayed ones)."""
        return self._listeners.multiaddrs

    def add_relay(self, relay: PeerLike, timeout: float | None = 10.0) -> RelayReservation:
        """Reserve a slot on a circuit relay and keep it refreshed while the node runs:
        :meth:`RelayClient.reserve` with ``keep=True`` (its errors, docs/RELAY.md)."""
        return self.relay_client.reserve(relay, timeout, keep=True)

    def reservations(self) -> list[RelayReservation]:
        """The relay slots the node holds (:meth:`add_relay`'s, ``relays=``'s)."""
        return self.relay_client.reservations()

    def new_control(self) -> Control:
        """A :class:`Control` for opening and accepting streams on this node."""
        return Control(self)

    def add_address(self, peer_id: "PeerId | str", addr: "str | Multiaddr") -> None:
        """Remember an address of ``peer_id`` for dialing it by peer id.

        Addresses given here (and by ``dial``/``open_stream`` with ``/p2p/``) are kept
        apart from those learned through identify: learned ones never evict them.
        Raises ``ValueError`` for a malformed or unsupported address, or one whose
        ``/p2p/`` part names another peer.
        """
        peer_id = _as_peer_id(peer_id)
        self._addresses.add(peer_id, self._dialer.book_entry(peer_id, addr), learned=False)

    def learn_address(self, peer_id: PeerId, addr: "str | Multiaddr") -> None:
        """Remember an address that ``peer_id`` advertised (identify calls this);
        learned addresses never evict configured ones. An address whose transport
        needs a package we lack (``/ws`` without wsproto) is not kept."""
        try:
            entry = self._dialer.book_entry(peer_id, addr)
        except ImportError:
            return
        self._addresses.add(peer_id, entry, learned=True)

    def addresses_of(self, peer_id: "PeerId | str") -> list[Multiaddr]:
        """The addresses we would dial for ``peer_id``: configured first, then learned."""
        return self._addresses.addresses_of(_as_peer_id(peer_id))

    def connections(self, peer: PeerId | None = None) -> list[Connection]:
        """A snapshot of our open connections (to ``peer``, or all), oldest first.

        For monitoring and tests: a connection's methods run on the reactor thread,
        except those its docstrings call thread-safe."""
        return self._table.snapshot(peer)

    def counts(self) -> dict[str, int]:
        """Approximate sizes of the node's connection tables, read without stopping
        the reactor: ``connections`` (open), ``pending`` (still upgrading),
        ``inbound``/``outbound`` (what ``Limits.max_inbound_connections`` and
        ``max_outbound_connections`` count), ``inbound_streams`` ((peer, protocol)
        pairs with inbound streams open)."""
        return self._table.counts(len(self._registry.inbound_counts()))

    def connected_peers(self) -> list[PeerId]:
        """The peers we have at least one open connection with, right now."""
        return self._table.peers()

    def dial(self, addr: "str | Multiaddr | PeerId", timeout: float | None = 10.0) -> PeerId:
        """Connect (transport, security, muxer) and return the remote's proven peer id.

        ``addr`` is a multiaddr, or a peer (a :class:`PeerId` or a peer id string such as
        ``"12D3KooW..."``) whose known addresses are dialed. An open connection to the
        peer is reused.

        When the multiaddr ends in ``/p2p/<id>`` the remote must prove that id, else
        :class:`PeerMismatchError`. Without ``/p2p/`` *nobody is authenticated in
        advance*: whoever holds a key and answers at that address is accepted, so check
        the returned id before trusting the peer.

        ``timeout`` is seconds, ``0`` (fails at once) or ``None`` (no deadline of yours;
        each connection attempt still ends after ``Limits.handshake_timeout``, the whole
        call after ``timeouts.MAX_UNBOUNDED_WAIT``); ``inf`` means ``None``; ``nan`` and
        negative values raise ``ValueError``. Raises ``ValueError`` for
        a malformed or unsupported address, :class:`DialError` (a ``ConnectionError``)
        or ``TimeoutError`` on failure.
        """
        return self._dialer.dial(addr, timeout)

    def close(self) -> None:
        """Close every connection and listener and stop the I/O thread (joined)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            registered = self._registry.acceptors()
        self._builtins.release_waiters()
        for incoming in registered:
            incoming.close()
        if self._reactor.thread.is_alive():
            done: Future = Future()
            self._reactor.call_soon(self._shutdown, done)
            if not self._reactor.in_reactor_thread():
                try:
                    done.result(_CLOSE_TIMEOUT)
                except Exception:
                    log.exception("error while closing the node")
            self._reactor.stop()
            self._reactor.join(_CLOSE_TIMEOUT)
        # On the reactor thread (a hook closing the node) waiting could deadlock.
        self._workers.shutdown(wait=not self._reactor.in_reactor_thread())

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    # -- built-in protocols (served by self._builtins) ------------------------------------
    # ``peer`` is a PeerId or a peer id string; a malformed string raises ValueError.
    def peer_protocols(self, peer: "PeerId | str") -> list[str]:
        """The protocols ``peer`` said it supports (identify/push); empty when unknown."""
        return self._builtins.peer_protocols(_as_peer_id(peer))

    def identify_info(self, peer: "PeerId | str") -> IdentifyInfo | None:
        """A copy of what ``peer`` told us through identify, or None if nothing yet."""
        return self._builtins.identify_info(_as_peer_id(peer))

    def wait_identified(self, peer: "PeerId | str", timeout: float | None = 10.0
                        ) -> IdentifyInfo:
        """Wait until ``peer`` has been identified; return its :class:`IdentifyInfo`.

        Raises ``TimeoutError`` when ``timeout`` passes and :class:`OpenStreamError`
        when identifying the peer failed (e.g. it does not speak identify) or the node
        is closed (``kind`` ``"closed"``). ``None`` waits until identify of a
        connection to the peer ends, which is bounded once connected.
        """
        return self._builtins.wait_identified(_as_peer_id(peer), timeout)

    def ping(self, peer: PeerLike, count: int = 1, timeout: float | None = 10.0
             ) -> list[float]:
        """Ping ``peer`` ``count`` times on one stream; return each round trip in seconds.

        The echoed bytes are checked (:class:`~.ping.PingMismatch` when they differ).
        Raises ``TimeoutError``/:class:`OpenStreamError` when ``timeout`` passes. With
        ``None`` a round trip still fails after ``timeouts.STALL_TIMEOUT`` seconds.
        """
        return self._builtins.ping(peer, count, timeout)

    def perf(self, peer: PeerLike, upload_bytes: int, download_bytes: int, *,
             timeout: float | None = 60.0, progress: Progress | None = None
             ) -> PerfResult:
        """Run the perf protocol: send ``upload_bytes``, receive ``download_bytes``.

        ``progress(uploaded, downloaded)`` is called as bytes move. Raises
        :class:`UnsupportedProtocol` when the peer does not serve perf. With
        ``timeout=None`` the run has no deadline, but fails when no byte moves for
        ``timeouts.STALL_TIMEOUT`` seconds.
        """
        return self._builtins.perf(peer, upload_bytes, download_bytes, timeout=timeout,
                                   progress=progress)

    def probe_reachability(self, servers: Sequence[PeerLike] | None = None,
                           timeout: float | None = 30.0, confirmations: int = 3,
                           version: int = 1) -> Reachability:
        """Ask AutoNAT servers (default: connected peers that serve that ``version``,
        1 or 2) to dial us back; return the verdict, which :meth:`reachability` then
        reports.

        ``public`` once ``confirmations`` servers reached us, ``private`` once as many
        could not and none could, else ``unknown``. Never raises for a server's fault
        (each answer is in ``observations``); ``ValueError`` for ``confirmations < 1``
        or another ``version``.
        """
        return self._autonat.probe(servers, timeout, confirmations, version)

    def reachability(self) -> Reachability:
        """The last AutoNAT verdict (status ``unknown`` before any probe)."""
        return self._autonat.reachability()

    @property
    def reactor(self) -> Reactor:
        """The node's I/O thread (for the package's layers: schedule work on it)."""
        return self._reactor

    # -- for the package's layers (Control, IncomingStreams, built-in protocols) ---------
    # Public so that the layers above the connection call the node through methods it
    # documents, not through its private fields; applications have no use for them.

    def register_acceptor(self, protocol: StreamProtocol, incoming: IncomingStreams) -> None:
        """Accept ``protocol`` into ``incoming`` (:meth:`Control.accept` calls this).

        Raises :class:`AlreadyRegistered` when another queue holds the protocol, and
        ``OSError`` (``EBADF``) once the node is closed."""
        with self._lock:
            self._check_open()
            self._registry.add(protocol, incoming)
        self._protocols_changed()

    def unregister_acceptor(self, protocol: str, incoming: IncomingStreams) -> None:
        """Stop accepting ``protocol`` if ``incoming`` still holds it."""
        with self._lock:
            if not self._registry.remove(protocol, incoming):
                return
        if not self._closed:
            self._protocols_changed()

    def supported_protocols(self) -> tuple[str, ...]:
        """The protocols we accept (built-in and registered), sorted."""
        return self._registry.protocols()

    def serve_on_reactor(self, protocol: str, handler: InternalHandler) -> None:
        """Serve ``protocol`` with ``handler(conn, stream)``, called on the reactor thread.

        The handler must not block; use :meth:`run_in_worker` for blocking work.
        """
        with self._lock:
            self._registry.add_internal(protocol, handler)

    def _protocols_changed(self) -> None:
        for hook in list(self.on_protocols_changed):
            try:
                hook()
            except Exception:
                log.exception("protocols-changed hook %r failed", hook)

    def run_in_worker(self, fn: Callable[..., Any], *args: Any,
                      peer: PeerId | None = None) -> Future | None:
        """Run blocking ``fn(*args)`` on the node's bounded handler thread pool.

        Returns None (the caller resets its stream) when the node is closed or the
        job is refused: at most ``Limits.max_handler_jobs`` jobs are queued or running,
        and at most ``Limits.max_handler_jobs_per_peer`` on behalf of ``peer``.
        """
        return self._workers.run(fn, *args, peer=peer)

    # -- connections (app-thread side) -------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise OSError(errno.EBADF, "the node is closed")

    def peer_for_open(self, peer: PeerLike) -> PeerId:
        """The peer ``open_stream`` talks to; a multiaddr's address is remembered.

        Raises ``ValueError`` for caller mistakes: malformed or unsupported addresses
        and multiaddrs that do not name a peer.
        """
        return self._dialer.peer_for_open(peer)

    def usable_connection(self, peer_id: PeerId, direct: bool = False) -> Connection | None:
        """An open connection to ``peer_id`` that takes new streams (direct ones first;
        only those with ``direct``), or None."""
        return self._table.usable(peer_id, direct)

    def connection_for(self, peer_id: PeerId, deadline: float,
                       direct: bool = False) -> Connection:
        """A healthy connection to ``peer_id``, dialing its known addresses if needed
        (for :meth:`Control.open_stream`; ``direct``: never a relayed one); raises
        :class:`OpenStreamError`. Concurrent callers share one dial per peer.
        """
        return self._dialer.connection_for(peer_id, deadline, direct)

    def dial_new_connection(self, addr: "str | Multiaddr", timeout: float | None
                            ) -> Connection:
        """Open a new connection to ``addr`` (which must end in ``/p2p/<id>``) even when
        one to that peer is open: AutoNAT's dial-back must prove a fresh dial works.
        The caller closes it (on the reactor). Raises as :meth:`dial` does."""
        return self._dialer.dial_new_connection(addr, timeout)

    def open_on(self, conn: Connection, protocol: StreamProtocol, deadline: float,
                lazy: bool = False) -> Stream:
        """Open a stream for ``protocol`` on ``conn``; wait until ``deadline`` (for
        :meth:`Control.open_stream`). Raises :class:`UnsupportedProtocol` or
        :class:`OpenStreamError`; a stream nobody got is reset."""
        return self._dialer.open_on(conn, protocol, deadline, lazy)

    # -- reactor side ----------------------------------------------------------------------
    def _shutdown(self, done: Future) -> None:
        """Close listeners and connections gracefully; resolve ``done`` once all are gone."""
        self._listeners.close()
        self.transports.close()
        self._table.close_all(done, _CLOSE_TIMEOUT - 1.0)


def _security_protocols(names: Sequence[str] | None) -> list[SecurityProtocol]:
    """The entries for ``Node(security=names)``; ValueError for an unknown or empty
    list, ``TlsUnavailable`` (an ImportError naming ``[tls]``) for TLS without
    pyOpenSSL."""
    if names is None:
        names = ("noise", "tls") if tls_available() else ("noise",)
    if isinstance(names, str):
        names = (names,)
    entries: list[SecurityProtocol] = []
    for name in names:
        entry = SECURITY_PROTOCOLS.get(name)
        if entry is None:
            raise ValueError(f"unknown security protocol {name!r} (noise or tls)")
        if entry not in entries:
            entries.append(entry)
    if not entries:
        raise ValueError("at least one security protocol is needed")
    if TLS in entries and not tls_available():
        raise TlsUnavailable("security 'tls' needs pyOpenSSL, which is not installed: "
                             "pip install 'libp2p_stream_sync[tls]'")
    return entries


def _as_peer_id(peer: "PeerId | str") -> PeerId:
    """``peer`` as a PeerId: a string is parsed (``ValueError`` when malformed)."""
    return peer if isinstance(peer, PeerId) else PeerId.from_string(peer)
