"""libp2p public keys: the protobuf ``PublicKey`` form and signature verification.

Encodings follow the peer-ids spec: the ``Data`` field holds a raw 32-byte key
(Ed25519), a compressed SEC1 point (Secp256k1) or a PKIX SubjectPublicKeyInfo DER
(ECDSA, RSA). ECDSA-style signatures (Secp256k1, ECDSA) are DER over SHA-256 of the
data; RSA is PKCS#1 v1.5 with SHA-256.
"""

from __future__ import annotations

import enum
from typing import ClassVar

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from ..codec import protobuf
from ..errors import DecodeError
from .errors import KeyDecodeError, UnsupportedKeyType


class KeyType(enum.IntEnum):
    """The ``KeyType`` enum of libp2p's crypto protobuf."""

    RSA = 0
    ED25519 = 1
    SECP256K1 = 2
    ECDSA = 3


#: ``PublicKey`` and ``PrivateKey`` share this shape.
KEY_SCHEMA = protobuf.Schema("Key", [protobuf.Field(1, "type", "uint"),
                                     protobuf.Field(2, "data", "bytes")])
#: An 8192-bit RSA PKIX key is ~1.1 KB; nothing legitimate comes near this bound.
MAX_PUBLIC_KEY_SIZE = 2048
RSA_MIN_BITS = 2048
RSA_MAX_BITS = 8192
#: Curves go-libp2p accepts for ECDSA keys.
ECDSA_CURVES = (ec.SECP256R1, ec.SECP384R1, ec.SECP521R1)
_DER = serialization.Encoding.DER
_SPKI = serialization.PublicFormat.SubjectPublicKeyInfo


def encode_key_message(key_type: int, data: bytes) -> bytes:
    """Deterministic ``PublicKey``/``PrivateKey`` protobuf: Type then Data, nothing else."""
    return protobuf.encode(KEY_SCHEMA, {"type": int(key_type), "data": data})


def decode_key_message(raw: bytes | bytearray | memoryview, max_size: int) -> tuple[int, bytes]:
    """Parse a ``PublicKey``/``PrivateKey`` message into ``(type, data)``.

    Both fields are required (proto2). Raises :class:`KeyDecodeError`.
    """
    try:
        msg = protobuf.decode(KEY_SCHEMA, raw, max_size=max_size)
    except DecodeError as exc:
        raise KeyDecodeError(f"malformed key protobuf: {exc}") from None
    if "type" not in msg or "data" not in msg:
        raise KeyDecodeError("key protobuf lacks its Type or Data field")
    return msg["type"], msg["data"]


class PublicKey:
    """Base class of the four libp2p public key types."""

    key_type: ClassVar[KeyType]
    __slots__ = ("_data",)

    def __init__(self, data: bytes) -> None:
        """``data``: the canonical encoding of the protobuf ``Data`` field.

        Decode keys with :meth:`from_protobuf` or a subclass's ``from_data``.
        """
        self._data = data

    @staticmethod
    def from_protobuf(raw: bytes | bytearray | memoryview) -> "PublicKey":
        """Decode a protobuf ``PublicKey``.

        Raises :class:`UnsupportedKeyType` for an unknown ``Type`` and
        :class:`KeyDecodeError` (a :class:`DecodeError`) for anything else malformed.
        """
        key_type, data = decode_key_message(raw, MAX_PUBLIC_KEY_SIZE)
        cls = _PUBLIC_KEY_CLASSES.get(key_type)
        if cls is None:
            raise UnsupportedKeyType(f"unsupported key type {key_type}")
        return cls.from_data(data)

    @classmethod
    def from_data(cls, data: bytes) -> "PublicKey":
        """Decode the type-specific ``Data`` bytes of this key type."""
        raise NotImplementedError

    def to_data(self) -> bytes:
        """The type-specific encoding that goes in the ``Data`` field."""
        return self._data

    def to_protobuf(self) -> bytes:
        """The deterministic protobuf ``PublicKey`` encoding (peer ids hash this)."""
        return encode_key_message(self.key_type, self._data)

    def verify(self, data: bytes | bytearray | memoryview, signature: bytes) -> bool:
        """True when ``signature`` is valid for ``data``; never raises for bad signatures."""
        raise NotImplementedError

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PublicKey):
            return NotImplemented
        return self.key_type == other.key_type and self._data == other._data

    def __hash__(self) -> int:
        return hash((self.key_type, self._data))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._data.hex()})"


class Ed25519PublicKey(PublicKey):
    """An Ed25519 public key (32 raw bytes)."""

    key_type = KeyType.ED25519
    __slots__ = ("_key",)

    def __init__(self, key: ed25519.Ed25519PublicKey) -> None:
        """Wrap a ``cryptography`` Ed25519 public key."""
        super().__init__(key.public_bytes_raw())
        self._key = key

    @classmethod
    def from_data(cls, data: bytes) -> "Ed25519PublicKey":
        if len(data) != 32:
            raise KeyDecodeError(f"Ed25519 public key of {len(data)} bytes, expected 32")
        try:
            return cls(ed25519.Ed25519PublicKey.from_public_bytes(bytes(data)))
        except ValueError as exc:
            raise KeyDecodeError(f"invalid Ed25519 public key: {exc}") from None

    def verify(self, data: bytes | bytearray | memoryview, signature: bytes) -> bool:
        try:
            self._key.verify(bytes(signature), bytes(data))
        except (InvalidSignature, ValueError, TypeError):
            return False
        return True


