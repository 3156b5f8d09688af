"""The small protobuf codec: byte-exact encodings, unknown fields, malformed input."""

import pytest
from hypothesis import given, settings, strategies as st

from libp2p_stream_sync.codec.protobuf import Field, Schema, decode, encode, iter_fields
from libp2p_stream_sync.codec.varint import encode_uvarint
from libp2p_stream_sync.errors import DecodeError

INNER = Schema("Inner", [Field(1, "n", "uint")])
MSG = Schema("Msg", [
    Field(1, "id", "uint"),
    Field(2, "name", "string"),
    Field(3, "blob", "bytes"),
    Field(4, "flag", "bool"),
    Field(5, "tags", "string", repeated=True),
    Field(6, "inner", "message", schema=INNER),
])


def test_encoding_is_byte_exact_and_in_field_order():
    raw = encode(MSG, {"inner": {"n": 300}, "name": "hi", "id": 150, "flag": True,
                       "tags": ["a", "bc"], "blob": b"\x00\xff"})
    assert raw == bytes.fromhex("089601" "12026869" "1a0200ff" "2001"
                                "2a0161" "2a026263" "3203" "08ac02")
    assert decode(MSG, raw) == {"id": 150, "name": "hi", "blob": b"\x00\xff", "flag": True,
                                "tags": ["a", "bc"], "inner": {"n": 300}}


def test_missing_fields_are_absent_and_repeated_default_empty():
    assert encode(MSG, {"id": None}) == b""
    assert decode(MSG, b"") == {"tags": []}


def test_unknown_fields_of_every_wire_type_are_skipped():
    unknown = bytes.fromhex("f80701" "fa0703616263" "f9070102030405060708" "fd0701020304")
    assert decode(MSG, unknown + bytes.fromhex("0807")) == {"id": 7, "tags": []}


def test_last_occurrence_wins():
    assert decode(MSG, bytes.fromhex("0801" "0802"))["id"] == 2


def test_iter_fields_yields_raw_values():
    fields = [(n, w, bytes(v) if isinstance(v, memoryview) else v)
              for n, w, v in iter_fields(bytes.fromhex("0805" "1203616263" "2d01000000"))]
    assert fields == [(1, 0, 5), (2, 2, b"abc"), (5, 5, 1)]


@pytest.mark.parametrize("hexed,why", [
    ("12056869", "runs past"),          # length beyond the end
    ("08", "truncated"),                # varint missing
    ("0b", "wire type"),                # start-group
    ("0a0161", "wrong wire type"),      # field 1 is a uint, sent as bytes
    ("1202c328", "UTF-8"),              # invalid UTF-8 in a string
    ("0001", "field number 0"),
    ("2d0100", "fixed-width"),
    ("08ffffffffffffffffff02", "64 bits"),  # 2**64
])
def test_malformed_input_raises_decode_error(hexed, why):
    with pytest.raises(DecodeError, match=why):
        decode(MSG, bytes.fromhex(hexed))


def test_size_limit():
    with pytest.raises(DecodeError, match="exceeds"):
        decode(MSG, b"\x08\x01" * 10, max_size=8)


def test_depth_limit_raises_decode_error_not_recursion_error():
    deep = Schema("Deep", [])
    # A self-referential schema: field 1 is again a Deep message.
    object.__setattr__(deep, "by_number", {1: Field(1, "child", "message", schema=deep)})
    raw = b""
    for _ in range(20):
        raw = b"\x0a" + encode_uvarint(len(raw)) + raw
    with pytest.raises(DecodeError, match="nested"):
        decode(deep, raw)


values = st.fixed_dictionaries({}, optional={
    "id": st.integers(min_value=0, max_value=(1 << 64) - 1),
    "name": st.text(max_size=20),
    "blob": st.binary(max_size=40),
    "flag": st.booleans(),
    "inner": st.fixed_dictionaries({}, optional={"n": st.integers(0, 1 << 40)}),
})


@settings(max_examples=150)
@given(values, st.lists(st.text(max_size=5), max_size=4))
def test_round_trip(msg, tags):
    msg = dict(msg, tags=tags)
    assert decode(MSG, encode(MSG, msg)) == msg


@settings(max_examples=300)
@given(st.binary(max_size=64))
def test_arbitrary_bytes_only_raise_decode_error(data):
    try:
        decode(MSG, data)
    except DecodeError:
        pass


def test_fixed64_fields_round_trip_little_endian():
    schema = Schema("DialBack", [Field(1, "nonce", "fixed64")])
    raw = encode(schema, {"nonce": 0x0102030405060708})
    assert raw == b"\x09" + bytes.fromhex("0807060504030201")
    assert decode(schema, raw) == {"nonce": 0x0102030405060708}
    with pytest.raises(ValueError):
        encode(schema, {"nonce": 1 << 64})
    with pytest.raises(DecodeError):
        decode(schema, b"\x08\x01")  # a varint where fixed64 belongs
