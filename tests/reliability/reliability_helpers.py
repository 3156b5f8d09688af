"""Helpers for the reliability tests: raw engine clients over plain sockets, an echo
server on a small thread pool, resource probes (threads, fds, RSS)."""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import pytest

from libp2p_stream_sync import Keypair, Node
from libp2p_stream_sync.engines import muxer_events as mev
from libp2p_stream_sync.engines.multistream import (Agreed, MultistreamDialer,
                                                    encode_message)
from libp2p_stream_sync.engines.noise import NoiseHandshake
from libp2p_stream_sync.engines.yamux import YamuxSession
from libp2p_stream_sync.limits import Limits

ECHO = "/echo/1.0.0"
YAMUX = "/yamux/1.0.0"
MPLEX = "/mplex/6.7.0"


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0,
               interval: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True


def p2p_addr(node: Node) -> str:
    return f"{node.listen_addrs[0]}/p2p/{node.peer_id}"


def host_port(node: Node) -> tuple[str, int]:
    ma = str(node.listen_addrs[0]).split("/")
    return ma[2], int(ma[4])


# -- resource probes ---------------------------------------------------------------------
def rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def node_tables(node: Node) -> dict:
    """Sizes of the node's internal tables (read from the test thread: approximate)."""
    counts = node.counts()
    conns = node.connections()
    return {
        "connections": counts["connections"],
        "pending": counts["pending"],
        "inbound_count": counts["inbound"],
        "outbound_count": counts["outbound"],
        "inbound_streams": counts["inbound_streams"],
        "streams": sum(c.stream_counts()["streams"] for c in conns),
        "negotiating": sum(c.stream_counts()["negotiating"] for c in conns),
    }


# -- echo server on a bounded pool ----------------------------------------------------------
class PoolEchoServer:
    """Echo every stream of ``protocol`` on ``node`` with a bounded worker pool."""

    def __init__(self, node: Node, protocol: str = ECHO, workers: int = 32,
                 capacity: int = 1024) -> None:
        self.incoming = node.new_control().accept(protocol, capacity=capacity)
        self.errors: list[BaseException] = []
        self.served = 0
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="echo")
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        for _peer, stream in self.incoming:
            try:
                self._pool.submit(self._echo, stream)
            except RuntimeError:
                stream.reset()

    def _echo(self, stream) -> None:
        try:
            stream.settimeout(20)
            while True:
                data = stream.read(1 << 20)
                if not data:
                    break
                stream.write(data)
            stream.close()
            self.served += 1
        except OSError:
            pass  # hostile peers reset streams; that is their business
        except Exception as exc:  # surfaced by tests that look at .errors
            self.errors.append(exc)

    def close(self) -> None:
        self.incoming.close()
        self._thread.join(5)
        self._pool.shutdown(wait=True, cancel_futures=True)


def echo_once(control, peer, payload: bytes, timeout: float = 10.0) -> None:
    """Open an echo stream, send ``payload``, half-close, check what comes back."""
    with control.open_stream(peer, ECHO, timeout=timeout) as stream:
        stream.settimeout(timeout)
        stream.write(payload)
        stream.close_write()
        back = stream.readall()
    assert hashlib.sha256(back).digest() == hashlib.sha256(payload).digest(), \
        f"echo mismatch: sent {len(payload)} bytes, got {len(back)}"


