"""``Node(relays=[...], reserve="when-private")`` (issue #16): the node reserves on its
relays only when AutoNAT finds it cannot be dialed, on loopback made public with
``public_networks``."""

from __future__ import annotations

import time

import pytest

from libp2p_stream_sync import Node, RelayLimits
from libp2p_stream_sync.protocols.relay_policy import needs_relay

PUBLIC = ["127.0.0.0/8"]


@pytest.fixture
def relay():
    with Node(listen=["/ip4/127.0.0.1/tcp/0"], relay_service=RelayLimits(),
              enable_autonat_server=True, public_networks=PUBLIC) as node:
        yield node, f"{node.listen_addrs[0]}/p2p/{node.peer_id}"


def wait_for(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def test_a_node_found_public_holds_no_slot(relay):
    _, relay_addr = relay
    with Node(listen=["/ip4/127.0.0.1/tcp/0"], relays=[relay_addr], reserve="when-private",
              public_networks=PUBLIC) as node:
        assert wait_for(lambda: node.reachability().status == "public")
        time.sleep(0.3)  # the round acts on its verdict after the probe returns
        assert node.reservations() == []
        assert not any("p2p-circuit" in str(a) for a in node.listen_addrs)


def test_a_node_nobody_can_dial_reserves_and_is_reached_through_the_relay(relay):
    relay_node, relay_addr = relay
    with Node(relays=[relay_addr], reserve="when-private", public_networks=PUBLIC) as node:
        assert wait_for(lambda: node.reservations())
        assert node.reservations()[0].relay == relay_node.peer_id
        assert node.reachability().status != "public"
        with Node() as client:
            circuit = f"{relay_addr}/p2p-circuit/p2p/{node.peer_id}"
            assert client.ping(client.dial(circuit), timeout=10)


def test_a_public_verdict_releases_the_slot(relay):
    relay_node, relay_addr = relay
    with Node(listen=["/ip4/127.0.0.1/tcp/0"], relays=[relay_addr], reserve="when-private",
              public_networks=PUBLIC) as node:
        assert wait_for(lambda: node.reachability().status == "public")
        node.add_relay(relay_addr, timeout=10)  # held, e.g. from before a NAT went away
        policy = node.relay_policy
        policy.apply(needs_relay(policy.probe()))  # the next round, now
        assert node.reservations() == []


def test_always_reserves_at_once_and_bad_modes_are_refused(relay):
    _, relay_addr = relay
    with Node(listen=["/ip4/127.0.0.1/tcp/0"], relays=[relay_addr],
              public_networks=PUBLIC) as node:
        assert wait_for(lambda: node.reservations())
    with pytest.raises(ValueError, match="reserve"):
        Node(relays=[relay_addr], reserve="sometimes")
