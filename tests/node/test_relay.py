"""Circuit relay v2 on loopback: a relay node, peers reserving slots, relayed circuits.

The relayed connection runs Noise and yamux end to end over the relay's two streams;
the relay enforces its reservation and circuit bounds (limits.RelayLimits).
"""

from __future__ import annotations

import hashlib
import os
import threading
import time

import pytest

from libp2p_stream_sync import Node
from libp2p_stream_sync.codec.circuit import (HOP_PROTOCOL, STOP_PROTOCOL, HopMessage,
                                              HopType, Limit, MessageReader, Peer,
                                              Status, StopMessage, StopType, frame)
from libp2p_stream_sync.errors import DialError, OpenStreamError
from libp2p_stream_sync.identity import Keypair
from libp2p_stream_sync.identity.envelope import open_voucher
from libp2p_stream_sync.limits import Limits, RelayLimits
from libp2p_stream_sync.protocols import relay_client
from libp2p_stream_sync.transport.circuit import RelayRefused

from conftest import EchoServer, p2p_addr, wait_until

ECHO = "/echo/1.0.0"


@pytest.fixture
def relay_trio(make_node):
    """(relay, target holding a slot, dialer); the target serves echo."""
    def make(relay_limits: RelayLimits | None = None):
        relay = make_node(relay_service=relay_limits or RelayLimits())
        target = make_node(listen=[])
        dialer = make_node(listen=[])
        target.add_relay(p2p_addr(relay), timeout=5)
        echo = EchoServer(target, ECHO)
        return relay, target, dialer, echo
    return make


def circuit_addr(relay: Node, target: Node) -> str:
    return f"{p2p_addr(relay)}/p2p-circuit/p2p/{target.peer_id}"


def read_status(stream, message_type=HopMessage):
    stream.settimeout(5)
    reader = MessageReader()
    while True:
        data = stream.read(4096)
        assert data, "stream ended without an answer"
        body = reader.feed(data)
        if body is not None:
            return message_type.decode(body)


def test_reserve_grants_a_signed_slot_and_advertises_circuit_addresses(relay_trio):
    relay, target, dialer, echo = relay_trio()
    (reservation,) = target.reservations()
    assert reservation.relay == relay.peer_id
    assert reservation.expire > time.time() + 3000  # default TTL: one hour
    assert reservation.limit.duration == 120 and reservation.limit.data == 128 * 1024
    voucher = open_voucher(reservation.voucher, relay=relay.peer_id, peer=target.peer_id)
    assert voucher.expiration == reservation.expire
    expected = f"{p2p_addr(relay)}/p2p-circuit"
    assert expected in [str(a) for a in target.listen_addrs]
    assert relay.relay_service.counts()["reservations"] == 1
    # identify tells connected peers about the relayed address
    dialer.dial(circuit_addr(relay, target))  # the target has no listener of its own
    info = dialer.wait_identified(target.peer_id, timeout=5)
    assert expected in [str(a) for a in info.listen_addrs]
    echo.close()


def test_relayed_echo_is_end_to_end_and_marked_relayed(relay_trio):
    relay, target, dialer, echo = relay_trio()
    stream = dialer.new_control().open_stream(circuit_addr(relay, target), ECHO, timeout=5)
    stream.settimeout(5)
    payload = bytes(range(256)) * 200  # 51 KiB, under the default 128 KiB limit
    stream.write(payload)
    stream.close_write()
    assert stream.readall() == payload
    (conn,) = dialer.connections(target.peer_id)
    assert conn.relayed and conn.transport.name == "p2p-circuit"
    assert conn.remote_peer_id == target.peer_id  # Noise proved it through the relay
    assert conn.initiator
    (back,) = target.connections(dialer.peer_id)
    assert back.relayed and not back.initiator
    assert conn.sock.limit == back.sock.limit == Limit(120, 128 * 1024)  # the relay's
    assert not relay.connections(target.peer_id)[0].relayed
    # the other way over the same relayed connection
    stream = target.new_control().open_stream(dialer.peer_id, "/ipfs/ping/1.0.0", timeout=5)
    stream.close()
    assert len(dialer.ping(target.peer_id, count=3, timeout=5)) == 3
    echo.close()