# -- raw clients built from our own sans-IO engines -------------------------------------------
def connect_raw(node: Node, timeout: float = 5.0) -> socket.socket:
    sock = socket.create_connection(host_port(node), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def closed_by_peer(sock: socket.socket, timeout: float) -> float | None:
    """Read (and discard) until the peer closes; seconds it took, or None on timeout."""
    start = time.monotonic()
    deadline = start + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        sock.settimeout(remaining)
        try:
            data = sock.recv(65536)
        except socket.timeout:
            return None
        except (ConnectionResetError, BrokenPipeError):
            return time.monotonic() - start
        if not data:
            return time.monotonic() - start


def send_quietly(sock: socket.socket, data: bytes) -> bool:
    """Send; False if the peer already closed (that is often what we expect)."""
    try:
        sock.sendall(data)
        return True
    except (BrokenPipeError, ConnectionResetError):
        return False


class SecureClient:
    """A raw connection secured with our own engines, for misbehaving above Noise."""

    def __init__(self, node: Node, *, keypair: Keypair | None = None,
                 muxer: str = YAMUX, handshake: NoiseHandshake | None = None,
                 timeout: float = 5.0) -> None:
        self.keypair = keypair or Keypair.generate()
        self.sock = connect_raw(node, timeout)
        self.sock.settimeout(timeout)
        dialer = MultistreamDialer(["/noise"], lazy=True)
        self.hs = handshake or NoiseHandshake(self.keypair, initiator=True,
                                              expected_peer=node.peer_id, muxers=[muxer])
        # lazy multistream: header, proposal and the first Noise message in one write
        self.sock.sendall(dialer.data_to_send() + self.hs.data_to_send())
        leftover = b""
        while True:
            result = dialer.receive_data(self._recv())
            if isinstance(result, Agreed):
                leftover = result.leftover
                break
        if leftover:
            self.hs.receive_data(leftover)
        while not self.hs.complete:
            self.hs.receive_data(self._recv())
        self.sock.sendall(self.hs.data_to_send())
        self.transport, rest = self.hs.to_transport()
        self.muxer_protocol = self.hs.selected_muxer()
        self.plain = bytearray(self.transport.receive_data(rest))

    def _recv(self) -> bytes:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionResetError("closed by the node")
        return data

    def send_plain(self, data: bytes) -> bool:
        return send_quietly(self.sock, bytes(self.transport.encrypt(data)))

    def recv_plain(self, timeout: float = 5.0) -> bytes:
        """Decrypted bytes from the node (b"" when it closed)."""
        if self.plain:
            out, self.plain = bytes(self.plain), bytearray()
            return out
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError:
            return b""
        return bytes(self.transport.receive_data(data)) if data else b""

    def close(self) -> None:
        self.sock.close()


class YamuxClient(SecureClient):
    """A SecureClient with a yamux session: enough to open echo streams by hand."""

    def __init__(self, node: Node, **kw) -> None:
        super().__init__(node, muxer=YAMUX, **kw)
        assert self.muxer_protocol == YAMUX, self.muxer_protocol
        self.session = YamuxSession(True, keepalive_interval=None)
        self.events: list = []
        if self.plain:
            self.events += self.session.receive_data(bytes(self.plain))
            self.plain = bytearray()
        self.flush()

    def flush(self) -> bool:
        out = self.session.data_to_send()
        return self.send_plain(bytes(out)) if out else True

    def pump(self, timeout: float = 5.0) -> bool:
        """Read once from the socket into the session; False when the node closed."""
        data = self.recv_plain(timeout)
        if not data:
            return False
        self.events += self.session.receive_data(data)
        self.flush()
        return True

    def echo(self, payload: bytes, timeout: float = 10.0) -> bytes:
        """Open a stream, negotiate echo (lazily), send payload + FIN, read to FIN."""
        sid = self.session.open_stream()
        neg = MultistreamDialer([ECHO], lazy=True)
        self.session.send_data(sid, neg.data_to_send() + payload)
        self.session.close_stream(sid)
        self.flush()
        received = bytearray()
        agreed = False
        deadline = time.monotonic() + timeout
        while True:
            for ev in self.events:
                if getattr(ev, "stream_id", None) != sid:
                    continue
                if isinstance(ev, mev.DataReceived):
                    self.session.consumed(sid, len(ev.data))
                    if agreed:
                        received += ev.data
                    else:
                        result = neg.receive_data(ev.data)
                        if isinstance(result, Agreed):
                            agreed = True
                            received += result.leftover
                elif isinstance(ev, mev.StreamEnded):
                    self.events = [e for e in self.events
                                   if getattr(e, "stream_id", None) != sid]
                    return bytes(received)
                elif isinstance(ev, mev.StreamReset):
                    raise ConnectionResetError("echo stream reset")
            self.events = [e for e in self.events if getattr(e, "stream_id", None) != sid]
            self.flush()
            if time.monotonic() > deadline:
                raise TimeoutError("echo over the raw client timed out")
            if not self.pump(max(0.01, deadline - time.monotonic())):
                raise ConnectionResetError("node closed the connection")


def ms_header_and(proposal: str) -> bytes:
    return encode_message("/multistream/1.0.0") + encode_message(proposal)


# -- fixtures (imported by the test modules: no conftest.py, whose module name
# "conftest" would clash with tests/node/conftest.py under the prepend import mode)

LOOPBACK = "/ip4/127.0.0.1/tcp/0"
#: RELIABILITY_LONG=1 runs the long variants (more iterations, more load).
LONG = os.environ.get("RELIABILITY_LONG", "") not in ("", "0")


@pytest.fixture
def make_node():
    nodes: list[Node] = []

    def make(**kwargs) -> Node:
        kwargs.setdefault("listen", [LOOPBACK])
        node = Node(**kwargs)
        nodes.append(node)
        return node

    yield make
    for node in nodes:
        node.close()


class Guarded:
    """A listening server with an echo service, and a well-behaved client connected to
    it over its own connection: ``check()`` proves the node still serves others."""

    def __init__(self, server: Node, good: Node, echo: PoolEchoServer) -> None:
        self.server, self.good, self.echo = server, good, echo
        self.control = good.new_control()
        self.checks = 0

    def check(self, size: int = 4096) -> None:
        echo_once(self.control, p2p_addr(self.server), os.urandom(size), timeout=10)
        self.checks += 1


@pytest.fixture
def guarded(make_node):
    """(Guarded) server with Limits(handshake_timeout=0.5) and a good client."""
    def build(limits: Limits | None = None, **kw) -> Guarded:
        server = make_node(limits=limits or Limits(handshake_timeout=0.5), **kw)
        echo = PoolEchoServer(server)
        good = make_node(listen=[])
        g = Guarded(server, good, echo)
        g.check()
        return g
    made = []

    def factory(*a, **kw):
        g = build(*a, **kw)
        made.append(g)
        return g
    yield factory
    for g in made:
        g.echo.close()
