"""Fixtures for the reliability tests (hostile peers, faults, load, security)."""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from libp2p_stream_sync import Node  # noqa: E402
from libp2p_stream_sync.limits import Limits  # noqa: E402

from reliability_helpers import PoolEchoServer, echo_once, p2p_addr  # noqa: E402

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
