"""Multihash (identity and sha2-256): byte-exact encodings and strict decoding."""

import hashlib

import pytest
from hypothesis import given, settings, strategies as st

from libp2p_stream_sync.codec import multihash
from libp2p_stream_sync.errors import DecodeError


def test_sha2_256_of_data_is_byte_exact():
    # multihash of "foo" (multiformats/multihash README example).
    expected = "12202c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"
    assert multihash.digest(multihash.SHA2_256, b"foo").hex() == expected
    assert multihash.decode(bytes.fromhex(expected)) == multihash.Multihash(
        0x12, hashlib.sha256(b"foo").digest())


def test_identity_wraps_data_verbatim():
    assert multihash.digest(multihash.IDENTITY, b"abc") == b"\x00\x03abc"
    assert multihash.encode(multihash.IDENTITY, b"") == b"\x00\x00"
    assert multihash.decode(b"\x00\x03abc") == (0, b"abc")


def test_long_identity_digest_uses_a_multibyte_length():
    data = bytes(range(100))
    raw = multihash.digest(multihash.IDENTITY, data)
    assert raw[:2] == b"\x00\x64"
    raw200 = multihash.encode(multihash.IDENTITY, b"\x01" * 128)
    assert raw200[:3] == b"\x00\x80\x01"
    assert multihash.decode(raw200).digest == b"\x01" * 128


@pytest.mark.parametrize("hexed,why", [
    ("", "truncated in its code"),
    ("12", "truncated in its length"),
    ("1220" + "00" * 31, "truncated: 31 of 32"),
    ("1220" + "00" * 33, "1 trailing"),
    ("1210" + "00" * 16, "expected 32"),
    ("1114" + "00" * 20, "unsupported multihash code 0x11"),
    ("b24001" + "00", "unsupported"),
    ("0081" + "00", "not minimally"),
    ("0080", "truncated in its length"),
])
def test_malformed_multihash_raises(hexed, why):
    with pytest.raises(DecodeError, match=why):
        multihash.decode(bytes.fromhex(hexed))


def test_identity_digest_bound():
    raw = multihash.encode(multihash.IDENTITY, b"x" * 43)
    with pytest.raises(DecodeError, match="exceeds 42"):
        multihash.decode(raw, max_identity_digest=42)
    at_bound = multihash.encode(multihash.IDENTITY, b"x" * 42)
    assert multihash.decode(at_bound, max_identity_digest=42).digest == b"x" * 42


def test_local_misuse_is_value_error():
    with pytest.raises(ValueError):
        multihash.encode(0x11, b"x" * 20)
    with pytest.raises(ValueError):
        multihash.encode(multihash.SHA2_256, b"short")
    with pytest.raises(ValueError):
        multihash.digest(0x13, b"")


@settings(max_examples=150)
@given(st.sampled_from([multihash.IDENTITY, multihash.SHA2_256]), st.binary(max_size=100))
def test_round_trip(code, data):
    raw = multihash.digest(code, data)
    decoded = multihash.decode(raw)
    assert decoded.code == code
    assert decoded.digest == (data if code == multihash.IDENTITY else hashlib.sha256(data).digest())
    assert multihash.encode(*decoded) == raw


@settings(max_examples=300)
@given(st.binary(max_size=40))
def test_arbitrary_bytes_only_raise_decode_error(data):
    try:
        decoded = multihash.decode(data)
    except DecodeError:
        return
    assert multihash.encode(decoded.code, decoded.digest) == data
