"""The :class:`Node`: listeners, dialing, the address book, connections and protocols."""

from __future__ import annotations

import dataclasses
import errno
import logging
import socket
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

from multiaddr import Multiaddr

from .addressbook import AddressBook
from .budget import BufferBudget
from .connection import MPLEX, YAMUX, Connection
from .control import Control, IncomingStreams, PeerLike, StreamProtocol
from .engines.mplex import MplexSession
from .engines.tls import TlsUnavailable, tls_available
from .engines.upgrade import (NOISE, PEER_MISMATCH_ERRORS, TLS, SecurityProtocol,
                              prepare_identities)
from .engines.yamux import YamuxSession
from .errors import DialError, OpenStreamError, PeerMismatchError, UnsupportedProtocol
from .futures import complete, fail, result, wait
from .identity import Keypair, PeerId
from .ipscope import IpScope
from .limits import Limits
from .logthrottle import LogThrottle
from .protocols import BuiltinProtocols, IdentifyInfo, PerfResult
from .protocols.autonat import AutoNAT, Reachability
from .protocols.perf import Progress
from .reactor import Reactor
from .registry import ProtocolRegistry
from .stream import Stream
from .timeouts import MAX_UNBOUNDED_WAIT, check_timeout, deadline_after, time_left
from .transport import Transports, tcp
from .transport.websocket import WebSocketTransport