def test_both_peers_reserve_and_dial_each_other_through_the_relay(make_node):
    relay = make_node(relay_service=RelayLimits())
    a = make_node(listen=[])
    b = make_node(listen=[])
    a.add_relay(p2p_addr(relay), timeout=5)
    b.add_relay(p2p_addr(relay), timeout=5)
    echo_b, echo_a = EchoServer(b, ECHO), EchoServer(a, ECHO)
    for src, dst in ((a, b), (b, a)):
        stream = src.new_control().open_stream(circuit_addr(relay, dst), ECHO, timeout=5)
        stream.settimeout(5)
        stream.write(b"x" * 1000)
        stream.close_write()
        assert stream.readall() == b"x" * 1000
    assert relay.relay_service.counts()["circuits"] >= 1
    echo_a.close()
    echo_b.close()


def test_dial_without_reservation_names_the_relays_refusal(make_node):
    relay = make_node(relay_service=RelayLimits())
    lonely = make_node(listen=[])
    dialer = make_node(listen=[])
    with pytest.raises(DialError) as caught:
        dialer.dial(circuit_addr(relay, lonely), timeout=5)
    assert "NO_RESERVATION" in str(caught.value)
    assert isinstance(caught.value.__cause__, RelayRefused)
    assert caught.value.__cause__.status == Status.NO_RESERVATION


def test_a_node_without_relay_service_refuses_to_reserve(make_node):
    plain = make_node()
    client = make_node(listen=[])
    with pytest.raises(OpenStreamError):  # hop is not served: UnsupportedProtocol
        client.add_relay(p2p_addr(plain), timeout=5)
    assert client.reservations() == []


def test_circuit_data_limit_resets_both_ends(relay_trio):
    relay, target, dialer, echo = relay_trio(RelayLimits(circuit_data=64 * 1024))
    stream = dialer.new_control().open_stream(circuit_addr(relay, target), ECHO, timeout=5)
    stream.settimeout(5)
    with pytest.raises(OSError):
        for _ in range(64):
            stream.write(b"y" * 8192)
            stream.flush()
        stream.readall()
    assert wait_until(lambda: not dialer.connections(target.peer_id)
                      and not target.connections(dialer.peer_id))
    assert wait_until(lambda: relay.relay_service.counts()["circuits"] == 0)
    echo.close()


def test_circuit_time_limit_resets_both_ends(relay_trio):
    relay, target, dialer, echo = relay_trio(RelayLimits(circuit_duration=1))
    stream = dialer.new_control().open_stream(circuit_addr(relay, target), ECHO, timeout=5)
    stream.settimeout(5)
    stream.write(b"still here")
    assert stream.read(100) == b"still here"
    started = time.monotonic()
    with pytest.raises(OSError):
        stream.read(100)  # nothing more comes until the relay ends the circuit
    assert 0.5 < time.monotonic() - started < 4
    assert wait_until(lambda: not target.connections(dialer.peer_id))
    echo.close()


def test_circuits_per_peer_are_bounded(relay_trio, make_node):
    relay, target, dialer, echo = relay_trio(RelayLimits(max_circuits_per_peer=1))
    first = dialer.new_control().open_stream(circuit_addr(relay, target), ECHO, timeout=5)
    other = make_node(listen=[])
    with pytest.raises(DialError, match="RESOURCE_LIMIT_EXCEEDED"):
        other.dial(circuit_addr(relay, target), timeout=5)
    first.settimeout(5)
    first.write(b"ok")
    assert first.read(2) == b"ok"  # the admitted circuit is untouched
    echo.close()


