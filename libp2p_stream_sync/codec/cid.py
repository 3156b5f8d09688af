"""CIDv1 in multibase text, as libp2p uses it for peer ids (``bafz...``).

A CIDv1 is ``varint(1) || varint(multicodec) || multihash``. Text forms accepted on
decode are the multibase prefixes ``b``/``B`` (base32, RFC 4648 without padding)
and ``z`` (base58btc); encoding produces the canonical lowercase ``b`` form.
"""

from __future__ import annotations

import base64
import binascii
from typing import NamedTuple

from ..errors import DecodeError
from . import base58, multihash
from .varint import decode_uvarint, encode_uvarint

CID_V1 = 1
LIBP2P_KEY = 0x72
#: Default bound on CID text; far above any peer id.
MAX_CID_CHARS = 512
# base32 text lengths (mod 8) that no whole number of bytes produces.
_BAD_BASE32_REMAINDERS = frozenset((1, 3, 6))


class Cid(NamedTuple):
    """A decoded CIDv1: version, content multicodec and the raw multihash bytes."""

    version: int
    codec: int
    multihash: bytes


def encode(codec: int, mh: bytes | bytearray | memoryview) -> str:
    """Encode a CIDv1 of ``codec`` over the multihash ``mh`` as lowercase base32 text."""
    raw = encode_uvarint(CID_V1) + encode_uvarint(codec) + bytes(mh)
    return "b" + _base32_encode(raw)


def decode(text: str, *, max_chars: int = MAX_CID_CHARS) -> Cid:
    """Decode CIDv1 multibase ``text``; the multihash must be one :mod:`multihash` supports.

    Raises :class:`DecodeError` saying why the text is not such a CID.
    """
    if not isinstance(text, str):
        raise DecodeError("CID input must be a str")
    if not text:
        raise DecodeError("empty CID")
    if len(text) > max_chars:
        raise DecodeError(f"CID text of {len(text)} characters exceeds {max_chars}")
    prefix, body = text[0], text[1:]
    if prefix == "b":
        raw = _base32_decode(body, lower=True)
    elif prefix == "B":
        raw = _base32_decode(body, lower=False)
    elif prefix == "z":
        raw = base58.decode(body, max_chars=max_chars)
    else:
        raise DecodeError(f"unsupported multibase prefix {prefix!r}")
    return decode_bytes(raw)


def decode_bytes(raw: bytes | bytearray | memoryview) -> Cid:
    """Decode the binary form of a CIDv1."""
    view = memoryview(raw)
    version, pos = _varint(view, 0, "version")
    if version != CID_V1:
        raise DecodeError(f"unsupported CID version {version}")
    codec, pos = _varint(view, pos, "multicodec")
    mh = bytes(view[pos:])
    multihash.decode(mh)
    return Cid(version, codec, mh)


def _varint(view: memoryview, pos: int, what: str) -> tuple[int, int]:
    decoded = decode_uvarint(view, pos)
    if decoded is None:
        raise DecodeError(f"CID truncated in its {what}")
    return decoded


def _base32_encode(raw: bytes) -> str:
    return base64.b32encode(raw).decode("ascii").rstrip("=").lower()


def _base32_decode(body: str, *, lower: bool) -> bytes:
    if not body.isascii():
        raise DecodeError("non-ASCII character in base32 CID")
    if (body != body.lower()) if lower else (body != body.upper()):
        raise DecodeError("base32 CID mixes letter cases")
    if "=" in body:
        raise DecodeError("padding is not allowed in multibase base32")
    if len(body) % 8 in _BAD_BASE32_REMAINDERS:
        raise DecodeError(f"base32 text of impossible length {len(body)}")
    padded = body.upper() + "=" * (-len(body) % 8)
    try:
        raw = base64.b32decode(padded)
    except (binascii.Error, ValueError) as exc:
        raise DecodeError(f"invalid base32: {exc}") from None
    # Non-zero unused trailing bits would let two texts name one CID; reject them.
    if _base32_encode(raw) != body.lower():
        raise DecodeError("base32 text has non-zero trailing bits")
    return raw
