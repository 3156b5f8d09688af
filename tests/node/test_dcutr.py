"""DCUtR on loopback (protocols/dcutr.py): a relayed connection becomes a direct one.

Loopback counts as public only where a test says so (``public_networks``). A peer
listening on 127.0.0.2 while only 127.0.0.1 is public has no public listen address:
the initiator then runs the CONNECT/SYNC exchange instead of dialing it directly.
Real NATs are in tests/nat/test_dcutr_nat.py.
"""

from __future__ import annotations

import socket
import threading
import time

import pytest

from libp2p_stream_sync import Limits, Node
from libp2p_stream_sync.codec.circuit import MessageReader
from libp2p_stream_sync.codec.dcutr import PROTOCOL, HolePunch, HolePunchType
from libp2p_stream_sync.errors import OpenStreamError
from libp2p_stream_sync.limits import RelayLimits
from multiaddr import Multiaddr

from conftest import EchoServer, p2p_addr, wait_until

ECHO = "/echo/1.0.0"
LOOPBACK_PUBLIC = ["127.0.0.0/8"]
ONLY_127_0_0_1 = ["127.0.0.1/32"]
BEHIND = "/ip4/127.0.0.2/tcp/0"  # not public under ONLY_127_0_0_1


def circuit_addr(relay: Node, target: Node) -> str:
    return f"{p2p_addr(relay)}/p2p-circuit/p2p/{target.peer_id}"


def relayed_pair(make_node, a_kwargs: dict, b_kwargs: dict):
    """(relay, a, b): b holds a slot and serves echo; a dialed b through the relay."""
    relay = make_node(relay_service=RelayLimits())
    b = make_node(**b_kwargs)
    a = make_node(**a_kwargs)
    b.add_relay(p2p_addr(relay), timeout=5)
    EchoServer(b, ECHO)
    a.dial(circuit_addr(relay, b), timeout=5)
    assert wait_until(lambda: b.usable_connection(a.peer_id) is not None)
    return relay, a, b


def echo(stream, data: bytes) -> bytes:
    stream.settimeout(5)
    stream.write(data)
    return stream.read_exactly(len(data))


def direct_both(a: Node, b: Node) -> bool:
    return (a.usable_connection(b.peer_id, direct=True) is not None
            and b.usable_connection(a.peer_id, direct=True) is not None)


def test_a_public_dialer_is_dialed_back_directly_and_new_streams_go_direct(make_node):
    relay, a, b = relayed_pair(make_node, {"public_networks": LOOPBACK_PUBLIC},
                               {"public_networks": LOOPBACK_PUBLIC})
    (relayed,) = [c for c in a.connections(b.peer_id) if c.relayed]
    old = a.open_on(relayed, ECHO, time.monotonic() + 5)  # the punch may be done already
    assert wait_until(lambda: direct_both(a, b), timeout=8)
    assert wait_until(lambda: b.hole_puncher.counts().get("direct") == 1)
    # the stream on the relayed connection goes on undisturbed
    assert echo(old, b"still relayed") == b"still relayed"
    assert old.connection.relayed and old.connection.usable_for_new_streams()
    new = a.new_control().open_stream(b.peer_id, ECHO, timeout=5)
    assert not new.connection.relayed and new.connection.transport.name == "tcp"
    assert echo(new, b"direct") == b"direct"
    back = b.new_control().open_stream(a.peer_id, "/ipfs/ping/1.0.0", timeout=5,
                                       require_direct=True)
    assert not back.connection.relayed
    back.close()


def test_connect_and_sync_end_in_a_connection_dialed_from_the_listen_port(make_node):
    relay, a, b = relayed_pair(make_node, {"listen": [BEHIND],
                                           "public_networks": ONLY_127_0_0_1},
                               {"public_networks": ONLY_127_0_0_1})
    assert wait_until(lambda: direct_both(a, b), timeout=8)
    assert wait_until(lambda: b.hole_puncher.counts().get("punched") == 1)
    assert a.hole_puncher.counts().get("punched") == 1
    assert b.hole_puncher.counts()["active"] == a.hole_puncher.counts()["active"] == 0
    # offered from the first relayed connection on; the relay itself has none
    assert PROTOCOL in a.supported_protocols() and PROTOCOL in b.supported_protocols()
    assert PROTOCOL not in relay.supported_protocols()
    direct = a.usable_connection(b.peer_id, direct=True)
    # a (the receiver) dialed b's listener at SYNC, from its own listen port, as the
    # security initiator; b's dials to a's predicted 127.0.0.1 address were refused
    listen_port = int(str(a.listen_addrs[0]).rsplit("/", 1)[1])
    assert direct.sock.getsockname() == ("127.0.0.2", listen_port)
    assert direct.initiator
    assert not b.usable_connection(a.peer_id, direct=True).initiator
    new = a.new_control().open_stream(b.peer_id, ECHO, timeout=5)
    assert not new.connection.relayed
    assert echo(new, b"punched") == b"punched"