def test_reservations_are_bounded(make_node):
    relay = make_node(relay_service=RelayLimits(max_reservations=1))
    first, second = make_node(listen=[]), make_node(listen=[])
    first.add_relay(p2p_addr(relay), timeout=5)
    with pytest.raises(RelayRefused) as caught:
        second.add_relay(p2p_addr(relay), timeout=5)
    assert caught.value.status == Status.RESERVATION_REFUSED
    first.add_relay(p2p_addr(relay), timeout=5)  # a refresh of a held slot is fine


def test_malformed_and_unexpected_hop_requests_get_their_status(make_node):
    relay = make_node(relay_service=RelayLimits())
    client = make_node(listen=[])
    control = client.new_control()
    cases = [(b"\x05\xff\xff\xff\xff\xff", Status.MALFORMED_MESSAGE),  # bad protobuf
             (b"\xfa\x7f", Status.MALFORMED_MESSAGE),  # a length beyond 4096
             (frame(HopMessage(HopType.STATUS, status=Status.OK)), Status.UNEXPECTED_MESSAGE),
             (frame(HopMessage(HopType.CONNECT)), Status.MALFORMED_MESSAGE),  # no peer
             (frame(HopMessage(HopType.CONNECT, peer=Peer(b"\x00junk"))),
              Status.MALFORMED_MESSAGE)]
    for raw, status in cases:
        stream = control.open_stream(p2p_addr(relay), HOP_PROTOCOL, timeout=5)
        stream.write(raw)
        answer = read_status(stream)
        assert (answer.type, answer.status) == (HopType.STATUS, status), raw
        stream.close()


def test_malformed_and_unsolicited_stop_requests_are_refused(make_node):
    target = make_node()
    target.add_relay(p2p_addr(make_node(relay_service=RelayLimits())), timeout=5)
    stranger = make_node(listen=[])
    control = stranger.new_control()
    cases = [(b"\x03\x08\xff\xff", Status.MALFORMED_MESSAGE),
             (frame(StopMessage(StopType.STATUS, status=Status.OK)),
              Status.UNEXPECTED_MESSAGE),
             # well formed, but we hold no slot on this "relay"
             (frame(StopMessage(StopType.CONNECT, peer=Peer(stranger.peer_id.to_bytes()))),
              Status.PERMISSION_DENIED)]
    for raw, status in cases:
        stream = control.open_stream(p2p_addr(target), STOP_PROTOCOL, timeout=5)
        stream.write(raw)
        answer = read_status(stream, StopMessage)
        assert (answer.type, answer.status) == (StopType.STATUS, status), raw
        stream.close()
    assert not any(conn.relayed for conn in target.connections())  # none was made


def test_reservation_flood_is_bounded_and_honest_peers_are_served(make_node):
    relay = make_node(relay_service=RelayLimits(max_reservations_per_peer=4,
                                                max_pending_hops_per_peer=8))
    flooder = make_node(listen=[])
    control = flooder.new_control()
    streams = [control.open_stream(p2p_addr(relay), HOP_PROTOCOL, timeout=5)
               for _ in range(24)]
    for stream in streams:
        try:
            stream.write(frame(HopMessage(HopType.RESERVE)))
        except OSError:
            pass  # reset already: over the pending bound
    granted = refused = reset = 0
    for stream in streams:
        try:
            answer = read_status(stream)
        except (OSError, AssertionError):
            reset += 1
            continue
        if answer.status == Status.OK:
            granted += 1
        else:
            assert answer.status == Status.RESERVATION_REFUSED
            refused += 1
    assert granted == 4 and granted + refused + reset == 24
    assert relay.relay_service.counts()["reservations"] == 1
    honest = make_node(listen=[])
    honest.add_relay(p2p_addr(relay), timeout=5)
    echo = EchoServer(honest, ECHO)
    stream = make_node(listen=[]).new_control().open_stream(
        circuit_addr(relay, honest), ECHO, timeout=5)
    stream.settimeout(5)
    stream.write(b"served")
    assert stream.read(6) == b"served"
    echo.close()