if TYPE_CHECKING:
    from .interfaces import Muxer

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
    TLS, yamux/mplex.

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
                 public_networks: Iterable[str] = ()) -> None:
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
        naming the extra to install (``[tls]``, ``[ws]``) when ``security`` names TLS
        or ``listen`` a ``/ws`` address without its package.

        ``enable_autonat_server`` serves AutoNAT v1 and v2 (off by default: it makes us
        dial back whoever asks, within ``Limits.max_autonat_dialbacks*``).
        ``public_networks`` (CIDR strings) count as public IPs although they are in a
        special-use range (:class:`~.ipscope.IpScope`; for tests in private networks).
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
        self._inbound_count = 0
        self._outbound_count = 0
        self._lock = threading.Lock()
        #: Changed under _lock, read by the reactor without it (see registry.py).
        self._registry = ProtocolRegistry(
            self.limits.max_inbound_streams_per_protocol_per_peer)
        self._connections: dict[PeerId, list[Connection]] = {}
        self._addresses = AddressBook(self.limits.max_address_book_peers,
                                      lambda peer: bool(self._connections.get(peer)))
        self._pending: set[Connection] = set()
        self._dials: dict[PeerId, Future] = {}
        self._listeners: list[_Listener] = []
        self._closed = False
        self._reactor = Reactor(name=f"libp2p-reactor-{str(self.peer_id)[-6:]}")
        #: What our connections call up (interfaces.ConnectionOwner).
        self._owner = _NodeOwner(self, [SECURITY_PROTOCOLS[p] for p in self.security])
        self._max_handler_threads = max_handler_threads
        self._workers: ThreadPoolExecutor | None = None
        #: Handler jobs queued or running: in all, and per peer (guarded by _lock).
        self._jobs = 0
        self._jobs_per_peer: dict[PeerId, int] = {}
        self._refusals = LogThrottle()
        #: Called on the reactor thread with each connection once it is open.
        self.on_connection_ready: list[Callable[[Connection], None]] = []
        #: Called (on the thread that changed them) after our accepted protocols change.
        self.on_protocols_changed: list[Callable[[], None]] = []
        #: Picks a transport by multiaddr (TCP is the fallback, transport/__init__.py).
        self._transports = Transports(tcp.TcpTransport())
        self._transports.register(WebSocketTransport())
        self._builtins = BuiltinProtocols(self, enable_perf=enable_perf)
        #: Which IPs count as public (AutoNAT's choice of what to ask and to dial).
        self.ip_scope = IpScope(public_networks)
        self._autonat = AutoNAT(self, self.ip_scope, serve=enable_autonat_server)
        listeners: list[_Listener] = []
        try:
            for addr in listen:
                transport = self._transports.for_multiaddr(tcp.to_multiaddr(addr))
                listeners.append(_Listener(self, transport, transport.listen(addr)))
        except BaseException:
            for listener in listeners:
                listener.sock.close()
            self._reactor.close_resources()
            raise
        self._listeners = listeners
        self._reactor.start()
        ready: Future = Future()
        self._reactor.call_soon(self._start_listening, ready)
        ready.result(_CLOSE_TIMEOUT)

    def __repr__(self) -> str:
        return f"<Node {self.peer_id}>"

    def __enter__(self) -> "Node":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- public API ----------------------------------------------------------------------
    @property
    def listen_addrs(self) -> list[Multiaddr]:
        """The addresses we listen on, with the ports actually bound."""
        return [listener.multiaddr for listener in self._listeners]

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
        self._addresses.add(peer_id, self._book_entry(peer_id, addr), learned=False)

    def learn_address(self, peer_id: PeerId, addr: "str | Multiaddr") -> None:
        """Remember an address that ``peer_id`` advertised (identify calls this);
        learned addresses never evict configured ones. An address whose transport
        needs a package we lack (``/ws`` without wsproto) is not kept."""
        try:
            entry = self._book_entry(peer_id, addr)
        except ImportError:
            return
        self._addresses.add(peer_id, entry, learned=True)

    def _book_entry(self, peer_id: PeerId, addr: "str | Multiaddr") -> Multiaddr:
        """``addr`` as stored in the address book; ValueError if it is not for us."""
        ma = tcp.to_multiaddr(addr)
        target = self._transports.parse(ma)
        if target.peer_id is not None:
            if target.peer_id != peer_id:
                raise ValueError(f"address {ma} names peer {target.peer_id}, not {peer_id}")
            ma = ma.decapsulate_code(421) if hasattr(ma, "decapsulate_code") else ma
        return ma

    def addresses_of(self, peer_id: "PeerId | str") -> list[Multiaddr]:
        """The addresses we would dial for ``peer_id``: configured first, then learned."""
        return self._addresses.addresses_of(_as_peer_id(peer_id))

    def connections(self, peer: PeerId | None = None) -> list[Connection]:
        """A snapshot of our open connections (to ``peer``, or all), oldest first.

        For monitoring and tests: a connection's methods run on the reactor thread,
        except those its docstrings call thread-safe."""
        with self._lock:
            if peer is not None:
                return list(self._connections.get(peer, ()))
            return [conn for conns in self._connections.values() for conn in conns]

    def counts(self) -> dict[str, int]:
        """Approximate sizes of the node's connection tables, read without stopping
        the reactor: ``connections`` (open), ``pending`` (still upgrading),
        ``inbound``/``outbound`` (what ``Limits.max_inbound_connections`` and
        ``max_outbound_connections`` count), ``inbound_streams`` ((peer, protocol)
        pairs with inbound streams open)."""
        return {"connections": len(self.connections()), "pending": len(self._pending),
                "inbound": self._inbound_count, "outbound": self._outbound_count,
                "inbound_streams": len(self._registry.inbound_counts())}

    def connected_peers(self) -> list[PeerId]:
        """The peers we have at least one open connection with, right now."""
        with self._lock:
            return [peer for peer, conns in self._connections.items() if conns]

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
        self._check_open()
        seconds = check_timeout(timeout)
        target_or_peer = self._dial_target_of(addr)
        if seconds == 0:
            raise TimeoutError(f"dialing {addr} timed out at once: the timeout is 0")
        deadline = deadline_after(seconds, cap=MAX_UNBOUNDED_WAIT)
        if isinstance(target_or_peer, PeerId):
            return self._dial_peer(target_or_peer, deadline).remote_peer_id
        conn = self._dial_target(target_or_peer, deadline)
        if target_or_peer.peer_id is not None:
            self.add_address(target_or_peer.peer_id, addr)
        return conn.remote_peer_id

    def _dial_peer(self, peer_id: PeerId, deadline: float) -> Connection:
        """A connection to ``peer_id`` via its known addresses, with dial()'s errors."""
        try:
            return self.connection_for(peer_id, deadline)
        except OpenStreamError as exc:
            if exc.kind == "timeout":
                raise TimeoutError(str(exc)) from exc.__cause__
            error = PeerMismatchError if exc.kind == "wrong-peer" else DialError
            raise error(str(exc)) from exc.__cause__

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
        with self._lock:
            workers, self._workers = self._workers, None
        if workers is not None:
            # On the reactor thread (a hook closing the node) waiting could deadlock.
            workers.shutdown(wait=not self._reactor.in_reactor_thread(), cancel_futures=True)

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
        with self._lock:
            if self._closed or not self._admit_job(peer):
                return None
            if self._workers is None:
                self._workers = ThreadPoolExecutor(self._max_handler_threads,
                                                   thread_name_prefix="libp2p-handler")
            future = self._workers.submit(_logged, fn, *args)
        future.add_done_callback(lambda _: self._job_done(peer))
        return future

    def _admit_job(self, peer: PeerId | None) -> bool:
        """Count a new handler job (lock held); False when a job limit is reached."""
        limits = self.limits
        if self._jobs >= limits.max_handler_jobs:
            if self._refusals.ready("jobs"):
                log.warning("handler pool full (%d jobs queued or running): refusing work",
                            self._jobs)
            return False
        if peer is not None:
            count = self._jobs_per_peer.get(peer, 0)
            if count >= limits.max_handler_jobs_per_peer:
                if self._refusals.ready(("jobs", peer)):
                    log.warning("%s has %d handler jobs queued or running: refusing more",
                                peer, count)
                return False
            self._jobs_per_peer[peer] = count + 1
        self._jobs += 1
        return True

    def _job_done(self, peer: PeerId | None) -> None:
        with self._lock:
            self._jobs -= 1
            if peer is not None:
                left = self._jobs_per_peer.get(peer, 0) - 1
                if left > 0:
                    self._jobs_per_peer[peer] = left
                else:
                    self._jobs_per_peer.pop(peer, None)

    # -- muxers --------------------------------------------------------------------------
    def _make_muxer(self, protocol: str, initiator: bool) -> "Muxer":
        limits = self.limits
        if protocol == YAMUX:
            return YamuxSession(initiator, now=time.monotonic(),
                                max_window=limits.max_stream_buffer,
                                max_streams=limits.max_streams_per_connection,
                                max_pending_inbound=limits.yamux_backlog,
                                keepalive_interval=limits.keepalive_interval,
                                keepalive_timeout=limits.keepalive_timeout,
                                zero_copy=True)  # Noise hands out fresh buffers
        return MplexSession(initiator, max_streams=limits.max_streams_per_connection,
                            max_buffered_per_stream=limits.max_stream_buffer)

    # -- connections (app-thread side) -------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise OSError(errno.EBADF, "the node is closed")

    def peer_for_open(self, peer: PeerLike) -> PeerId:
        """The peer ``open_stream`` talks to; a multiaddr's address is remembered.

        Raises ``ValueError`` for caller mistakes: malformed or unsupported addresses
        and multiaddrs that do not name a peer.
        """
        target = self._dial_target_of(peer)
        if isinstance(target, PeerId):
            return target
        if target.peer_id is None:
            raise ValueError(f"{peer} names no peer: open_stream needs a multiaddr ending "
                             f"in /p2p/<peer id>, a PeerId or a peer id string "
                             f"(Node.dial accepts an address alone)")
        # The address the caller named is dialed first (if a dial is needed).
        self._addresses.add(target.peer_id, self._book_entry(target.peer_id, peer),
                            learned=False, first=True)
        return target.peer_id

    def usable_connection(self, peer_id: PeerId) -> Connection | None:
        """An open connection to ``peer_id`` that takes new streams, or None."""
        with self._lock:
            for conn in self._connections.get(peer_id, ()):
                if conn.usable_for_new_streams():
                    return conn
        return None

    def connection_for(self, peer_id: PeerId, deadline: float) -> Connection:
        """A healthy connection to ``peer_id``, dialing its known addresses if needed
        (for :meth:`Control.open_stream`); raises :class:`OpenStreamError`.

        Concurrent callers share one dial per peer.
        """
        if self._closed:
            raise OpenStreamError("the node is closed", "closed")
        conn = self.usable_connection(peer_id)
        if conn is not None:
            return conn
        with self._lock:
            shared = self._dials.get(peer_id)
            if shared is None:
                mine: Future = Future()
                self._dials[peer_id] = mine
        if shared is not None:
            try:
                return result(shared, max(0.0, deadline - time.monotonic()))
            except TimeoutError as exc:
                raise OpenStreamError(f"timed out connecting to {peer_id}", "timeout") \
                    from exc
            except OpenStreamError as exc:
                raise OpenStreamError(str(exc), exc.kind) from exc.__cause__
        try:
            conn = self._dial_known_addresses(peer_id, deadline)
        except BaseException as exc:
            mine.set_exception(exc)
            raise
        else:
            mine.set_result(conn)
            return conn
        finally:
            with self._lock:
                self._dials.pop(peer_id, None)

    def _dial_known_addresses(self, peer_id: PeerId, deadline: float) -> Connection:
        addrs = self.addresses_of(peer_id)
        if not addrs:
            raise OpenStreamError(f"no known address for peer {peer_id}", "no-address") \
                from ConnectionError(f"no address for peer {peer_id}")
        errors = []
        for ma in addrs:
            try:
                target = self._transports.parse(ma)
                return self._dial_target(dataclasses.replace(target, peer_id=peer_id),
                                         deadline)
            except OSError as exc:  # PeerMismatchError and TimeoutError included
                self._addresses.demote(peer_id, ma)
                if isinstance(exc, TimeoutError) and time.monotonic() >= deadline:
                    raise OpenStreamError(f"timed out connecting to {peer_id}",
                                          "timeout") from exc
                errors.append(exc)
        last = errors[-1]
        kind = ("wrong-peer" if isinstance(last, PeerMismatchError)
                else "timeout" if isinstance(last, TimeoutError) else "dial")
        raise OpenStreamError(f"cannot connect to {peer_id}: {last}", kind) from last

    def _dial_target_of(self, addr: Any) -> "PeerId | tcp.TcpTarget":
        """What the caller wants to reach: a peer (by id) or an address, parsed by the
        transport that handles it."""
        target = tcp.peer_id_or_multiaddr(addr)
        if isinstance(target, PeerId):
            return target
        return self._transports.parse(target)

    def dial_new_connection(self, addr: "str | Multiaddr", timeout: float | None
                            ) -> Connection:
        """Open a new connection to ``addr`` (which must end in ``/p2p/<id>``) even when
        one to that peer is open: AutoNAT's dial-back must prove a fresh dial works.
        The caller closes it (on the reactor). Raises as :meth:`dial` does."""
        target = self._dial_target_of(addr)
        if isinstance(target, PeerId) or target.peer_id is None:
            raise ValueError(f"{addr} must be a multiaddr ending in /p2p/<peer id>")
        return self._dial_target(target, deadline_after(check_timeout(timeout),
                                                        cap=MAX_UNBOUNDED_WAIT),
                                 reuse=False)

    def _dial_target(self, target: tcp.TcpTarget, deadline: float,
                     reuse: bool = True) -> Connection:
        """Dial (or join an in-flight dial) and wait for the connection until ``deadline``;
        ``reuse=False`` always makes a new connection."""
        self._check_open()
        peer = target.peer_id
        if peer is not None and reuse:
            conn = self.usable_connection(peer)
            if conn is not None:
                return conn
        errors: list[OSError] = []
        transport = target.transport
        for family, sockaddr in transport.resolve(target):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            future: Future = Future()
            self._reactor.call_soon(self._start_dial, transport, family, sockaddr, peer,
                                    future, min(remaining, self.limits.handshake_timeout))
            try:
                return result(future, remaining)
            except TimeoutError as exc:
                if time.monotonic() >= deadline:
                    raise TimeoutError(f"dialing {target.host}:{target.port} timed out") \
                        from None
                errors.append(exc)  # this attempt's handshake_timeout: try the next IP
            except OSError as exc:
                if isinstance(exc.__cause__, PEER_MISMATCH_ERRORS):
                    raise PeerMismatchError(str(exc.__cause__)) from exc
                errors.append(exc)
        if not errors:
            raise TimeoutError(f"dialing {target.host}:{target.port} timed out")
        last = errors[-1]
        if isinstance(last, TimeoutError):
            raise TimeoutError(f"dialing {target.host}:{target.port} timed out: {last}") \
                from last
        raise DialError(f"dial {target.host}:{target.port} failed: {last}") from last

    def open_on(self, conn: Connection, protocol: StreamProtocol, deadline: float,
                lazy: bool = False) -> Stream:
        """Open a stream for ``protocol`` on ``conn``; wait until ``deadline`` (for
        :meth:`Control.open_stream`). Raises :class:`UnsupportedProtocol` or
        :class:`OpenStreamError`; a stream nobody got is reset."""
        future: Future = Future()
        conn.open_stream(protocol, future, lazy)
        try:
            return self._wait_for_open(conn, protocol, future, deadline)
        except BaseException:
            # Whatever ended the wait (KeyboardInterrupt included), the reactor must
            # not keep a stream that nobody owns.
            _abandon_open(conn, future)
            raise

    @staticmethod
    def _wait_for_open(conn: Connection, protocol: StreamProtocol, future: Future,
                       deadline: float) -> Stream:
        try:
            return wait(future, time_left(deadline))
        except TimeoutError as exc:
            raise OpenStreamError(f"opening {protocol} to {conn.remote_peer_id} timed out",
                                  "timeout") from exc
        except UnsupportedProtocol:
            raise
        except ConnectionRefusedError as exc:
            raise OpenStreamError(f"opening {protocol} to {conn.remote_peer_id} refused: "
                                  f"{exc}", "refused") from exc
        except OSError as exc:
            raise OpenStreamError(f"opening {protocol} to {conn.remote_peer_id} failed: "
                                  f"{exc}", "connection-lost") from exc

    # -- reactor side ----------------------------------------------------------------------
    def _start_listening(self, ready: Future) -> None:
        for listener in self._listeners:
            self._reactor.register(listener.sock, 1, listener)
        complete(ready, None)

    def _start_dial(self, transport: Any, family: int, sockaddr: tuple,
                    expected: PeerId | None, future: Future, timeout: float) -> None:
        if self._closed:
            fail(future, ConnectionAbortedError("the node is closed"))
            return
        if future.cancelled():
            return
        if self._outbound_count >= self.limits.max_outbound_connections:
            fail(future, DialError(f"outbound connection limit reached "
                                   f"({self.limits.max_outbound_connections})"))
            return
        try:
            channel = transport.connect(family, sockaddr)
        except OSError as exc:
            fail(future, exc)
            return

        def on_ready(conn: Connection, error: BaseException | None) -> None:
            self._pending.discard(conn)
            if error is not None:
                fail(future, error)
                return
            self._connection_ready(conn)
            complete(future, conn)

        conn = Connection(self._owner, channel, initiator=True, remote_addr=sockaddr,
                          transport=transport, expected_peer=expected, on_ready=on_ready)
        self._outbound_count += 1
        self._pending.add(conn)
        conn.start(timeout)

    def _accepted(self, transport: Any, sock: socket.socket, addr: tuple) -> None:
        if self._inbound_count >= self.limits.max_inbound_connections:
            log.info("refusing a connection from %s: inbound limit (%d) reached", addr,
                     self.limits.max_inbound_connections)
            sock.close()
            return
        try:
            channel = transport.accepted(sock)
        except Exception as exc:  # e.g. setsockopt on a socket already reset
            log.info("dropping an inbound connection from %s: %s", addr, exc)
            sock.close()
            return

        def on_ready(conn: Connection, error: BaseException | None) -> None:
            self._pending.discard(conn)
            if error is not None:
                log.debug("inbound connection from %s failed: %s", addr, error)
            elif self._peer_connections_full(conn.remote_peer_id):
                # Closed from the next reactor turn: the caller is still using conn.
                self._reactor.call_soon(conn.abort, ConnectionRefusedError(
                    "too many connections from this peer"))
            else:
                self._connection_ready(conn)

        conn = Connection(self._owner, channel, initiator=False, remote_addr=addr,
                          transport=transport, on_ready=on_ready)
        self._inbound_count += 1
        self._pending.add(conn)
        conn.start(self.limits.handshake_timeout)

    def _peer_connections_full(self, peer: PeerId | None) -> bool:
        """Reactor: ``peer`` already holds ``Limits.max_connections_per_peer``."""
        with self._lock:
            count = len(self._connections.get(peer, ())) if peer is not None else 0
        if count < self.limits.max_connections_per_peer:
            return False
        if self._refusals.ready(("connections", peer)):
            log.warning("refusing a connection from %s: it has %d open already", peer,
                        count)
        return True

    def _connection_ready(self, conn: Connection) -> None:
        with self._lock:
            self._connections.setdefault(conn.remote_peer_id, []).append(conn)
        log.debug("connected to %s via %s (%s)", conn.remote_peer_id, conn.remote_addr,
                  conn.muxer_protocol)
        for hook in list(self.on_connection_ready):
            try:
                hook(conn)
            except Exception:
                log.exception("connection-ready hook %r failed", hook)

    def _connection_closed(self, conn: Connection, was_open: bool) -> None:
        self._pending.discard(conn)
        if conn.initiator:
            self._outbound_count -= 1
        else:
            self._inbound_count -= 1
        if not was_open:
            return
        with self._lock:
            conns = self._connections.get(conn.remote_peer_id)
            if conns and conn in conns:
                conns.remove(conn)
                if not conns:
                    del self._connections[conn.remote_peer_id]

    def _shutdown(self, done: Future) -> None:
        """Close listeners and connections gracefully; resolve ``done`` once all are gone."""
        for listener in self._listeners:
            listener.close()
        with self._lock:
            conns = [c for cs in self._connections.values() for c in cs]
        for conn in conns + list(self._pending):
            conn.close()
        self._await_connections_closed(done, time.monotonic() + _CLOSE_TIMEOUT - 1.0)

    def _await_connections_closed(self, done: Future, deadline: float) -> None:
        with self._lock:
            left = [c for cs in self._connections.values() for c in cs]
        if left and time.monotonic() < deadline:
            self._reactor.call_later(0.01, lambda: self._await_connections_closed(done, deadline))
            return
        for conn in left:
            conn.abort(ConnectionAbortedError("the node closed"))
        complete(done, None)


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


