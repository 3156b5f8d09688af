"""Unsigned varints as multiformats (unsigned-varint spec) and protobuf use them."""

from __future__ import annotations

from ..errors import DecodeError

#: The multiformats unsigned-varint spec caps encodings at 9 bytes (63 bits).
MAX_UVARINT_BYTES = 9


def encode_uvarint(value: int) -> bytes:
    """Encode a non-negative integer as an unsigned LEB128 varint."""
    if value < 0:
        raise ValueError("varints are unsigned")
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def decode_uvarint(buf: bytes | bytearray | memoryview, pos: int = 0,
                   max_bytes: int = MAX_UVARINT_BYTES,
                   minimal: bool = True) -> tuple[int, int] | None:
    """Decode a varint starting at ``buf[pos]``.

    Returns ``(value, position after the varint)``, or ``None`` when ``buf`` ends
    before the varint does (the caller should wait for more bytes). Raises
    :class:`DecodeError` when the varint is longer than ``max_bytes`` or, with
    ``minimal``, not minimally encoded (as the multiformats spec requires).
    """
    result = 0
    shift = 0
    end = len(buf)
    start = pos
    while True:
        if pos >= end:
            if pos - start >= max_bytes:
                raise DecodeError(f"varint longer than {max_bytes} bytes")
            return None
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            if minimal and byte == 0 and pos - start > 1:
                raise DecodeError("varint is not minimally encoded")
            return result, pos
        shift += 7
        if pos - start >= max_bytes:
            raise DecodeError(f"varint longer than {max_bytes} bytes")


def decode_uvarint_exact(buf: bytes | bytearray | memoryview, pos: int = 0,
                         max_bytes: int = MAX_UVARINT_BYTES) -> tuple[int, int]:
    """Like :func:`decode_uvarint` but a truncated varint is a :class:`DecodeError`."""
    decoded = decode_uvarint(buf, pos, max_bytes)
    if decoded is None:
        raise DecodeError("truncated varint")
    return decoded