def test_silent_stop_streams_are_bounded_per_relay(make_node):
    target = make_node()
    target.add_relay(p2p_addr(make_node(relay_service=RelayLimits())), timeout=5)
    relay_like = make_node(listen=[])
    control = relay_like.new_control()
    streams = [control.open_stream(p2p_addr(target), STOP_PROTOCOL, timeout=5)
               for _ in range(20)]
    for stream in streams[16:]:  # beyond Limits.max_stop_handshakes_per_relay: reset
        stream.settimeout(2)
        with pytest.raises(ConnectionResetError):
            stream.read(1)
    for stream in streams[:16]:  # waiting for a request we never send: held
        stream.settimeout(0)
        with pytest.raises(BlockingIOError):
            stream.read(1)


def test_short_reservations_are_refreshed_and_their_loss_reported(make_node):
    relay = make_node(relay_service=RelayLimits(reservation_ttl=3))
    client = make_node(listen=[])
    lost = []
    client.relay_client.on_reservation_lost.append(lost.append)
    first = client.add_relay(p2p_addr(relay), timeout=5)
    assert wait_until(lambda: client.reservations()
                      and client.reservations()[0].expire > first.expire, timeout=6)
    assert client.listen_addrs  # still advertised
    relay.close()  # refreshes fail from now on: the slot ends
    assert wait_until(lambda: lost == [relay.peer_id], timeout=8)
    assert client.reservations() == [] and client.listen_addrs == []


def test_relay_limits_are_checked():
    with pytest.raises(ValueError):
        RelayLimits(reservation_ttl=0)
    with pytest.raises(ValueError):
        RelayLimits(max_circuits=-1)
    with pytest.raises(TypeError):
        RelayLimits(circuit_data=1.5)
    assert RelayLimits(circuit_duration=0).circuit_duration == 0.0


def test_relays_option_needs_dialable_addresses_naming_the_relay():
    with pytest.raises(ValueError, match="names no peer"):
        Node(relays=["/ip4/127.0.0.1/tcp/4001"])
    with pytest.raises(ValueError):
        Node(relays=["not a multiaddr"])


def test_listening_on_a_circuit_address_says_what_to_do():
    relay = Keypair.generate().peer_id
    with pytest.raises(ValueError, match="reserve"):
        Node(listen=[f"/p2p/{relay}/p2p-circuit"])


def test_reserved_connections_outlive_the_idle_timeout(make_node):
    short = Limits(idle_connection_timeout=0.5)
    relay = make_node(relay_service=RelayLimits(), limits=short)
    target = make_node(listen=[], limits=short)
    target.add_relay(p2p_addr(relay), timeout=5)
    echo = EchoServer(target, ECHO)
    time.sleep(1.5)  # three idle timeouts without a stream
    assert relay.connections(target.peer_id) and target.connections(relay.peer_id)
    dialer = make_node(listen=[])
    stream = dialer.new_control().open_stream(circuit_addr(relay, target), ECHO, timeout=5)
    stream.settimeout(5)
    stream.write(b"alive")
    assert stream.read(5) == b"alive"
    echo.close()


def test_node_relays_option_reserves_in_the_background(make_node):
    relay = make_node(relay_service=RelayLimits())
    target = make_node(listen=[], relays=[p2p_addr(relay)])
    assert wait_until(lambda: target.reservations(), timeout=5)
    assert str(target.listen_addrs[0]) == f"{p2p_addr(relay)}/p2p-circuit"
    target.relay_client.release(relay.peer_id)
    assert target.reservations() == [] and target.listen_addrs == []


