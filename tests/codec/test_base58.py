"""base58btc: known vectors, leading zeros, bad characters, bounds, round trips."""

import pytest
from hypothesis import given, settings, strategies as st

from libp2p_stream_sync.codec import base58
from libp2p_stream_sync.errors import DecodeError

# Bitcoin Core's base58_encode_decode vectors and the IETF base58 draft examples.
VECTORS = [
    ("", ""),
    ("61", "2g"),
    ("626262", "a3gV"),
    ("636363", "aPEr"),
    ("73696d706c792061206c6f6e6720737472696e67", "2cFupjhnEsSn59qHXstmK2ffpLv2"),
    ("00eb15231dfceb60925886b67d065299925915aeb172c06647",
     "1NS17iag9jJgTHD1VXjvLCEnZuQ3rJDE9L"),
    ("516b6fcd0f", "ABnLTmg"),
    ("bf4f89001e670274dd", "3SEo3LWLoPntC"),
    ("572e4794", "3EFU7m"),
    ("ecac89cad93923c02321", "EJDM8drfXA6uyA"),
    ("10c8511e", "Rt5zm"),
    ("00000000000000000000", "1111111111"),
    ("48656c6c6f20576f726c6421", "2NEpo7TZRRrLZSi2U"),
    ("0000287fb4cd", "11233QC4"),
]


@pytest.mark.parametrize("hexed,text", VECTORS)
def test_vectors(hexed, text):
    assert base58.encode(bytes.fromhex(hexed)) == text
    assert base58.decode(text) == bytes.fromhex(hexed)


def test_accepts_bytearray_and_memoryview():
    assert base58.encode(bytearray(b"a")) == "2g"
    assert base58.encode(memoryview(b"\x00a")) == "12g"


@pytest.mark.parametrize("text", ["0", "O", "I", "l", "abc+", "2g ", "é"])
def test_rejects_characters_outside_the_alphabet(text):
    with pytest.raises(DecodeError, match="invalid base58btc character"):
        base58.decode(text)


def test_rejects_oversized_and_non_str_input():
    with pytest.raises(DecodeError, match="exceeds"):
        base58.decode("2" * 1025)
    assert base58.decode("2" * 20, max_chars=20)
    with pytest.raises(DecodeError):
        base58.decode(b"2g")  # type: ignore[arg-type]


@settings(max_examples=200)
@given(st.binary(max_size=80))
def test_round_trip(data):
    text = base58.encode(data)
    assert base58.decode(text) == data
    assert len(text) - len(text.lstrip("1")) == len(data) - len(data.lstrip(b"\0"))


@settings(max_examples=200)
@given(st.text(max_size=60))
def test_arbitrary_text_only_raises_decode_error(text):
    try:
        data = base58.decode(text)
    except DecodeError:
        return
    assert base58.encode(data) == text
