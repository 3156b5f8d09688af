"""Fixtures for tests that run real nodes over loopback TCP."""

from __future__ import annotations

import threading
import time

import pytest

from libp2p_stream_sync import Node

LOOPBACK = "/ip4/127.0.0.1/tcp/0"


@pytest.fixture
def make_node():
    """Create nodes that are closed at the end of the test."""
    nodes: list[Node] = []

    def make(**kwargs) -> Node:
        kwargs.setdefault("listen", [LOOPBACK])
        node = Node(**kwargs)
        nodes.append(node)
        return node

    yield make
    for node in nodes:
        node.close()


def p2p_addr(node: Node) -> str:
    return f"{node.listen_addrs[0]}/p2p/{node.peer_id}"


def wait_until(predicate, timeout: float = 5.0) -> bool:
    """Poll ``predicate`` until it holds (True) or ``timeout`` passes (False)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def connect(client: Node, server: Node):
    """Dial ``server`` and wait until both sides hold the connection; return the
    server's side of it."""
    client.dial(p2p_addr(server))
    assert wait_until(lambda: client.peer_id in server.connected_peers())
    return server.connections(client.peer_id)[0]


class EchoServer:
    """Echo every stream of ``protocol`` on ``node`` until the remote half-closes."""

    def __init__(self, node: Node, protocol: str = "/echo/1.0.0", capacity: int = 1024):
        # One client bursts up to 1000 streams: its share is the whole queue.
        self.incoming = node.new_control().accept(protocol, capacity=capacity,
                                                  max_per_peer=capacity)
        self.errors: list[BaseException] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        for _peer, stream in self.incoming:
            threading.Thread(target=self._echo, args=(stream,), daemon=True).start()

    def _echo(self, stream) -> None:
        try:
            stream.settimeout(30)
            while True:
                data = stream.read(1 << 20)
                if not data:
                    break
                stream.write(data)
            stream.close()
        except Exception as exc:  # surfaced by the tests that look at .errors
            self.errors.append(exc)

    def close(self) -> None:
        self.incoming.close()
        self._thread.join(5)


@pytest.fixture
def echo_pair(make_node, request):
    """(client node, server node, server peer id) with an echo server running."""
    muxer = getattr(request, "param", "yamux")
    server = make_node(muxers=[muxer])
    client = make_node(muxers=[muxer], listen=[])
    echo = EchoServer(server)
    client.add_address(server.peer_id, server.listen_addrs[0])
    yield client, server, echo
    echo.close()
