"""The QUIC server endpoint, sans-IO: routing by connection id, version negotiation,
retry, bounded half-open state under floods, and hostile datagrams (hypothesis)."""

from __future__ import annotations

import os

import pytest

pytest.importorskip("aioquic")

from aioquic.buffer import Buffer  # noqa: E402
from aioquic.quic.packet import QuicPacketType, pull_quic_header  # noqa: E402
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

from libp2p_stream_sync.engines.muxer_events import (  # noqa: E402
    DataReceived, SessionTerminated, StreamEnded,
)
from libp2p_stream_sync.engines.quic import QuicIdentity, QuicMuxer  # noqa: E402
from libp2p_stream_sync.engines.quic_endpoint import (  # noqa: E402
    SUPPORTED_VERSIONS, QuicEndpoint,
)
from libp2p_stream_sync.identity import Keypair  # noqa: E402

from quic_pair import CLIENT_ADDR, SERVER_ADDR, Pair  # noqa: E402

SERVER_KEY = Keypair.generate()
CLIENT_KEY = Keypair.generate()
CLIENT_IDENTITY = QuicIdentity(CLIENT_KEY)


def initial(now: float = 0.0) -> bytes:
    """A real client's first Initial datagram (a new connection attempt)."""
    client = QuicMuxer.client(CLIENT_KEY, SERVER_ADDR, now, identity=CLIENT_IDENTITY)
    (data, _addr), *_ = client.datagrams_to_send(now)
    return data


def endpoint(**kw) -> QuicEndpoint:
    return QuicEndpoint(SERVER_KEY, **kw)


def connected(**kw) -> Pair:
    pair = Pair(client_key=CLIENT_KEY, server_key=SERVER_KEY,
                client_kwargs={"identity": CLIENT_IDENTITY}, **kw)
    pair.handshake()
    assert pair.client.is_verified and pair.server.is_verified
    return pair


def echo_works(pair: Pair, payload: bytes = b"still alive") -> bool:
    """A fresh stream carries data to the server and the FIN follows."""
    sid = pair.client.open_stream()
    pair.client.send_data(sid, payload)
    pair.client.close_stream(sid)
    pair.run()
    got = b"".join(e.data for e in pair.server_events
                   if isinstance(e, DataReceived) and e.stream_id == sid)
    return got == payload and any(isinstance(e, StreamEnded) and e.stream_id == sid
                                  for e in pair.server_events)


# -- routing ----------------------------------------------------------------------------

def test_routing_follows_the_connection_id_not_the_address():
    """The client moves to a new address and to a new connection id: same connection."""
    pair = connected()
    assert echo_works(pair, b"one")
    moved = ("127.0.0.1", 40999)
    step = pair.step

    def step_from_new_address() -> bool:
        out = pair.client.datagrams_to_send(pair.now)
        for data, _ in out:
            for _c, events in pair.endpoint.receive_datagram(data, moved, pair.now):
                pair.server_events.extend(events)
        back = pair.endpoint.datagrams_to_send(pair.now)
        for data, addr in back:
            assert addr == moved
            pair.client_events += pair.client.receive_datagram(data, SERVER_ADDR, pair.now)
        return bool(out or back)

    pair.step = step_from_new_address
    pair.client.change_connection_id()
    assert echo_works(pair, b"two")
    pair.step = step
    assert len(pair.endpoint.connections) == 1


def test_unknown_connection_id_is_dropped():
    ep = endpoint()
    short = bytes([0x40]) + os.urandom(8) + os.urandom(40)  # short header, unknown id
    assert ep.receive_datagram(short, CLIENT_ADDR, 0.0) == []
    assert ep.datagrams_to_send(0.0) == [] and not ep.connections
    assert ep.dropped["unknown connection id"] == 1


def test_a_new_connection_needs_a_full_size_initial():
    ep = endpoint()
    data = initial()
    assert len(data) >= 1200
    assert ep.receive_datagram(data[:1100], CLIENT_ADDR, 0.0) == []  # truncated
    assert not ep.connections
    assert ep.receive_datagram(data, CLIENT_ADDR, 0.0)
    assert len(ep.connections) == 1


def test_an_initial_that_does_not_decrypt_leaves_no_state():
    ep = endpoint()
    data = bytearray(initial())
    header = pull_quic_header(Buffer(data=bytes(data)), host_cid_length=8)
    assert header.packet_type == QuicPacketType.INITIAL
    data[100:140] = os.urandom(40)  # break the protected payload
    assert ep.receive_datagram(bytes(data), CLIENT_ADDR, 0.0) == []
    assert not ep.connections and ep.half_open == 0
    assert ep.dropped["bad initial"] == 1


# -- version negotiation and retry ------------------------------------------------------

def _foreign_initial(version: int, size: int = 1200) -> bytes:
    head = bytes([0xC0]) + version.to_bytes(4, "big") + b"\x08" + b"D" * 8 + b"\x08" + b"S" * 8
    return head + os.urandom(size - len(head))


def test_unsupported_version_gets_version_negotiation():
    ep = endpoint()
    ep.receive_datagram(_foreign_initial(0x1A2A3A4A), CLIENT_ADDR, 0.0)
    ((reply, addr),) = ep.datagrams_to_send(0.0)
    assert addr == CLIENT_ADDR
    header = pull_quic_header(Buffer(data=reply), host_cid_length=8)
    assert header.packet_type == QuicPacketType.VERSION_NEGOTIATION
    assert header.destination_cid == b"S" * 8 and header.source_cid == b"D" * 8
    assert header.supported_versions == SUPPORTED_VERSIONS
    assert len(reply) < 1200 and not ep.connections