def _abandon_open(conn: Connection, future: Future) -> None:
    """Undo an open whose waiter left: cancel it, or reset the stream it produced."""
    if future.cancel():
        conn.abandon_open(future)  # drops a negotiation already under way
    else:  # done, or being completed by the reactor this very moment
        future.add_done_callback(_reset_opened_stream)


def _reset_opened_stream(future: Future) -> None:
    if not future.cancelled() and future.exception() is None:
        future.result().reset()


def _logged(fn: Callable[..., Any], *args: Any) -> Any:
    try:
        return fn(*args)
    except Exception:
        log.exception("handler %r failed", fn)
        raise


class _NodeOwner:
    """The node as its connections see it (:class:`~.interfaces.ConnectionOwner`):
    the only calls a connection makes up."""

    def __init__(self, node: Node, security: Sequence[SecurityProtocol]) -> None:
        self._node = node
        self.keypair = node.keypair
        self.limits = node.limits
        self.muxers = node.muxers
        self.security = tuple(security)
        self.security_identities = prepare_identities(node.keypair, security)
        self.buffer_budget = BufferBudget(node.limits.max_peer_buffer,
                                          node.limits.max_node_buffer)
        self.reactor = node._reactor
        registry = node._registry
        self.protocol_supported = registry.supports
        self.supported_protocols = registry.protocols
        self.inbound_stream = registry.deliver
        self.inbound_stream_finished = registry.finished
        self.make_muxer = node._make_muxer
        self._inbound_streams = 0
        self._inbound_streams_by_peer: dict[PeerId, int] = {}
        self._refusals = LogThrottle()

    def admit_inbound_stream(self, peer: PeerId) -> bool:
        """Count a new inbound stream of ``peer``; False beyond
        ``Limits.max_inbound_streams_per_peer`` or ``Limits.max_inbound_streams``."""
        limits = self.limits
        mine = self._inbound_streams_by_peer.get(peer, 0)
        if (mine >= limits.max_inbound_streams_per_peer
                or self._inbound_streams >= limits.max_inbound_streams):
            if self._refusals.ready(peer):
                log.warning("resetting new streams from %s: it has %d open, the node %d "
                            "(bounds %d per peer, %d in all)", peer, mine,
                            self._inbound_streams, limits.max_inbound_streams_per_peer,
                            limits.max_inbound_streams)
            return False
        self._inbound_streams_by_peer[peer] = mine + 1
        self._inbound_streams += 1
        return True

    def inbound_stream_gone(self, peer: PeerId) -> None:
        """An inbound stream :meth:`admit_inbound_stream` counted is gone."""
        self._inbound_streams -= 1
        left = self._inbound_streams_by_peer.get(peer, 0) - 1
        if left > 0:
            self._inbound_streams_by_peer[peer] = left
        else:
            self._inbound_streams_by_peer.pop(peer, None)

    def connection_closed(self, conn: Connection, was_open: bool) -> None:
        self._node._connection_closed(conn, was_open)


class _Listener:
    """A listening socket; accepts on the reactor thread."""

    _ACCEPTS_PER_WAKEUP = 64

    def __init__(self, node: Node, transport: Any, sock: socket.socket) -> None:
        self.node = node
        self.transport = transport
        self.sock = sock
        self.multiaddr = transport.bound_multiaddr(sock)

    def on_readable(self) -> None:
        for _ in range(self._ACCEPTS_PER_WAKEUP):
            try:
                sock, addr = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE and friends: log, try again later
                log.warning("accept failed on %s: %s", self.multiaddr, exc)
                return
            self.node._accepted(self.transport, sock, addr)

    def on_writable(self) -> None:  # pragma: no cover - never registered for writing
        pass

    def close(self) -> None:
        self.node._reactor.unregister(self.sock)
        self.sock.close()
