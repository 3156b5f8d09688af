"""Built-in protocols: identify (and push), ping, perf.

The node owns one :class:`BuiltinProtocols` (composition: it talks to the node only
through :class:`BuiltinHost`, public node methods) and delegates its client calls to it.

Responders are registered with ``host.serve_on_reactor``: their handlers run on the
reactor thread. ping and identify push are served there too (a silent peer holds no
thread, only a timer); perf hands its streams to the node's bounded worker pool. The
identify client runs on the reactor for every new connection, as go-libp2p and
js-libp2p do, and a change of our protocols is pushed to every connected peer.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Protocol

from ..control import Control, PeerLike
from ..errors import OpenStreamError, ProtocolError
from ..identity import PeerId
from ..timeouts import check_timeout, deadline_after, time_left
from . import identify, perf as _perf, ping as _ping
from .identify import IdentifyInfo
from .perf import PerfResult

if TYPE_CHECKING:
    from ..connection import Connection
    from ..stream import Stream

log = logging.getLogger(__name__)

__all__ = ["BuiltinProtocols", "IdentifyInfo", "PerfResult"]

#: How many peers' identify information we keep (least recently updated dropped first).
MAX_KNOWN_PEERS = 4096
#: At most this many of a peer's advertised listen addresses go into the address book.
MAX_ADDRS_PER_PEER = 16


class _IdentifyFailed:
    """Marker stored when a peer's identify failed, so waiters stop at once."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


class BuiltinHost(Protocol):
    """What the built-in protocols need of their node (public :class:`Node` methods)."""

    keypair: Any
    peer_id: PeerId
    on_connection_ready: list[Callable[["Connection"], None]]
    on_protocols_changed: list[Callable[[], None]]

    @property
    def reactor(self) -> Any: ...

    @property
    def closed(self) -> bool: ...

    @property
    def listen_addrs(self) -> list[Any]: ...

    def serve_on_reactor(self, protocol: str,
                         handler: Callable[["Connection", "Stream"], None]) -> None: ...

    def run_in_worker(self, fn: Callable[..., Any], *args: Any,
                      peer: PeerId | None = None) -> Any: ...

    def open_on(self, conn: "Connection", protocol: Any, deadline: float) -> "Stream": ...

    def usable_connection(self, peer_id: PeerId) -> "Connection | None": ...

    def connected_peers(self) -> list[PeerId]: ...

    def learn_address(self, peer_id: PeerId, addr: Any) -> None: ...

    def new_control(self) -> Control: ...

    def supported_protocols(self) -> tuple[str, ...]: ...


