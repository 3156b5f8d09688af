"""PeerId: the multihash of a public key's protobuf encoding (peer-ids spec).

Keys whose protobuf encoding is at most 42 bytes (Ed25519, Secp256k1) are inlined
with the identity multihash; larger ones (RSA, ECDSA) are hashed with sha2-256.
Text forms: base58btc of the multihash (canonical, ``12D3KooW...``/``Qm...``) and a
CIDv1 with the ``libp2p-key`` multicodec (``bafz...``).
"""

from __future__ import annotations

import functools

from ..codec import base58, cid, multihash
from ..errors import DecodeError
from .errors import InvalidPeerId, KeyDecodeError
from .keys import PublicKey

#: Protobuf-encoded keys up to this size are inlined (identity multihash).
MAX_INLINE_KEY_LENGTH = 42
#: Longer text is never a peer id (an inlined id is ~53 base58 characters).
MAX_TEXT_LENGTH = 256


@functools.total_ordering
class PeerId:
    """A libp2p peer id: immutable, hashable, ordered by its multihash bytes."""

    __slots__ = ("_mh", "_code", "_text")

    def __init__(self, mh: bytes | bytearray | memoryview) -> None:
        """Wrap multihash bytes; raises :class:`InvalidPeerId` unless supported.

        Supported: sha2-256, or identity with a digest of at most 42 bytes.
        """
        raw = bytes(mh)
        try:
            decoded = multihash.decode(raw, max_identity_digest=MAX_INLINE_KEY_LENGTH)
        except DecodeError as exc:
            raise InvalidPeerId(f"invalid peer id multihash: {exc}") from None
        self._mh = raw
        self._code = decoded.code
        self._text: str | None = None

    @classmethod
    def from_bytes(cls, raw: bytes | bytearray | memoryview) -> "PeerId":
        """Parse the binary form (a multihash); raises :class:`InvalidPeerId`."""
        return cls(raw)

    @classmethod
    def from_public_key(cls, public_key: PublicKey) -> "PeerId":
        """Derive the peer id of ``public_key``."""
        encoded = public_key.to_protobuf()
        code = multihash.IDENTITY if len(encoded) <= MAX_INLINE_KEY_LENGTH else multihash.SHA2_256
        return cls(multihash.digest(code, encoded))

    @classmethod
    def from_string(cls, text: str) -> "PeerId":
        """Parse base58btc (``1...``, ``Qm...``) or CIDv1 (``bafz...``) text.

        Raises :class:`InvalidPeerId` (a ``ValueError``) saying why ``text`` is not
        a peer id.
        """
        if not isinstance(text, str):
            raise InvalidPeerId(f"peer id text must be a str, not {type(text).__name__}")
        if len(text) > MAX_TEXT_LENGTH:
            raise InvalidPeerId(f"peer id text of {len(text)} characters is too long")
        if text.startswith(("1", "Qm")):
            try:
                raw = base58.decode(text)
            except DecodeError as exc:
                raise InvalidPeerId(f"invalid base58btc peer id {text!r}: {exc}") from None
            return cls(raw)
        try:
            decoded = cid.decode(text)
        except DecodeError as exc:
            raise InvalidPeerId(f"{text!r} is neither a base58btc peer id nor a CID: "
                                f"{exc}") from None
        if decoded.codec != cid.LIBP2P_KEY:
            raise InvalidPeerId(f"CID {text!r} has multicodec 0x{decoded.codec:x}, "
                                f"not libp2p-key (0x72)")
        return cls(decoded.multihash)

    def to_bytes(self) -> bytes:
        """The binary form: the multihash bytes."""
        return self._mh

    def to_base58(self) -> str:
        """The canonical base58btc text (same as ``str()``)."""
        if self._text is None:
            self._text = base58.encode(self._mh)
        return self._text

    def to_cid_string(self) -> str:
        """The CIDv1 text form: ``libp2p-key`` multicodec, multibase base32 (``bafz...``)."""
        return cid.encode(cid.LIBP2P_KEY, self._mh)

    def extract_public_key(self) -> PublicKey | None:
        """The inlined public key of an identity-multihash id; ``None`` for sha2-256.

        Raises :class:`KeyDecodeError` when the inlined bytes are not a valid key in
        its canonical encoding (so the key always derives this very peer id).
        """
        if self._code != multihash.IDENTITY:
            return None
        inline = self._mh[2:]  # identity code and a one-byte length (at most 42)
        key = PublicKey.from_protobuf(inline)
        if key.to_protobuf() != inline:
            raise KeyDecodeError("inlined public key is not canonically encoded")
        return key

    def matches_public_key(self, public_key: PublicKey) -> bool:
        """True when ``public_key`` derives this peer id."""
        return PeerId.from_public_key(public_key) == self

    def __str__(self) -> str:
        return self.to_base58()

    def __repr__(self) -> str:
        return f"PeerId({self.to_base58()!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PeerId):
            return NotImplemented
        return self._mh == other._mh

    def __lt__(self, other: "PeerId") -> bool:
        if not isinstance(other, PeerId):
            return NotImplemented
        return self._mh < other._mh

    def __hash__(self) -> int:
        return hash(self._mh)

    def __reduce__(self):
        return (PeerId, (self._mh,))