def test_a_target_that_left_has_no_reservation(make_node):
    relay = make_node(relay_service=RelayLimits())
    target = make_node(listen=[])
    target.add_relay(p2p_addr(relay), timeout=5)
    target_id = target.peer_id
    target.close()
    assert wait_until(lambda: not relay.connections(target_id))
    with pytest.raises(DialError, match="NO_RESERVATION"):
        make_node(listen=[]).dial(f"{p2p_addr(relay)}/p2p-circuit/p2p/{target_id}",
                                  timeout=5)
    assert relay.relay_service.counts()["reservations"] == 0


def test_unlimited_circuit_moves_megabytes_intact_both_ways(relay_trio):
    relay, target, dialer, echo = relay_trio(RelayLimits(circuit_data=0,
                                                         circuit_duration=0))
    stream = dialer.new_control().open_stream(circuit_addr(relay, target), ECHO, timeout=5)
    stream.settimeout(10)
    # More than the path holds in flight either way (yamux windows grow to 16 MiB):
    # both ends keep reading while their own output waits.
    payload = os.urandom(24 * 1024 * 1024)
    received = []
    reader = threading.Thread(target=lambda: received.append(stream.readall()))
    reader.start()
    for start in range(0, len(payload), 256 * 1024):
        stream.write(payload[start:start + 256 * 1024])
    stream.close_write()
    reader.join(15)
    assert received and hashlib.sha256(received[0]).digest() == \
        hashlib.sha256(payload).digest()
    echo.close()


def test_a_lost_relay_connection_is_noticed_and_the_slot_taken_again(make_node,
                                                                     monkeypatch):
    monkeypatch.setattr(relay_client, "CHECK_INTERVAL", 0.2)
    keys = Keypair.generate()
    relay = make_node(keypair=keys, relay_service=RelayLimits())
    addr = str(relay.listen_addrs[0])
    target = make_node(listen=[])
    first = target.add_relay(p2p_addr(relay), timeout=5)
    relay.close()
    again = make_node(keypair=keys, listen=[addr], relay_service=RelayLimits())
    assert wait_until(lambda: again.relay_service.counts()["reservations"] == 1,
                      timeout=8)
    assert target.reservations()[0].expire >= first.expire


def test_only_nodes_that_use_relays_offer_stop_and_only_relays_offer_hop(make_node):
    relay = make_node(relay_service=RelayLimits())
    plain = make_node()
    assert HOP_PROTOCOL in relay.supported_protocols()
    assert not {HOP_PROTOCOL, STOP_PROTOCOL} & set(plain.supported_protocols())
    plain.add_relay(p2p_addr(relay), timeout=5)
    assert STOP_PROTOCOL in plain.supported_protocols()


def test_a_target_that_never_answers_the_stop_handshake_fails_the_circuit(make_node):
    relay = make_node(relay_service=RelayLimits(handshake_timeout=1))
    silent = make_node(listen=[])  # reserves by hand, takes stop streams, answers nothing
    hop = silent.new_control().open_stream(p2p_addr(relay), HOP_PROTOCOL, timeout=5)
    hop.write(frame(HopMessage(HopType.RESERVE)))
    assert read_status(hop).status == Status.OK
    taken = silent.new_control().accept(STOP_PROTOCOL)
    started = time.monotonic()
    with pytest.raises(DialError, match="CONNECTION_FAILED"):
        make_node(listen=[]).dial(circuit_addr(relay, silent), timeout=5)
    assert 0.5 < time.monotonic() - started < 4
    assert taken.get(timeout=1)  # the relay did ask
    assert wait_until(lambda: relay.relay_service.counts()["circuits"] == 0
                      and relay.relay_service.counts()["pending"] == 0)
    taken.close()


def test_add_relay_timeouts_take_none_and_zero(make_node):
    relay = make_node(relay_service=RelayLimits())
    client = make_node(listen=[])
    with pytest.raises(OpenStreamError, match="at once"):
        client.add_relay(p2p_addr(relay), timeout=0)
    assert client.add_relay(p2p_addr(relay), timeout=None).relay == relay.peer_id
    with pytest.raises(ValueError):
        client.add_relay(p2p_addr(relay), timeout=-1)
