"""ping: round trips between real nodes, the per-peer stream limit, echo checking."""

from __future__ import annotations

import pytest

from libp2p_stream_sync import Keypair, OpenStreamError
from libp2p_stream_sync.protocols import ping

from protocol_helpers import FakeStream, p2p_addr
import protocol_helpers

connected = protocol_helpers.connected  # fixtures
nodes = protocol_helpers.nodes


def test_ping_returns_one_rtt_per_round(connected):
    a, b = connected
    rtts = b.ping(a.peer_id, count=5, timeout=5)
    assert len(rtts) == 5
    assert all(0 < rtt < 5 for rtt in rtts)
    assert len(a.ping(b.peer_id, timeout=5)) == 1  # the other way, same connection


def test_ping_by_multiaddr_dials(nodes):
    a, b = nodes(), nodes(listen=[])
    assert len(b.ping(p2p_addr(a), count=2, timeout=5)) == 2


def test_ping_rejects_bad_count_and_unknown_peer(nodes):
    a = nodes()
    with pytest.raises(ValueError):
        a.ping(Keypair.generate().peer_id, count=0)
    with pytest.raises(OpenStreamError) as info:
        a.ping(Keypair.generate().peer_id, timeout=1)
    assert info.value.kind == "no-address"


def test_responder_allows_two_streams_per_peer(connected):
    a, b = connected
    control = b.new_control()
    streams = [control.open_stream(a.peer_id, ping.PROTOCOL, timeout=5) for _ in range(3)]
    for s in streams:
        s.settimeout(5)
    for s in streams[:2]:
        s.write(b"x" * ping.PAYLOAD_SIZE)
        assert s.read_exactly(ping.PAYLOAD_SIZE) == b"x" * ping.PAYLOAD_SIZE
    with pytest.raises(ConnectionResetError):  # on the write or on the read
        streams[2].write(b"x" * ping.PAYLOAD_SIZE)
        streams[2].read_exactly(ping.PAYLOAD_SIZE)
    for s in streams[:2]:
        s.close()


def test_slots_are_released_when_streams_end(connected):
    a, b = connected
    for _ in range(5):  # more sequential streams than the per-peer limit
        assert len(b.ping(a.peer_id, count=1, timeout=5)) == 1


def test_wrong_echo_is_detected():
    stream = FakeStream(echo_transform=lambda data: bytes(reversed(data)))
    with pytest.raises(ping.PingMismatch):
        ping.ping_stream(stream, 1, deadline=float("inf"))


def test_ping_stream_writes_32_random_bytes_per_round():
    stream = FakeStream(echo_transform=lambda data: data)
    assert len(ping.ping_stream(stream, 3, deadline=float("inf"))) == 3
    assert len(stream.written) == 3 * 32
    assert stream.written[:32] != stream.written[32:64]


def test_responder_echoes_whole_payloads_until_eof(connected):
    """The reactor-side responder echoes payloads split across writes, and closes
    its side when the dialer closes."""
    a, b = connected
    stream = b.new_control().open_stream(a.peer_id, ping.PROTOCOL, timeout=5)
    stream.settimeout(5)
    stream.write(b"a" * 32 + b"b" * 16)
    assert stream.read_exactly(32) == b"a" * 32
    stream.write(b"b" * 16)
    assert stream.read_exactly(32) == b"b" * 32
    stream.close_write()
    assert stream.read() == b""  # the responder finished its side too


def test_admit_counts_streams_per_peer():
    responder = ping.PingResponder()
    first, second = FakeStream(), FakeStream()
    assert responder.admit(first) and responder.admit(second)
    assert not responder.admit(FakeStream())
    responder.release(second)
    assert responder.admit(FakeStream())


def test_streams_whose_remote_finished_do_not_hold_slots():
    responder = ping.PingResponder()
    finishing = FakeStream()
    assert responder.admit(finishing) and responder.admit(FakeStream())
    finishing.input_finished = True  # its FIN arrived; the responder has not caught up
    assert responder.admit(FakeStream())


def test_responder_resets_a_peer_that_does_not_read_its_pongs(connected):
    """The reactor-side responder holds at most ping.MAX_UNSENT unsent echo bytes."""
    a, b = connected
    stream = b.new_control().open_stream(a.peer_id, ping.PROTOCOL, timeout=5)
    stream.settimeout(5)
    with pytest.raises(ConnectionResetError):
        # Up to 16 MiB of payloads, never reading the echoes: over mplex (no window)
        # the echoes first fill the TCP buffers, which can hold a few MiB on loopback.
        for _ in range(512):
            stream.write(b"p" * 32 * 1024)
        while stream.read(1 << 20):  # buffered echoes come first, then the reset
            pass


def test_a_ping_that_arrives_with_its_negotiation_and_end_is_echoed(connected):
    a, b = connected
    stream = b.new_control().open_stream(a.peer_id, ping.PROTOCOL, timeout=5, lazy=True)
    stream.settimeout(5)
    stream.write(b"q" * ping.PAYLOAD_SIZE)
    stream.close_write()
    assert stream.readall() == b"q" * ping.PAYLOAD_SIZE
