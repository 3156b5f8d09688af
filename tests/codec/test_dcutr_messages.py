"""DCUtR messages (codec/dcutr.py): the bytes of the spec's HolePunch, bounds, errors."""

from __future__ import annotations

import pytest
from multiaddr import Multiaddr

from libp2p_stream_sync.codec.circuit import MessageReader
from libp2p_stream_sync.codec.dcutr import MAX_MESSAGE_SIZE, HolePunch, HolePunchType
from libp2p_stream_sync.errors import DecodeError

ADDR = Multiaddr("/ip4/198.18.0.101/tcp/4001").to_bytes()


def test_connect_and_sync_bytes_follow_the_schema():
    # field 1 (type, varint) = 100; field 2 (ObsAddrs, bytes) once per address
    assert HolePunch(HolePunchType.CONNECT, (ADDR,)).encode() == \
        b"\x08\x64\x12" + bytes([len(ADDR)]) + ADDR
    assert HolePunch(HolePunchType.SYNC).encode() == b"\x08\xac\x02"  # 300
    assert HolePunch(HolePunchType.SYNC).framed() == b"\x03\x08\xac\x02"


def test_round_trip_keeps_the_addresses_in_order():
    other = Multiaddr("/ip6/2001:db8::1/tcp/1").to_bytes()
    message = HolePunch(HolePunchType.CONNECT, (ADDR, other))
    assert HolePunch.decode(message.encode()) == message
    reader = MessageReader(MAX_MESSAGE_SIZE)
    assert reader.feed(message.framed() + b"rest") == message.encode()
    assert bytes(reader.rest) == b"rest"


@pytest.mark.parametrize("data", [
    b"",                       # no type
    b"\x08\x01",               # unknown type
    b"\x08\x64\x12\x05ab",     # address field cut short
    b"\x12\x00",               # addresses but no type
    b"\x0a\x01x",              # type on the wrong wire type
])
def test_malformed_messages_raise_decode_error(data):
    with pytest.raises(DecodeError):
        HolePunch.decode(data)


def test_messages_over_4_kib_are_refused():
    big = HolePunch(HolePunchType.CONNECT, (b"x" * MAX_MESSAGE_SIZE,))
    with pytest.raises(DecodeError):
        HolePunch.decode(big.encode())
    with pytest.raises(DecodeError):
        MessageReader(MAX_MESSAGE_SIZE).feed(big.framed())