class _EcdsaStyleKey(PublicKey):
    """Shared verification for keys that sign SHA-256 digests with DER ECDSA."""

    __slots__ = ("_key",)

    def __init__(self, key: ec.EllipticCurvePublicKey, data: bytes) -> None:
        super().__init__(data)
        self._key = key

    def verify(self, data: bytes | bytearray | memoryview, signature: bytes) -> bool:
        try:
            self._key.verify(bytes(signature), bytes(data), ec.ECDSA(hashes.SHA256()))
        except (InvalidSignature, ValueError, TypeError):
            return False
        return True


class Secp256k1PublicKey(_EcdsaStyleKey):
    """A Secp256k1 public key; encoded as a 33-byte compressed point."""

    key_type = KeyType.SECP256K1
    __slots__ = ()

    @classmethod
    def from_key(cls, key: ec.EllipticCurvePublicKey) -> "Secp256k1PublicKey":
        """Wrap a ``cryptography`` secp256k1 public key."""
        point = key.public_bytes(serialization.Encoding.X962,
                                 serialization.PublicFormat.CompressedPoint)
        return cls(key, point)

    @classmethod
    def from_data(cls, data: bytes) -> "Secp256k1PublicKey":
        # go-libp2p also accepts the 65-byte uncompressed form; we re-encode compressed.
        if len(data) not in (33, 65):
            raise KeyDecodeError(f"Secp256k1 public key of {len(data)} bytes, expected 33")
        try:
            key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256K1(), bytes(data))
        except (ValueError, UnsupportedAlgorithm) as exc:
            raise KeyDecodeError(f"invalid Secp256k1 point: {exc}") from None
        return cls.from_key(key)


class EcdsaPublicKey(_EcdsaStyleKey):
    """An ECDSA (NIST P-256/384/521) public key; encoded as PKIX DER."""

    key_type = KeyType.ECDSA
    __slots__ = ()

    @classmethod
    def from_key(cls, key: ec.EllipticCurvePublicKey) -> "EcdsaPublicKey":
        """Wrap a ``cryptography`` NIST-curve public key."""
        if not isinstance(key.curve, ECDSA_CURVES):
            raise KeyDecodeError(f"unsupported ECDSA curve {key.curve.name}")
        return cls(key, key.public_bytes(_DER, _SPKI))

    @classmethod
    def from_data(cls, data: bytes) -> "EcdsaPublicKey":
        key = _load_spki(data, "ECDSA")
        if not isinstance(key, ec.EllipticCurvePublicKey):
            raise KeyDecodeError("ECDSA key data holds a non-EC key")
        return cls.from_key(key)


class RsaPublicKey(PublicKey):
    """An RSA public key (2048 to 8192 bits); encoded as PKIX DER."""

    key_type = KeyType.RSA
    __slots__ = ("_key",)

    def __init__(self, key: rsa.RSAPublicKey) -> None:
        """Wrap a ``cryptography`` RSA public key; ``KeyDecodeError`` outside the sizes."""
        bits = key.key_size
        if not RSA_MIN_BITS <= bits <= RSA_MAX_BITS:
            raise KeyDecodeError(
                f"RSA key of {bits} bits outside {RSA_MIN_BITS}..{RSA_MAX_BITS}")
        super().__init__(key.public_bytes(_DER, _SPKI))
        self._key = key

    @classmethod
    def from_data(cls, data: bytes) -> "RsaPublicKey":
        key = _load_spki(data, "RSA")
        if not isinstance(key, rsa.RSAPublicKey):
            raise KeyDecodeError("RSA key data holds a non-RSA key")
        return cls(key)

    def verify(self, data: bytes | bytearray | memoryview, signature: bytes) -> bool:
        try:
            self._key.verify(bytes(signature), bytes(data), padding.PKCS1v15(),
                             hashes.SHA256())
        except (InvalidSignature, ValueError, TypeError):
            return False
        return True


def _load_spki(data: bytes, what: str) -> object:
    try:
        return serialization.load_der_public_key(bytes(data))
    except (ValueError, UnsupportedAlgorithm, TypeError) as exc:
        raise KeyDecodeError(f"invalid {what} PKIX public key: {exc}") from None


_PUBLIC_KEY_CLASSES: dict[int, type[PublicKey]] = {
    KeyType.RSA: RsaPublicKey,
    KeyType.ED25519: Ed25519PublicKey,
    KeyType.SECP256K1: Secp256k1PublicKey,
    KeyType.ECDSA: EcdsaPublicKey,
}
