"""A small protobuf (proto2/proto3 wire format) codec for the few messages libp2p uses.

Messages are described by a :class:`Schema` of :class:`Field` s. Decoding skips unknown
fields, rejects malformed input with :class:`DecodeError`, and bounds sizes. Decoded
messages are plain dicts: singular fields absent from the input are absent from the
dict; repeated fields always appear (possibly as an empty list).

Example::

    PUBLIC_KEY = Schema("PublicKey", [Field(1, "type", "uint"), Field(2, "data", "bytes")])
    raw = encode(PUBLIC_KEY, {"type": 1, "data": key})
    assert decode(PUBLIC_KEY, raw) == {"type": 1, "data": key}
"""

from __future__ import annotations

from dataclasses import dataclass, field as dc_field
from typing import Any, Iterable

from ..errors import DecodeError
from .varint import decode_uvarint, encode_uvarint

_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5
_KIND_WIRE_TYPE = {"uint": _VARINT, "bool": _VARINT, "bytes": _LEN, "string": _LEN,
                   "message": _LEN, "fixed64": _I64}
#: Protobuf varints may take 10 bytes (a full uint64) and need not be minimal.
_PB_VARINT_MAX = 10


@dataclass(frozen=True)
class Field:
    """One field of a message: number, name, kind (uint, bool, bytes, string, message,
    fixed64)."""

    number: int
    name: str
    kind: str
    repeated: bool = False
    schema: "Schema | None" = None  # for kind == "message"

    def __post_init__(self) -> None:
        if self.kind not in _KIND_WIRE_TYPE:
            raise ValueError(f"unknown field kind {self.kind!r}")
        if (self.kind == "message") != (self.schema is not None):
            raise ValueError("a schema is needed exactly for message fields")


@dataclass(frozen=True)
class Schema:
    """A message type: its name (for error messages) and its fields."""

    name: str
    fields: Iterable[Field]
    by_number: dict = dc_field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        fields = tuple(self.fields)
        object.__setattr__(self, "fields", fields)
        object.__setattr__(self, "by_number", {f.number: f for f in fields})


def _encode_value(f: Field, value: Any) -> bytes:
    if f.kind == "uint":
        if not isinstance(value, int) or value < 0:
            raise ValueError(f"field {f.name}: expected a non-negative int")
        return encode_uvarint(value)
    if f.kind == "bool":
        return b"\x01" if value else b"\x00"
    if f.kind == "fixed64":
        if not isinstance(value, int) or not 0 <= value < 1 << 64:
            raise ValueError(f"field {f.name}: expected an unsigned 64-bit int")
        return value.to_bytes(8, "little")
    if f.kind == "string":
        raw = value.encode("utf-8")
    elif f.kind == "message":
        assert f.schema is not None
        raw = encode(f.schema, value)
    else:
        raw = bytes(value)
    return encode_uvarint(len(raw)) + raw


def encode(schema: Schema, values: dict[str, Any]) -> bytes:
    """Encode ``values`` (field name → value; lists for repeated fields) in field order.

    Fields missing from ``values`` or set to ``None`` are left out.
    """
    out = bytearray()
    for f in schema.fields:
        value = values.get(f.name)
        if value is None:
            continue
        key = encode_uvarint((f.number << 3) | _KIND_WIRE_TYPE[f.kind])
        for item in (value if f.repeated else (value,)):
            out += key
            out += _encode_value(f, item)
    return bytes(out)


def _read_varint(data: memoryview, pos: int) -> tuple[int, int]:
    decoded = decode_uvarint(data, pos, _PB_VARINT_MAX, minimal=False)
    if decoded is None:
        raise DecodeError("truncated varint")
    value, pos = decoded
    if value >= 1 << 64:
        raise DecodeError("varint exceeds 64 bits")
    return value, pos


def iter_fields(data: bytes | bytearray | memoryview):
    """Yield ``(field_number, wire_type, value)`` for every field of a raw message.

    ``value`` is an int for varint/fixed fields and a memoryview for length-delimited
    ones. Raises :class:`DecodeError` on truncation, group wire types, or field 0.
    """
    view = memoryview(data)
    pos = 0
    end = len(view)
    while pos < end:
        key, pos = _read_varint(view, pos)
        number, wire_type = key >> 3, key & 7
        if number == 0 or number >= 1 << 29:
            raise DecodeError(f"invalid field number {number}")
        if wire_type == _VARINT:
            value, pos = _read_varint(view, pos)
        elif wire_type == _LEN:
            length, pos = _read_varint(view, pos)
            if length > end - pos:
                raise DecodeError("length-delimited field runs past the end of the message")
            value = view[pos:pos + length]
            pos += length
        elif wire_type in (_I64, _I32):
            width = 8 if wire_type == _I64 else 4
            if pos + width > end:
                raise DecodeError("truncated fixed-width field")
            value = int.from_bytes(view[pos:pos + width], "little")
            pos += width
        else:
            raise DecodeError(f"unsupported wire type {wire_type}")
        yield number, wire_type, value


def decode(schema: Schema, data: bytes | bytearray | memoryview, *,
           max_size: int = 1 << 20, _depth: int = 0) -> dict[str, Any]:
    """Decode a message of ``schema`` from ``data``.

    Unknown fields are skipped. A known field on the wrong wire type, invalid UTF-8 in
    a string, a message larger than ``max_size`` or nested too deep raises
    :class:`DecodeError`.
    """
    if len(data) > max_size:
        raise DecodeError(f"{schema.name} message of {len(data)} bytes exceeds {max_size}")
    if _depth > 16:
        raise DecodeError("messages nested too deeply")
    result: dict[str, Any] = {f.name: [] for f in schema.fields if f.repeated}
    for number, wire_type, raw in iter_fields(data):
        f = schema.by_number.get(number)
        if f is None:
            continue
        if wire_type != _KIND_WIRE_TYPE[f.kind]:
            raise DecodeError(f"{schema.name}.{f.name}: wrong wire type {wire_type}")
        if f.kind in ("uint", "fixed64"):
            value: Any = raw
        elif f.kind == "bool":
            value = bool(raw)
        elif f.kind == "bytes":
            value = bytes(raw)
        elif f.kind == "string":
            try:
                value = bytes(raw).decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DecodeError(f"{schema.name}.{f.name}: invalid UTF-8") from exc
        else:
            assert f.schema is not None
            value = decode(f.schema, raw, max_size=max_size, _depth=_depth + 1)
        if f.repeated:
            result[f.name].append(value)
        else:
            result[f.name] = value  # protobuf: the last occurrence wins
    return result
