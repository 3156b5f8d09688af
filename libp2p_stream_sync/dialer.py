"""Dialing: from a peer or an address to an open connection, and opening streams on it."""

from __future__ import annotations

import dataclasses
import errno
import threading
import time
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, Callable

from .connection import Connection
from .engines.upgrade import PEER_MISMATCH_ERRORS
from .errors import DialError, OpenStreamError, PeerMismatchError, UnsupportedProtocol
from .futures import complete, fail, result, wait
from .identity import PeerId
from .timeouts import MAX_UNBOUNDED_WAIT, check_timeout, deadline_after, time_left
from .transport import tcp

if TYPE_CHECKING:
    from .addressbook import AddressBook
    from .conntable import ConnectionTable
    from .limits import Limits
    from .node_owner import NodeOwner
    from .reactor import Reactor
    from .stream import Stream
    from .transport import Transports


class Dialer:
    """Turns a peer id or a target address into an open connection: tries the peer's
    known addresses (QUIC ones first, then the address book's order; demoting those
    that fail), each
    resolved address in turn within ``Limits.handshake_timeout``, and shares one dial
    per peer between concurrent callers (``_dials``, guarded by ``_lock``). Also opens
    streams on a connection (:meth:`open_on`)."""

    def __init__(self, owner: "NodeOwner", table: "ConnectionTable",
                 transports: "Transports", addresses: "AddressBook",
                 is_closed: Callable[[], bool]) -> None:
        self._owner = owner
        self._table = table
        self._transports = transports
        self._addresses = addresses
        self._is_closed = is_closed
        self._reactor: Reactor = owner.reactor
        self._limits: Limits = owner.limits
        self._lock = threading.Lock()
        self._dials: dict[PeerId, Future] = {}

    def _check_open(self) -> None:
        """Raise ``OSError`` (``EBADF``) once the node is closed."""
        if self._is_closed():
            raise OSError(errno.EBADF, "the node is closed")

    def target_of(self, addr: Any) -> "PeerId | tcp.TcpTarget":
        """What the caller wants to reach: a peer (by id) or an address, parsed by the
        transport that handles it."""
        target = tcp.peer_id_or_multiaddr(addr)
        if isinstance(target, PeerId):
            return target
        return self._transports.parse(target)

    def book_entry(self, peer_id: PeerId, addr: Any) -> Any:
        """``addr`` as the address book stores it for ``peer_id`` (without its
        ``/p2p/`` part); ValueError if it is malformed, unsupported or names another
        peer."""
        ma = tcp.to_multiaddr(addr)
        target = self._transports.parse(ma)
        if target.peer_id is not None:
            if target.peer_id != peer_id:
                raise ValueError(f"address {ma} names peer {target.peer_id}, not {peer_id}")
            ma = ma.decapsulate_code(421) if hasattr(ma, "decapsulate_code") else ma
        return ma

    def peer_for_open(self, peer: Any) -> PeerId:
        """``Node.peer_for_open``: the peer ``open_stream`` talks to; a multiaddr's
        address is remembered (dialed first); ValueError for caller mistakes."""
        target = self.target_of(peer)
        if isinstance(target, PeerId):
            return target
        if target.peer_id is None:
            raise ValueError(f"{peer} names no peer: open_stream needs a multiaddr ending "
                             f"in /p2p/<peer id>, a PeerId or a peer id string "
                             f"(Node.dial accepts an address alone)")
        self._addresses.add(target.peer_id, self.book_entry(target.peer_id, peer),
                            learned=False, first=True)
        return target.peer_id

    def dial(self, addr: Any, timeout: float | None) -> PeerId:
        """``Node.dial``: connect to an address or a peer; the proven peer id."""
        self._check_open()
        seconds = check_timeout(timeout)
        target_or_peer = self.target_of(addr)
        if seconds == 0:
            raise TimeoutError(f"dialing {addr} timed out at once: the timeout is 0")
        deadline = deadline_after(seconds, cap=MAX_UNBOUNDED_WAIT)
        if isinstance(target_or_peer, PeerId):
            return self._dial_peer(target_or_peer, deadline).remote_peer_id
        conn = self.dial_target(target_or_peer, deadline)
        if target_or_peer.peer_id is not None:
            peer_id = target_or_peer.peer_id
            self._addresses.add(peer_id, self.book_entry(peer_id, addr), learned=False)
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

    def connection_for(self, peer_id: PeerId, deadline: float,
                       direct: bool = False) -> Connection:
        """A healthy connection to ``peer_id``, dialing its known addresses if needed;
        raises :class:`OpenStreamError` (``kind`` ``"relayed"`` when ``direct`` and
        the only connection runs through a relay). Concurrent callers share one dial
        per peer."""
        conn = self._connection_for(peer_id, deadline)
        if direct and getattr(conn, "relayed", False):
            conn = self._table.usable(peer_id, direct=True) or conn
            if getattr(conn, "relayed", False):
                raise OpenStreamError(f"no direct connection to {peer_id}: only a "
                                      f"relayed one", "relayed")
        return conn

    def _connection_for(self, peer_id: PeerId, deadline: float) -> Connection:
        if self._is_closed():
            raise OpenStreamError("the node is closed", "closed")
        conn = self._table.usable(peer_id)
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
        addrs = self._addresses.addresses_of(peer_id)
        if not addrs:
            raise OpenStreamError(f"no known address for peer {peer_id}", "no-address") \
                from ConnectionError(f"no address for peer {peer_id}")
        errors = []
        for ma in self._muxed_first(addrs):
            try:
                target = self._transports.parse(ma)
                return self.dial_target(dataclasses.replace(target, peer_id=peer_id),
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

    def dial_new_connection(self, addr: Any, timeout: float | None) -> Connection:
        """A new connection to ``addr`` (a multiaddr ending in ``/p2p/<id>``), even when
        one to that peer is open (``Node.dial_new_connection``)."""
        target = self.target_of(addr)
        if isinstance(target, PeerId) or target.peer_id is None:
            raise ValueError(f"{addr} must be a multiaddr ending in /p2p/<peer id>")
        deadline = deadline_after(check_timeout(timeout), cap=MAX_UNBOUNDED_WAIT)
        return self.dial_target(target, deadline, reuse=False)

    def _muxed_first(self, addrs: list) -> list:
        """``addrs`` with those of a muxed transport (QUIC) first, as go-libp2p ranks
        them (one round trip less to set up); otherwise in the address book's order."""
        return sorted(addrs, key=lambda ma: getattr(self._transports.for_multiaddr(ma),
                                                    "kind", None) != "muxed")

    def dial_target(self, target: tcp.TcpTarget, deadline: float,
                    reuse: bool = True) -> Connection:
        """Dial ``target`` (reusing an open connection to its peer unless ``reuse`` is
        False) and wait for the connection until ``deadline``; raises ``DialError``,
        ``PeerMismatchError``, ``TimeoutError``."""
        self._check_open()
        peer = target.peer_id
        if peer is not None and reuse:
            conn = self._table.usable(peer)
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
                                    future, min(remaining, self._limits.handshake_timeout))
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

    def start_punch_dial(self, target: tcp.TcpTarget, source: tuple, initiator: bool,
                         future: Future, timeout: float) -> None:
        """Reactor: one new connection attempt to ``target`` (an IP address) from the
        local ``source`` address (our listen port), upgraded as the ``initiator`` or
        the responder (a DCUtR hole punch); resolves ``future`` with the connection."""
        self._start_dial(target.transport, target.family, (target.host, target.port),
                         target.peer_id, future, timeout, source, initiator)

    def _start_dial(self, transport: Any, family: int, sockaddr: tuple,
                    expected: PeerId | None, future: Future, timeout: float,
                    source: tuple | None = None, initiator: bool = True) -> None:
        """Reactor: connect and start the upgrade, unless the node or limits forbid."""
        if self._is_closed():
            fail(future, ConnectionAbortedError("the node is closed"))
            return
        if future.cancelled():
            return
        table = self._table
        if table.outbound_count >= self._limits.max_outbound_connections:
            fail(future, DialError(f"outbound connection limit reached "
                                   f"({self._limits.max_outbound_connections})"))
            return

        def on_ready(conn: Connection, error: BaseException | None) -> None:
            table.pending.discard(conn)
            if error is not None:
                fail(future, error)
                return
            table.connection_ready(conn)
            complete(future, conn)

        try:
            if getattr(transport, "kind", None) == "muxed":  # QUIC: no byte channel
                conn = transport.new_connection(family, sockaddr, expected, on_ready)
            else:
                channel = (transport.connect(family, sockaddr) if source is None
                           else transport.connect(family, sockaddr, source))
                conn = Connection(self._owner, channel, initiator=initiator,
                                  remote_addr=sockaddr, transport=transport,
                                  expected_peer=expected, on_ready=on_ready,
                                  connecting=True)
        except OSError as exc:
            fail(future, exc)
            return
        table.add_pending(conn)
        conn.start(timeout)

    def open_on(self, conn: Connection, protocol: str, deadline: float,
                lazy: bool = False) -> "Stream":
        """Open a stream for ``protocol`` on ``conn``; wait until ``deadline``. Raises
        :class:`UnsupportedProtocol` or :class:`OpenStreamError`; a stream nobody got
        is reset."""
        future: Future = Future()
        conn.open_stream(protocol, future, lazy)
        try:
            return _wait_for_open(conn, protocol, future, deadline)
        except BaseException:
            # Whatever ended the wait (KeyboardInterrupt included), the reactor must
            # not keep a stream that nobody owns.
            _abandon_open(conn, future)
            raise


def _wait_for_open(conn: Connection, protocol: str, future: Future,
                   deadline: float) -> "Stream":
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


def _abandon_open(conn: Connection, future: Future) -> None:
    """Undo an open whose waiter left: cancel it, or reset the stream it produced."""
    if future.cancel():
        conn.abandon_open(future)  # drops a negotiation already under way
    else:  # done, or being completed by the reactor this very moment
        future.add_done_callback(_reset_opened_stream)


def _reset_opened_stream(future: Future) -> None:
    if not future.cancelled() and future.exception() is None:
        future.result().reset()
