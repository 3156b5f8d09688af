"""The Noise Protocol Framework core that /noise uses: Noise_XX_25519_ChaChaPoly_SHA256.

This module holds the error classes and the ``CipherState`` / ``SymmetricState``
objects of the Noise specification (revision 34, sections 5.1 and 5.2), specialised
to the single cipher suite libp2p allows. The libp2p handshake itself (message
order, payloads, peer ids) lives in :mod:`.noise`.
"""

from __future__ import annotations

import hashlib
import hmac
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ..errors import ProtocolError

#: The only protocol name libp2p's /noise accepts. It is exactly HASHLEN bytes long,
#: so the initial handshake hash is the name itself (Noise spec 5.2 InitializeSymmetric).
PROTOCOL_NAME = b"Noise_XX_25519_ChaChaPoly_SHA256"
DHLEN = 32
HASHLEN = 32
TAGLEN = 16
#: Largest Noise message (handshake or transport), excluding the 2-byte length prefix.
MAX_MESSAGE_LEN = 65535
#: Nonce 2**64 - 1 is reserved by the Noise spec; reaching it ends the cipher.
MAX_NONCE = (1 << 64) - 1

_NONCE = struct.Struct("<4xQ")  # ChaChaPoly: 32 zero bits then the 64-bit counter, little-endian
pack_nonce = _NONCE.pack


class NoiseError(ProtocolError):
    """The remote broke the Noise protocol (bad message, authentication failure...).

    After this error the connection must be closed.
    """


class DecryptionError(NoiseError):
    """A Noise message failed AEAD authentication (tampered, replayed or reordered)."""


class NonceExhausted(NoiseError):
    """A cipher used its last nonce; the connection must be closed rather than reuse one."""


def hkdf2(chaining_key: bytes, ikm: bytes) -> tuple[bytes, bytes]:
    """The Noise ``HKDF`` function with two outputs, on HMAC-SHA256."""
    temp_key = hmac.digest(chaining_key, ikm, "sha256")
    out1 = hmac.digest(temp_key, b"\x01", "sha256")
    out2 = hmac.digest(temp_key, out1 + b"\x02", "sha256")
    return out1, out2


def x25519_public_bytes(key: X25519PrivateKey) -> bytes:
    """The 32-byte RFC 7748 encoding of ``key``'s public key."""
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def x25519_private_key(private: bytes | None) -> X25519PrivateKey:
    """An X25519 private key from 32 raw bytes, or a fresh random one for ``None``."""
    if private is None:
        return X25519PrivateKey.generate()
    if len(private) != DHLEN:
        raise ValueError("an X25519 private key is 32 bytes")
    return X25519PrivateKey.from_private_bytes(bytes(private))


def dh(private: X25519PrivateKey, remote_public: bytes) -> bytes:
    """X25519 with a peer-supplied public key; a low-order key raises :class:`NoiseError`."""
    try:
        return private.exchange(X25519PublicKey.from_public_bytes(remote_public))
    except ValueError as exc:  # all-zero shared secret: the remote sent a low-order point
        raise NoiseError("remote X25519 public key is invalid (low-order point)") from exc


class CipherState:
    """A key and a nonce counter (Noise spec 5.1); used during the handshake only.

    The transport after the handshake manages its ciphers itself for speed
    (see :class:`.noise.NoiseTransport`).
    """

    __slots__ = ("_aead", "nonce")

    def __init__(self) -> None:
        self._aead: ChaCha20Poly1305 | None = None
        self.nonce = 0

    @property
    def has_key(self) -> bool:
        """Whether a key has been set (before that, encryption is the identity)."""
        return self._aead is not None

    def initialize_key(self, key: bytes) -> None:
        """Set a new key and reset the nonce."""
        self._aead = ChaCha20Poly1305(key)
        self.nonce = 0

    def _next_nonce(self) -> bytes:
        if self.nonce >= MAX_NONCE:
            raise NonceExhausted("Noise nonce space exhausted")
        nonce = pack_nonce(self.nonce)
        self.nonce += 1
        return nonce

    def encrypt_with_ad(self, ad: bytes, plaintext: bytes) -> bytes:
        """Encrypt ``plaintext`` (returned unchanged when no key is set)."""
        if self._aead is None:
            return bytes(plaintext)
        return self._aead.encrypt(self._next_nonce(), plaintext, ad)

    def decrypt_with_ad(self, ad: bytes, ciphertext: bytes) -> bytes:
        """Decrypt and authenticate ``ciphertext``; failure raises :class:`DecryptionError`."""
        if self._aead is None:
            return bytes(ciphertext)
        if len(ciphertext) < TAGLEN:
            raise DecryptionError("Noise ciphertext shorter than its authentication tag")
        # Noise spec 5.1: the nonce advances only on success.
        if self.nonce >= MAX_NONCE:
            raise NonceExhausted("Noise nonce space exhausted")
        try:
            plaintext = self._aead.decrypt(pack_nonce(self.nonce), ciphertext, ad)
        except InvalidTag as exc:
            raise DecryptionError("Noise handshake message failed authentication") from exc
        self.nonce += 1
        return plaintext


class SymmetricState:
    """The chaining key, handshake hash and cipher of a Noise handshake (Noise spec 5.2)."""

    __slots__ = ("ck", "h", "cipher")

    def __init__(self, prologue: bytes = b"") -> None:
        self.h = PROTOCOL_NAME
        self.ck = PROTOCOL_NAME
        self.cipher = CipherState()
        self.mix_hash(prologue)

    def mix_hash(self, data: bytes) -> None:
        """``h = SHA256(h || data)``."""
        self.h = hashlib.sha256(self.h + data).digest()

    def mix_key(self, ikm: bytes) -> None:
        """Derive a new chaining key and cipher key from DH output ``ikm``."""
        self.ck, temp_key = hkdf2(self.ck, ikm)
        self.cipher.initialize_key(temp_key)

    def encrypt_and_hash(self, plaintext: bytes) -> bytes:
        """Encrypt with the handshake hash as associated data, then hash the ciphertext."""
        ciphertext = self.cipher.encrypt_with_ad(self.h, plaintext)
        self.mix_hash(ciphertext)
        return ciphertext

    def decrypt_and_hash(self, ciphertext: bytes) -> bytes:
        """Decrypt with the handshake hash as associated data, then hash the ciphertext."""
        plaintext = self.cipher.decrypt_with_ad(self.h, ciphertext)
        self.mix_hash(ciphertext)
        return plaintext

    def split(self) -> tuple[bytes, bytes]:
        """The two transport keys: (initiator → responder, responder → initiator)."""
        return hkdf2(self.ck, b"")
