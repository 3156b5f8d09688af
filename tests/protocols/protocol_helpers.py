"""Helpers and fixtures for the built-in protocol tests (imported by the test modules).

Not a conftest.py: tests/node imports its own conftest by name, and a second one
would shadow it. Fixtures imported into a test module are found by pytest.
"""

from __future__ import annotations

import time
from typing import Callable

import pytest

from libp2p_stream_sync import Node

LOOPBACK = "/ip4/127.0.0.1/tcp/0"


@pytest.fixture
def nodes():
    """``nodes(**kwargs)`` makes a listening node that is closed after the test."""
    made: list[Node] = []

    def make(**kwargs) -> Node:
        kwargs.setdefault("listen", [LOOPBACK])
        node = Node(**kwargs)
        made.append(node)
        return node

    yield make
    for node in made:
        node.close()


@pytest.fixture(params=["yamux", "mplex"])
def connected(nodes, request):
    """(a, b): b has dialed a (one muxer per run); both listen."""
    a = nodes(muxers=[request.param], enable_perf=True)
    b = nodes(muxers=[request.param])
    b.dial(p2p_addr(a), timeout=5)
    return a, b


def p2p_addr(node: Node) -> str:
    return f"{node.listen_addrs[0]}/p2p/{node.peer_id}"


def eventually(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait until ``predicate()`` holds; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout} s")
        time.sleep(0.01)


class FakeStream:
    """Just enough of a Stream for the pure helpers: scripted reads, recorded writes."""

    peer_id = None

    def __init__(self, chunks=(), echo_transform=None) -> None:
        self.chunks = list(chunks)
        self.written = bytearray()
        self.timeout = None
        self.echo_transform = echo_transform
        self.closed = False

    def settimeout(self, timeout):
        self.timeout = timeout

    def read(self, n=-1):
        if not self.chunks:
            return b""
        chunk = self.chunks.pop(0)
        if n >= 0 and len(chunk) > n:
            self.chunks.insert(0, chunk[n:])
            chunk = chunk[:n]
        return chunk

    def read_exactly(self, n):
        data = b""
        while len(data) < n:
            chunk = self.read(n - len(data))
            if not chunk:
                raise EOFError("short")
            data += chunk
        return data

    def write(self, data):
        self.written += data
        if self.echo_transform is not None:
            self.chunks.append(self.echo_transform(bytes(data)))
        return len(data)

    def close(self):
        self.closed = True
