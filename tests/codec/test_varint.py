"""Unsigned varints: byte-exact encodings, truncation, limits, minimality."""

import pytest
from hypothesis import given, settings, strategies as st

from libp2p_stream_sync.codec.varint import (
    decode_uvarint,
    decode_uvarint_exact,
    encode_uvarint,
)
from libp2p_stream_sync.errors import DecodeError

# From the multiformats unsigned-varint spec's examples.
VECTORS = [
    (0, "00"), (1, "01"), (127, "7f"), (128, "8001"), (255, "ff01"),
    (300, "ac02"), (16384, "808001"), ((1 << 63) - 1, "ffffffffffffffff7f"),
]


@pytest.mark.parametrize("value,hexed", VECTORS)
def test_known_encodings(value, hexed):
    assert encode_uvarint(value) == bytes.fromhex(hexed)
    assert decode_uvarint(bytes.fromhex(hexed)) == (value, len(hexed) // 2)


def test_decode_at_offset_returns_next_position():
    assert decode_uvarint(b"\xff\xac\x02\x07", 1) == (300, 3)


def test_truncated_returns_none_and_exact_raises():
    assert decode_uvarint(b"\x80\x80") is None
    assert decode_uvarint(b"") is None
    with pytest.raises(DecodeError, match="truncated"):
        decode_uvarint_exact(b"\xac")


def test_too_long_raises():
    with pytest.raises(DecodeError, match="longer than 9"):
        decode_uvarint(b"\x80" * 9 + b"\x01")
    with pytest.raises(DecodeError):
        decode_uvarint(b"\x81\x01", max_bytes=1)


def test_non_minimal_rejected_unless_allowed():
    with pytest.raises(DecodeError, match="minimal"):
        decode_uvarint(b"\x81\x00")
    assert decode_uvarint(b"\x81\x00", minimal=False) == (1, 2)


def test_negative_rejected():
    with pytest.raises(ValueError):
        encode_uvarint(-1)


@settings(max_examples=200)
@given(st.integers(min_value=0, max_value=(1 << 63) - 1))
def test_round_trip(value):
    encoded = encode_uvarint(value)
    assert decode_uvarint(encoded) == (value, len(encoded))
    # Every strict prefix is merely incomplete.
    for cut in range(len(encoded)):
        assert decode_uvarint(encoded[:cut]) is None


@settings(max_examples=200)
@given(st.binary(max_size=16))
def test_arbitrary_bytes_only_raise_decode_error(data):
    try:
        result = decode_uvarint(data)
    except DecodeError:
        return
    if result is not None:
        value, pos = result
        assert encode_uvarint(value) == data[:pos]
