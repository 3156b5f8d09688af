"""Local key pairs: generate, load and store (protobuf ``PrivateKey``), and sign.

Ed25519 is the default. Secp256k1, ECDSA and RSA private keys can also be loaded,
generated and used for signing, with the encodings go-libp2p and js-libp2p write:
Ed25519 ``seed || public key`` (64 bytes), Secp256k1 the 32-byte scalar, ECDSA a
SEC1 ``ECPrivateKey`` DER, RSA a PKCS#1 DER.
"""

from __future__ import annotations

from typing import Union

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from .errors import KeyDecodeError, UnsupportedKeyType
from .keys import (
    ECDSA_CURVES,
    RSA_MAX_BITS,
    RSA_MIN_BITS,
    EcdsaPublicKey,
    Ed25519PublicKey,
    KeyType,
    PublicKey,
    RsaPublicKey,
    Secp256k1PublicKey,
    decode_key_message,
    encode_key_message,
)
from .peer_id import PeerId

#: An 8192-bit RSA PKCS#1 key is ~4.7 KB.
MAX_PRIVATE_KEY_SIZE = 16384
SECP256K1_ORDER = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
_DER = serialization.Encoding.DER
_TRADITIONAL = serialization.PrivateFormat.TraditionalOpenSSL
_NO_ENCRYPTION = serialization.NoEncryption()

_PrivateKey = Union[ed25519.Ed25519PrivateKey, ec.EllipticCurvePrivateKey,
                    rsa.RSAPrivateKey]


class Keypair:
    """A private key with its libp2p :class:`PublicKey` and :class:`PeerId`."""

    __slots__ = ("_private", "_public", "_peer_id")

    def __init__(self, private_key: _PrivateKey) -> None:
        """Wrap a ``cryptography`` private key (Ed25519, secp256k1, NIST EC or RSA)."""
        self._private = private_key
        self._public = _public_key_of(private_key)
        self._peer_id: PeerId | None = None

    @classmethod
    def generate(cls, key_type: KeyType = KeyType.ED25519, *,
                 rsa_bits: int = 2048) -> "Keypair":
        """A fresh key pair (Ed25519 unless ``key_type`` says otherwise; ECDSA is P-256)."""
        if key_type == KeyType.ED25519:
            return cls(ed25519.Ed25519PrivateKey.generate())
        if key_type == KeyType.SECP256K1:
            return cls(ec.generate_private_key(ec.SECP256K1()))
        if key_type == KeyType.ECDSA:
            return cls(ec.generate_private_key(ec.SECP256R1()))
        if key_type == KeyType.RSA:
            if not RSA_MIN_BITS <= rsa_bits <= RSA_MAX_BITS:
                raise ValueError(f"RSA keys must have {RSA_MIN_BITS}..{RSA_MAX_BITS} bits")
            return cls(rsa.generate_private_key(public_exponent=65537, key_size=rsa_bits))
        raise ValueError(f"unknown key type {key_type!r}")

    @classmethod
    def from_seed(cls, seed32: bytes) -> "Keypair":
        """The Ed25519 key pair of a 32-byte private seed (RFC 8032)."""
        if len(seed32) != 32:
            raise ValueError(f"an Ed25519 seed is 32 bytes, got {len(seed32)}")
        return cls(ed25519.Ed25519PrivateKey.from_private_bytes(bytes(seed32)))

    @classmethod
    def from_bytes(cls, raw: bytes | bytearray | memoryview) -> "Keypair":
        """Load a protobuf ``PrivateKey`` (as go/js/rust libp2p store them).

        Raises :class:`UnsupportedKeyType` or :class:`KeyDecodeError`.
        """
        key_type, data = decode_key_message(raw, MAX_PRIVATE_KEY_SIZE)
        loader = _PRIVATE_LOADERS.get(key_type)
        if loader is None:
            raise UnsupportedKeyType(f"unsupported key type {key_type}")
        return cls(loader(data))

    @property
    def key_type(self) -> KeyType:
        """The libp2p key type of this pair."""
        return self._public.key_type

    @property
    def public_key(self) -> PublicKey:
        """The libp2p public key."""
        return self._public

    @property
    def peer_id(self) -> PeerId:
        """The peer id derived from :attr:`public_key`."""
        if self._peer_id is None:
            self._peer_id = PeerId.from_public_key(self._public)
        return self._peer_id

    def sign(self, data: bytes | bytearray | memoryview) -> bytes:
        """Sign ``data`` the way libp2p verifies signatures for this key type."""
        key = self._private
        data = bytes(data)
        if isinstance(key, ed25519.Ed25519PrivateKey):
            return key.sign(data)
        if isinstance(key, rsa.RSAPrivateKey):
            return key.sign(data, padding.PKCS1v15(), hashes.SHA256())
        der = key.sign(data, ec.ECDSA(hashes.SHA256()))
        if isinstance(key.curve, ec.SECP256K1):
            der = _low_s(der)
        return der

    def to_bytes(self) -> bytes:
        """The protobuf ``PrivateKey`` encoding (keep it secret)."""
        return encode_key_message(self.key_type, self._private_data())

    def _private_data(self) -> bytes:
        key = self._private
        if isinstance(key, ed25519.Ed25519PrivateKey):
            return key.private_bytes_raw() + self._public.to_data()
        if isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256K1):
            return key.private_numbers().private_value.to_bytes(32, "big")
        return key.private_bytes(_DER, _TRADITIONAL, _NO_ENCRYPTION)

    def __repr__(self) -> str:
        return f"Keypair({self.key_type.name}, {self.peer_id})"