@pytest.mark.parametrize("packet", [
    _foreign_initial(0x1A2A3A4A, size=600),  # too small to answer (amplification)
    _foreign_initial(0),                     # a Version Negotiation: never answered
    _foreign_initial(0x6B3343CF),            # QUIC v2: not /quic-v1
])
def test_no_reply_to_small_or_negotiation_packets(packet):
    ep = endpoint()
    ep.receive_datagram(packet, CLIENT_ADDR, 0.0)
    replies = ep.datagrams_to_send(0.0)
    if packet[1:5] == (0x6B3343CF).to_bytes(4, "big"):
        assert len(replies) == 1  # v2 is negotiated down to v1
    else:
        assert replies == []
    assert not ep.connections


def test_stateless_retry_then_handshake():
    pair = connected(endpoint_kwargs={"retry": True})
    assert pair.endpoint.stateless_replies["retry"] == 1
    assert echo_works(pair)


def test_retry_keeps_no_state_for_tokenless_initials():
    ep = endpoint(retry=True)
    for _ in range(50):
        ep.receive_datagram(initial(), CLIENT_ADDR, 0.0)
    replies = ep.datagrams_to_send(0.0)
    assert len(replies) == 50 and not ep.connections
    for data, _ in replies:
        header = pull_quic_header(Buffer(data=data), host_cid_length=8)
        assert header.packet_type == QuicPacketType.RETRY


# -- floods -----------------------------------------------------------------------------

def test_flood_of_initials_from_one_host_is_bounded():
    ep = endpoint(max_half_open_per_host=5, handshake_timeout=2.0)
    for i in range(40):
        ep.receive_datagram(initial(), ("127.0.0.1", 20000 + i), 0.0)
    assert ep.half_open == len(ep.connections) == 5
    assert ep.dropped["over limits"] == 35
    ep.datagrams_to_send(0.0)
    ep.handle_timer(2.5)  # no handshake finished: all given up
    assert ep.half_open == 0 and not ep.connections
    ep.receive_datagram(initial(), CLIENT_ADDR, 3.0)
    assert ep.half_open == 1


def test_flood_of_initials_from_many_hosts_is_bounded():
    ep = endpoint(max_half_open=20, max_half_open_per_host=5)
    for i in range(60):
        ep.receive_datagram(initial(), (f"127.0.{i}.1", 4000), 0.0)
    assert ep.half_open == len(ep.connections) == 20


def test_verified_connections_leave_the_half_open_count():
    pair = connected(endpoint_kwargs={"max_half_open_per_host": 1})
    assert pair.endpoint.half_open == 0
    second = Pair(client_key=CLIENT_KEY, server_key=SERVER_KEY,
                  client_kwargs={"identity": CLIENT_IDENTITY})
    second.endpoint = pair.endpoint
    second.handshake()
    assert second.client.is_verified and len(pair.endpoint.connections) == 2


# -- hostile datagrams ------------------------------------------------------------------

HOSTILE = settings(max_examples=60, deadline=None,
                   suppress_health_check=[HealthCheck.too_slow,
                                          HealthCheck.function_scoped_fixture])


@HOSTILE
@given(st.lists(st.binary(min_size=0, max_size=1500), max_size=20))
def test_random_datagrams_to_the_endpoint_are_dropped(datagrams):
    ep = endpoint()
    for data in datagrams:
        ep.receive_datagram(data, CLIENT_ADDR, 0.0)
    assert not ep.connections
    for reply, _ in ep.datagrams_to_send(0.0):  # only version negotiation, never bigger
        assert len(reply) <= 1500


def _recorded() -> tuple[Pair, list[bytes]]:
    """A connected pair plus every datagram its client sent (handshake and a stream)."""
    sent: list[bytes] = []

    def record(data: bytes, to_server: bool) -> bool:
        if to_server:
            sent.append(data)
        return False

    pair = connected(drop=record)
    assert echo_works(pair, b"x" * 3000)
    pair.drop = None
    return pair, sent


@HOSTILE
@given(st.data())
def test_truncated_replayed_and_mutated_datagrams_only_drop_or_close(data):
    pair, sent = _recorded()
    for _ in range(data.draw(st.integers(1, 8))):
        packet = bytearray(data.draw(st.sampled_from(sent)))
        how = data.draw(st.sampled_from(["replay", "truncate", "flip", "append"]))
        if how == "truncate":
            del packet[data.draw(st.integers(0, len(packet) - 1)):]
        elif how == "flip":
            i = data.draw(st.integers(0, len(packet) - 1))
            packet[i] ^= data.draw(st.integers(1, 255))
        elif how == "append":
            packet += data.draw(st.binary(min_size=1, max_size=64))
        for _conn, events in pair.endpoint.receive_datagram(bytes(packet), CLIENT_ADDR,
                                                            pair.now):
            pair.server_events += events
    pair.run()
    # Either the connection carries on, or it ended cleanly with a reason.
    if pair.client.is_terminated or not pair.endpoint.connections:
        events = pair.server_events + pair.client_events
        assert any(isinstance(e, SessionTerminated) for e in events)
    else:
        assert echo_works(pair)