class BuiltinProtocols:
    """The built-in protocols of one node: their handlers, identify's results, and
    the client calls the node exposes (``ping``, ``perf``, ``wait_identified``, ...)."""

    def __init__(self, host: BuiltinHost, *, enable_perf: bool = False) -> None:
        self._host = host
        self._identify_timeout = identify.DEFAULT_TIMEOUT
        self._peer_info: collections.OrderedDict[PeerId, IdentifyInfo | _IdentifyFailed] = \
            collections.OrderedDict()
        self._info_changed = threading.Condition()
        self._push_lock = threading.Lock()
        self._push_pending = False
        self._ping_responder = _ping.PingResponder()
        self._push_receiver = identify.PushReceiver(
            self._identify_timeout,
            lambda peer, message: self._store_message(peer, message, push=True))
        host.serve_on_reactor(identify.PROTOCOL, identify.responder(host))
        host.serve_on_reactor(identify.PUSH_PROTOCOL, self._on_identify_push)
        host.serve_on_reactor(_ping.PROTOCOL, self._on_ping)
        if enable_perf:
            host.serve_on_reactor(_perf.PROTOCOL, self._on_perf)
        host.on_connection_ready.append(self._on_new_connection)
        host.on_protocols_changed.append(self._schedule_push)

    # -- public API ------------------------------------------------------------------------
    def peer_protocols(self, peer: PeerId) -> list[str]:
        """The protocols ``peer`` said it supports (identify/push); empty when unknown."""
        info = self.identify_info(peer)
        return list(info.protocols) if info is not None else []

    def identify_info(self, peer: PeerId) -> IdentifyInfo | None:
        """A copy of what ``peer`` told us through identify, or None if nothing yet."""
        with self._info_changed:
            info = self._peer_info.get(peer)
            if not isinstance(info, IdentifyInfo):
                return None
            return _copy_info(info)

    def wait_identified(self, peer: PeerId, timeout: float | None = 10.0) -> IdentifyInfo:
        """Wait until ``peer`` has been identified; return its :class:`IdentifyInfo`.

        Raises ``TimeoutError`` when ``timeout`` passes and :class:`OpenStreamError`
        when identifying the peer failed (e.g. it does not speak identify) or the node
        is closed (``kind`` ``"closed"``). ``None`` waits until identify of a
        connection to the peer ends, which is bounded once connected.
        """
        deadline = deadline_after(check_timeout(timeout))
        with self._info_changed:
            while True:
                if self._host.closed:
                    raise OpenStreamError("the node is closed", "closed")
                info = self._peer_info.get(peer)
                if isinstance(info, IdentifyInfo):
                    return _copy_info(info)
                if isinstance(info, _IdentifyFailed):
                    raise OpenStreamError(f"identify of {peer} failed: {info.reason}",
                                          "io")
                remaining = time_left(deadline)
                if remaining == 0:
                    raise TimeoutError(f"{peer} was not identified within {timeout} s")
                self._info_changed.wait(remaining)

    def ping(self, peer: PeerLike, count: int = 1, timeout: float | None = 10.0
             ) -> list[float]:
        """Ping ``peer`` ``count`` times on one stream; return each round trip in seconds.

        The echoed bytes are checked (:class:`~.ping.PingMismatch` when they differ).
        Raises ``TimeoutError``/:class:`OpenStreamError` when ``timeout`` passes. With
        ``None`` a round trip still fails after ``timeouts.STALL_TIMEOUT`` seconds.
        """
        if count < 1:
            raise ValueError("count must be at least 1")
        seconds = check_timeout(timeout)
        deadline = deadline_after(seconds)
        stream = self._host.new_control().open_stream(peer, _ping.PROTOCOL, timeout=seconds)
        try:
            rtts = _ping.ping_stream(stream, count, deadline)
        except BaseException:
            stream.reset()
            raise
        stream.close()
        return rtts

    def perf(self, peer: PeerLike, upload_bytes: int, download_bytes: int, *,
             timeout: float | None = 60.0, progress: _perf.Progress | None = None
             ) -> PerfResult:
        """Run the perf protocol: send ``upload_bytes``, receive ``download_bytes``.

        ``progress(uploaded, downloaded)`` is called as bytes move. Raises
        :class:`UnsupportedProtocol` when the peer does not serve perf. With
        ``timeout=None`` the run has no deadline, but fails when no byte moves for
        ``timeouts.STALL_TIMEOUT`` seconds.
        """
        seconds = check_timeout(timeout)
        deadline = deadline_after(seconds)
        stream = self._host.new_control().open_stream(peer, _perf.PROTOCOL, timeout=seconds)
        try:
            result = _perf.run(stream, upload_bytes, download_bytes, deadline, progress)
        except BaseException:
            stream.reset()
            raise
        stream.close()
        return result

    def release_waiters(self) -> None:
        """The node is closing: wake every ``wait_identified`` so it raises."""
        with self._info_changed:
            self._info_changed.notify_all()

    # -- responders (reactor thread: never block) -------------------------------------------
    def _on_ping(self, conn: "Connection", stream: "Stream") -> None:
        if not self._ping_responder.start(conn, stream, self._host.reactor.call_later):
            log.debug("too many ping streams from %s: resetting one", stream.peer_id)
            stream.reset()

    def _on_perf(self, conn: "Connection", stream: "Stream") -> None:
        if self._host.run_in_worker(_perf.serve, stream, peer=stream.peer_id) is None:
            stream.reset()

    def _on_identify_push(self, conn: "Connection", stream: "Stream") -> None:
        if not self._push_receiver.start(conn, stream, self._host.reactor.call_later):
            log.debug("too many identify pushes from %s: resetting one", stream.peer_id)
            stream.reset()

    # -- identify client -------------------------------------------------------------------
    def _on_new_connection(self, conn: "Connection") -> None:
        """Reactor: ask the peer on ``conn`` who it is (no thread hand-off per connection)."""
        peer = conn.remote_peer_id
        assert peer is not None  # connections are ready only once authenticated

        def answered(data: bytes | None, error: BaseException | None) -> None:
            if error is not None:
                log.debug("identify of %s failed: %s", peer, error)
                self._store_failure(peer, str(error) or type(error).__name__)
                return
            try:
                message = identify.merge_messages(identify.split_messages(data))
            except ProtocolError as exc:
                log.info("identify of %s failed: %s", peer, exc)
                self._store_failure(peer, str(exc))
                return
            self._store_message(peer, message, push=False)
            log.debug("identified %s: %s, %d protocols", peer,
                      message.get("agentVersion", "?"), len(message.get("protocols", ())))

        conn.collect(identify.PROTOCOL, identify.MAX_RECEIVE_SIZE, self._identify_timeout,
                     answered)

    def _store_message(self, peer: PeerId, message: dict, *, push: bool) -> None:
        """Reactor: apply an identify message (or push) from ``peer``.

        Parsing happens outside ``_info_changed``: nobody waits on that lock for it.
        """
        with self._info_changed:
            current = self._peer_info.get(peer)
        info = _copy_info(current) if isinstance(current, IdentifyInfo) \
            else IdentifyInfo(peer)
        try:
            identify.apply_message(info, message, push=push)
        except ProtocolError as exc:
            log.info("ignoring identify from %s: %s", peer, exc)
            if current is None:
                self._store_failure(peer, str(exc))
            return
        with self._info_changed:
            self._remember_locked(peer, info)
        for addr in info.listen_addrs[:MAX_ADDRS_PER_PEER]:
            try:
                self._host.learn_address(peer, addr)
            except ValueError:
                pass  # not a TCP address: we cannot dial it anyway

    def _store_failure(self, peer: PeerId, reason: str) -> None:
        with self._info_changed:
            if not isinstance(self._peer_info.get(peer), IdentifyInfo):
                self._store_failure_locked(peer, reason)

    def _store_failure_locked(self, peer: PeerId, reason: str) -> None:
        self._remember_locked(peer, _IdentifyFailed(reason))

    def _remember_locked(self, peer: PeerId, value: IdentifyInfo | _IdentifyFailed) -> None:
        self._peer_info[peer] = value
        self._peer_info.move_to_end(peer)
        while len(self._peer_info) > MAX_KNOWN_PEERS:
            self._peer_info.popitem(last=False)
        self._info_changed.notify_all()

    # -- identify push ---------------------------------------------------------------------
    def _schedule_push(self) -> None:
        """Our protocols changed: push identify to connected peers (coalesced)."""
        with self._push_lock:
            if self._push_pending:
                return
            self._push_pending = True
        if self._host.run_in_worker(self._push_to_all) is None:
            with self._push_lock:
                self._push_pending = False

    def _push_to_all(self) -> None:
        with self._push_lock:
            self._push_pending = False
        for peer in self._host.connected_peers():
            info = self.identify_info(peer)
            if info is not None and identify.PUSH_PROTOCOL not in info.protocols:
                continue
            conn = self._host.usable_connection(peer)
            if conn is not None:
                self._push_on(conn)

    def _push_on(self, conn: "Connection") -> None:
        deadline = time.monotonic() + self._identify_timeout
        try:
            stream = self._host.open_on(conn, identify.PUSH_PROTOCOL, deadline)
        except OpenStreamError as exc:
            log.debug("identify push to %s failed: %s", conn.remote_peer_id, exc)
            return
        try:
            stream.settimeout(max(0.0, deadline - time.monotonic()))
            stream.write(identify.build_message(self._host, conn))
            stream.close()
        except OSError as exc:
            log.debug("identify push to %s failed: %s", conn.remote_peer_id, exc)
            stream.reset()


def _copy_info(info: IdentifyInfo) -> IdentifyInfo:
    return IdentifyInfo(info.peer_id, list(info.protocols), list(info.listen_addrs),
                        info.observed_addr, info.agent_version, info.protocol_version,
                        info.public_key)
