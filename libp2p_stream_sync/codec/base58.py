"""base58btc (the Bitcoin alphabet), as libp2p uses it for peer ids.

Leading zero bytes map to leading ``'1'`` characters; the rest is the big-endian
integer written in base 58. Inputs are bounded because big-integer conversion is
quadratic in the length.
"""

from __future__ import annotations

from ..errors import DecodeError

ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
#: Default bound on decoded text; far above any peer id or CID libp2p uses.
MAX_DECODE_CHARS = 1024

_INDEX: dict[str, int] = {ch: i for i, ch in enumerate(ALPHABET)}
# Dividing by 58**10 peels ten digits per big-int operation instead of one.
_CHUNK_DIGITS = 10
_CHUNK = 58 ** _CHUNK_DIGITS


def encode(data: bytes | bytearray | memoryview) -> str:
    """Encode ``data`` as base58btc text."""
    raw = bytes(data)
    stripped = raw.lstrip(b"\x00")
    zeros = len(raw) - len(stripped)
    n = int.from_bytes(stripped, "big")
    digits: list[str] = []
    while n:
        n, chunk = divmod(n, _CHUNK)
        for _ in range(_CHUNK_DIGITS):
            chunk, d = divmod(chunk, 58)
            digits.append(ALPHABET[d])
    # The last chunk was padded with '1's (zero digits); drop them before reversing.
    while digits and digits[-1] == "1":
        digits.pop()
    return "1" * zeros + "".join(reversed(digits))


def decode(text: str, *, max_chars: int = MAX_DECODE_CHARS) -> bytes:
    """Decode base58btc ``text`` to bytes.

    Raises :class:`DecodeError` for characters outside the alphabet or text longer
    than ``max_chars``.
    """
    if not isinstance(text, str):
        raise DecodeError("base58 input must be a str")
    if len(text) > max_chars:
        raise DecodeError(f"base58 text of {len(text)} characters exceeds {max_chars}")
    stripped = text.lstrip("1")
    zeros = len(text) - len(stripped)
    n = 0
    for ch in stripped:
        d = _INDEX.get(ch)
        if d is None:
            raise DecodeError(f"invalid base58btc character {ch!r}")
        n = n * 58 + d
    body = n.to_bytes((n.bit_length() + 7) // 8, "big") if n else b""
    return b"\x00" * zeros + body
