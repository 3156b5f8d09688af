"""AutoNAT v1 against js-libp2p (@libp2p/autonat 2.0.38) and py-libp2p 0.8.1 on loopback.

What each side allows (README "Interoperability"):
* our client -> py server: py dials back and answers OK (on the connection we already
  have: it answers OK even when we refuse every new connection, which proves nothing
  about a NAT);
* py client -> our server: we dial py back on a new connection and answer OK;
* our client -> js server: js answers, but refuses loopback ("no dialable addresses":
  it never dials a special-use range);
* js client -> our server: js asks only about addresses it does not consider private,
  so on loopback it never asks (not testable here).
"""
from __future__ import annotations

from typing import Iterator

import pytest

from libp2p_stream_sync import Limits, Node
from peers import PeerProcess, parse_result, run_peer_command

pytestmark = [pytest.mark.interop, pytest.mark.timeout(900)]  # first use may install

LOOPBACK_PUBLIC = ["127.0.0.0/8"]


@pytest.fixture
def node() -> Iterator[Node]:
    with Node(listen=["/ip4/127.0.0.1/tcp/0"], public_networks=LOOPBACK_PUBLIC) as n:
        yield n


def test_our_client_asks_the_py_server(interop_peers, node):
    with PeerProcess("py", "yamux", extra_args=["--autonat"]) as peer:
        result = node.probe_reachability([peer.multiaddr], timeout=20, confirmations=1)
    (observation,) = result.observations
    assert observation.outcome == "reachable", observation
    assert result.status == "public"
    assert [str(a) for a in result.reachable_addrs] == [str(node.listen_addrs[0])]


def test_the_py_server_reports_reachable_over_the_existing_connection(interop_peers):
    with Node(listen=["/ip4/127.0.0.1/tcp/0"], public_networks=LOOPBACK_PUBLIC,
              limits=Limits(max_inbound_connections=0)) as firewalled:
        with PeerProcess("py", "yamux", extra_args=["--autonat"]) as peer:
            result = firewalled.probe_reachability([peer.multiaddr], timeout=20,
                                                   confirmations=1)
    # Not one inbound connection could succeed, yet py says it dialed us: a quirk.
    assert [o.outcome for o in result.observations] == ["reachable"]


def test_the_py_client_asks_our_server(interop_peers):
    with Node(listen=["/ip4/127.0.0.1/tcp/0"], enable_autonat_server=True,
              public_networks=LOOPBACK_PUBLIC) as server:
        addr = f"{server.listen_addrs[0]}/p2p/{server.peer_id}"
        done = run_peer_command("py", ["autonat", addr, "--muxer", "yamux"], timeout=30)
        result = parse_result(done.stdout)
        assert result.ok, done.stdout + done.stderr[-2000:]
        assert result.fields["status"] == "OK"
        assert result.fields["addr"].startswith("/ip4/127.0.0.1/tcp/")


def test_our_server_refuses_the_py_client_when_loopback_is_not_public(interop_peers):
    with Node(listen=["/ip4/127.0.0.1/tcp/0"], enable_autonat_server=True) as server:
        addr = f"{server.listen_addrs[0]}/p2p/{server.peer_id}"
        done = run_peer_command("py", ["autonat", addr, "--muxer", "yamux"], timeout=30)
        result = parse_result(done.stdout)
        assert result.ok, done.stdout + done.stderr[-2000:]
        assert result.fields["status"] == "E_DIAL_REFUSED"


def test_our_client_asks_the_js_server(interop_peers, node):
    with PeerProcess("js", "yamux", extra_args=["--autonat"]) as peer:
        result = node.probe_reachability([peer.multiaddr], timeout=20, confirmations=1)
    (observation,) = result.observations
    # js parsed our request and answered; it never dials loopback addresses.
    assert observation.outcome == "refused", observation
    assert observation.detail == "E_DIAL_REFUSED no dialable addresses"
    assert result.status == "unknown"
