"""Multihash (multiformats/multihash) for the two codes libp2p peer ids use.

A multihash is ``varint(code) || varint(digest length) || digest``. Only
``identity`` (0x00) and ``sha2-256`` (0x12) are supported; anything else is a
:class:`DecodeError`.
"""

from __future__ import annotations

import hashlib
from typing import NamedTuple

from ..errors import DecodeError
from .varint import decode_uvarint, encode_uvarint

IDENTITY = 0x00
SHA2_256 = 0x12
SUPPORTED_CODES = frozenset((IDENTITY, SHA2_256))
_SHA2_256_LEN = 32
#: Default bound on identity digests (libp2p inlines keys of at most 42 bytes).
MAX_IDENTITY_DIGEST = 128


class Multihash(NamedTuple):
    """A decoded multihash: the hash function code and the digest."""

    code: int
    digest: bytes


def encode(code: int, digest: bytes | bytearray | memoryview) -> bytes:
    """Wrap an existing ``digest`` as a multihash with hash function ``code``."""
    if code not in SUPPORTED_CODES:
        raise ValueError(f"unsupported multihash code 0x{code:x}")
    digest = bytes(digest)
    if code == SHA2_256 and len(digest) != _SHA2_256_LEN:
        raise ValueError("a sha2-256 digest is 32 bytes")
    return encode_uvarint(code) + encode_uvarint(len(digest)) + digest


def digest(code: int, data: bytes | bytearray | memoryview) -> bytes:
    """Hash ``data`` with ``code`` (identity or sha2-256) and return the multihash."""
    if code == SHA2_256:
        return encode(SHA2_256, hashlib.sha256(data).digest())
    if code == IDENTITY:
        return encode(IDENTITY, data)
    raise ValueError(f"unsupported multihash code 0x{code:x}")


def decode(data: bytes | bytearray | memoryview, *,
           max_identity_digest: int = MAX_IDENTITY_DIGEST) -> Multihash:
    """Decode a complete multihash (no trailing bytes allowed).

    Raises :class:`DecodeError` for truncated input, trailing bytes, unsupported
    codes, a sha2-256 digest that is not 32 bytes, or an identity digest longer
    than ``max_identity_digest``.
    """
    view = memoryview(data)
    code, pos = _varint(view, 0, "code")
    length, pos = _varint(view, pos, "length")
    if code not in SUPPORTED_CODES:
        raise DecodeError(f"unsupported multihash code 0x{code:x}")
    if code == SHA2_256 and length != _SHA2_256_LEN:
        raise DecodeError(f"sha2-256 multihash digest of {length} bytes, expected 32")
    if code == IDENTITY and length > max_identity_digest:
        raise DecodeError(
            f"identity multihash digest of {length} bytes exceeds {max_identity_digest}")
    remaining = len(view) - pos
    if remaining < length:
        raise DecodeError(f"multihash digest truncated: {remaining} of {length} bytes")
    if remaining > length:
        raise DecodeError(f"{remaining - length} trailing bytes after the multihash")
    return Multihash(code, bytes(view[pos:]))


def _varint(view: memoryview, pos: int, what: str) -> tuple[int, int]:
    decoded = decode_uvarint(view, pos)
    if decoded is None:
        raise DecodeError(f"multihash truncated in its {what}")
    return decoded
