"""Circuit relay v2 against js-libp2p (@libp2p/circuit-relay-v2 3.2.24) and py-libp2p
0.8.1 (libp2p.relay.circuit_v2), TCP + Noise + yamux, in both roles (issue #16).

* ``their_relay``: their peer program relays (``listen --relay``); our target node
  reserves a slot on it, then our dialer and their client echo through it.
* ``our_relay``: our node relays; their peer program reserves on it (``listen --via``),
  then our dialer and both peer kinds' clients echo through it.
"""

from __future__ import annotations

import os

import pytest

import peers
from libp2p_stream_sync import Node
from libp2p_stream_sync.identity.envelope import open_voucher
from libp2p_stream_sync.limits import RelayLimits
from libp2p_stream_sync.protocols.echo import serve_echo

pytestmark = pytest.mark.interop

KINDS = ["js", "py"]
#: js's relay counts its 128 KiB data limit over both directions together (one
#: counter), so an echo (payload both ways, plus identify, Noise and yamux) must stay
#: well under 64 KiB.
PAYLOAD = 32 * 1024


def _echo(node: Node, addr: str, size: int = PAYLOAD) -> None:
    payload = os.urandom(size)
    stream = node.new_control().open_stream(addr, "/echo/1.0.0", timeout=20)
    stream.settimeout(20)
    stream.write(payload)
    stream.close_write()
    assert stream.readall() == payload
    stream.close()


def _their_echo(kind: str, addr: str) -> None:
    done = peers.run_peer_command(kind, ["echo", addr, "--muxer", "yamux", "--bytes",
                                         str(PAYLOAD)], timeout=40)
    result = peers.parse_result(done.stdout)
    assert result.status == "OK", (done.stdout, done.stderr[-3000:])


@pytest.fixture
def echo_target():
    """Our node with an echo server and no listener of its own."""
    node = Node(listen=[], muxers=["yamux"], security=["noise"])
    echo = serve_echo(node.new_control())
    yield node
    echo.close()
    node.close()


@pytest.mark.parametrize("kind", KINDS)
def test_their_relay(kind, interop_peers, echo_target):
    with peers.PeerProcess(kind, "yamux", extra_args=["--relay"]) as relay:
        reservation = echo_target.add_relay(relay.multiaddr, timeout=20)
        assert str(reservation.relay) == relay.peer_id
        assert reservation.voucher is not None  # js and py both sign one: check it
        open_voucher(reservation.voucher, relay=reservation.relay, peer=echo_target.peer_id)
        circuit = f"{relay.multiaddr}/p2p-circuit/p2p/{echo_target.peer_id}"
        with Node(listen=[], muxers=["yamux"], security=["noise"]) as dialer:
            _echo(dialer, circuit)
            (conn,) = dialer.connections(echo_target.peer_id)
            assert conn.relayed
        _their_echo(kind, circuit)


@pytest.mark.parametrize("kind", KINDS)
def test_our_relay(kind, interop_peers):
    with Node(listen=["/ip4/127.0.0.1/tcp/0"], muxers=["yamux"], security=["noise"],
              relay_service=RelayLimits()) as relay:
        relay_addr = f"{relay.listen_addrs[0]}/p2p/{relay.peer_id}"
        with peers.PeerProcess(kind, "yamux", extra_args=["--via", relay_addr]) as target:
            assert target.multiaddr.startswith(f"{relay_addr}/p2p-circuit/p2p/")
            assert relay.relay_service.counts()["reservations"] == 1
            with Node(listen=[], muxers=["yamux"], security=["noise"]) as dialer:
                _echo(dialer, target.multiaddr)
            for client in KINDS:
                _their_echo(client, target.multiaddr)
        assert relay.relay_service.counts()["circuits"] <= 3