class ScriptedReceiver:
    """A DCUtR receiver that answers every CONNECT with an address nobody listens on."""

    def __init__(self, node: Node) -> None:
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        dead_port = probe.getsockname()[1]
        probe.close()
        self.dead = Multiaddr(f"/ip4/127.0.0.1/tcp/{dead_port}").to_bytes()
        self.connects = 0
        self.streams = 0
        self.incoming = node.new_control().accept(PROTOCOL)
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        for _peer, stream in self.incoming:
            self.streams += 1
            reader = MessageReader()
            stream.settimeout(10)
            while True:
                data = stream.read(4096)
                if not data:
                    break
                body = reader.feed(data)
                while body is not None:
                    if HolePunch.decode(body).type == HolePunchType.CONNECT:
                        self.connects += 1
                        stream.write(HolePunch(HolePunchType.CONNECT, (self.dead,)).framed())
                    body = reader.feed(b"")
            stream.close()


def test_rounds_are_bounded_and_the_relayed_connection_stays(make_node):
    relay = make_node(relay_service=RelayLimits())
    b = make_node(public_networks=ONLY_127_0_0_1)
    b.hole_puncher.dial_window = 0.3
    a = make_node(listen=[BEHIND], limits=Limits(max_hole_punches=0))
    script = ScriptedReceiver(a)
    b.add_relay(p2p_addr(relay), timeout=5)
    EchoServer(b, ECHO)
    a.dial(circuit_addr(relay, b), timeout=5)
    assert wait_until(lambda: b.hole_puncher.counts().get("failed") == 1, timeout=8)
    assert script.connects == 3 and script.streams == 1  # three rounds on one stream
    assert b.hole_puncher.counts()["active"] == 0
    assert a.usable_connection(b.peer_id, direct=True) is None
    stream = a.new_control().open_stream(b.peer_id, ECHO, timeout=5)
    assert stream.connection.relayed and echo(stream, b"relay") == b"relay"
    script.incoming.close()


@pytest.mark.parametrize("payload", [
    b"\xa0\x40",                                                # a 8,224-byte message
    HolePunch(HolePunchType.SYNC).framed(),                     # SYNC before CONNECT
    b"\x02\x08\x07",                                            # unknown type 7
    HolePunch(HolePunchType.CONNECT, (b"\xff\xff",)).framed(),  # no usable address
], ids=["oversized", "sync-first", "unknown-type", "no-address"])
def test_malformed_messages_reset_the_stream_only(make_node, payload):
    relay, a, b = relayed_pair(make_node, {"public_networks": LOOPBACK_PUBLIC},
                               {"limits": Limits(max_hole_punches=0)})
    stream = b.new_control().open_stream(a.peer_id, PROTOCOL, timeout=5)
    stream.settimeout(5)
    stream.write(payload)
    with pytest.raises(OSError):
        while stream.read(4096):
            pass
    assert wait_until(lambda: a.hole_puncher.counts().get("error") == 1)
    assert a.hole_puncher.counts()["active"] == 0
    assert len(b.ping(a.peer_id, count=1, timeout=5)) == 1  # the connection is fine


def test_sessions_per_peer_are_rate_limited_and_direct_connections_refused(make_node):
    relay, a, b = relayed_pair(make_node, {"public_networks": LOOPBACK_PUBLIC},
                               {"limits": Limits(max_hole_punches=0)})
    for _ in range(Limits().max_hole_punches_per_peer):  # each ends at once: no address
        stream = b.new_control().open_stream(a.peer_id, PROTOCOL, timeout=5)
        stream.write(HolePunch(HolePunchType.CONNECT).framed())
        stream.settimeout(5)
        with pytest.raises(OSError):
            stream.read(1)
    stream = b.new_control().open_stream(a.peer_id, PROTOCOL, timeout=5)
    stream.settimeout(5)
    with pytest.raises(OSError):
        stream.read(1)  # refused before reading anything
    assert wait_until(lambda: a.hole_puncher.counts().get("refused") == 1)
    # a DCUtR stream on a direct connection is not served
    b.dial_new_connection(p2p_addr(a), timeout=5)
    stream = b.new_control().open_stream(a.peer_id, PROTOCOL, timeout=5)
    assert not stream.connection.relayed
    stream.settimeout(5)
    with pytest.raises(OSError):
        stream.read(1)
    assert a.hole_puncher.counts()["refused"] == 1


def test_require_direct_refuses_a_relayed_connection(make_node):
    off = Limits(max_hole_punches=0)
    relay, a, b = relayed_pair(make_node, {"limits": off}, {"limits": off})
    with pytest.raises(OpenStreamError) as info:
        a.new_control().open_stream(b.peer_id, ECHO, timeout=5, require_direct=True)
    assert info.value.kind == "relayed"
    stream = a.new_control().open_stream(b.peer_id, ECHO, timeout=5)
    assert stream.connection.relayed
    assert PROTOCOL not in a.supported_protocols()  # hole punching off: not offered