def _public_key_of(key: _PrivateKey) -> PublicKey:
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return Ed25519PublicKey(key.public_key())
    if isinstance(key, ec.EllipticCurvePrivateKey):
        if isinstance(key.curve, ec.SECP256K1):
            return Secp256k1PublicKey.from_key(key.public_key())
        return EcdsaPublicKey.from_key(key.public_key())
    if isinstance(key, rsa.RSAPrivateKey):
        return RsaPublicKey(key.public_key())
    raise TypeError(f"unsupported private key object {type(key).__name__}")


def _low_s(der: bytes) -> bytes:
    # Bitcoin-style verifiers (BIP 62/146) reject high-S signatures; normalize.
    r, s = decode_dss_signature(der)
    if s > SECP256K1_ORDER // 2:
        return encode_dss_signature(r, SECP256K1_ORDER - s)
    return der


def _load_ed25519(data: bytes) -> _PrivateKey:
    if len(data) == 96:
        # Legacy go-libp2p layout: seed || public || public; the copies must agree.
        if data[32:64] != data[64:]:
            raise KeyDecodeError("legacy 96-byte Ed25519 key has mismatched public keys")
        data = data[:64]
    if len(data) not in (32, 64):
        raise KeyDecodeError(f"Ed25519 private key of {len(data)} bytes, expected 64 or 32")
    key = ed25519.Ed25519PrivateKey.from_private_bytes(data[:32])
    if len(data) == 64 and key.public_key().public_bytes_raw() != data[32:]:
        raise KeyDecodeError("Ed25519 private key's public half does not match its seed")
    return key


def _load_secp256k1(data: bytes) -> _PrivateKey:
    if len(data) != 32:
        raise KeyDecodeError(f"Secp256k1 private key of {len(data)} bytes, expected 32")
    scalar = int.from_bytes(data, "big")
    if not 0 < scalar < SECP256K1_ORDER:
        raise KeyDecodeError("Secp256k1 private scalar out of range")
    return ec.derive_private_key(scalar, ec.SECP256K1())


def _load_der_private(data: bytes, what: str) -> object:
    try:
        return serialization.load_der_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise KeyDecodeError(f"invalid {what} private key DER: {exc}") from None


def _load_ecdsa(data: bytes) -> _PrivateKey:
    key = _load_der_private(data, "ECDSA")
    if not (isinstance(key, ec.EllipticCurvePrivateKey)
            and isinstance(key.curve, ECDSA_CURVES)):
        raise KeyDecodeError("ECDSA private key is not on P-256, P-384 or P-521")
    return key


def _load_rsa(data: bytes) -> _PrivateKey:
    key = _load_der_private(data, "RSA")
    if not isinstance(key, rsa.RSAPrivateKey):
        raise KeyDecodeError("RSA private key data holds a non-RSA key")
    if not RSA_MIN_BITS <= key.key_size <= RSA_MAX_BITS:
        raise KeyDecodeError(f"RSA key of {key.key_size} bits outside "
                             f"{RSA_MIN_BITS}..{RSA_MAX_BITS}")
    return key


_PRIVATE_LOADERS = {
    KeyType.ED25519: _load_ed25519,
    KeyType.SECP256K1: _load_secp256k1,
    KeyType.ECDSA: _load_ecdsa,
    KeyType.RSA: _load_rsa,
}
