"""Errors raised when a peer's key or peer id bytes cannot be used."""

from __future__ import annotations

from ..errors import DecodeError


class KeyDecodeError(DecodeError):
    """A serialized key is malformed, oversized, or fails its type's rules."""


class UnsupportedKeyType(KeyDecodeError):
    """The key's ``Type`` is not one libp2p defines (RSA, Ed25519, Secp256k1, ECDSA)."""


class InvalidPeerId(DecodeError):
    """Bytes or text that do not encode a supported peer id."""
