"""Identity: key pairs, public keys of the four libp2p key types, and peer ids."""

from .errors import InvalidPeerId, KeyDecodeError, UnsupportedKeyType
from .keypair import Keypair
from .keys import (
    EcdsaPublicKey,
    Ed25519PublicKey,
    KeyType,
    PublicKey,
    RsaPublicKey,
    Secp256k1PublicKey,
)
from .peer_id import PeerId

__all__ = [
    "EcdsaPublicKey",
    "Ed25519PublicKey",
    "InvalidPeerId",
    "KeyDecodeError",
    "KeyType",
    "Keypair",
    "PeerId",
    "PublicKey",
    "RsaPublicKey",
    "Secp256k1PublicKey",
    "UnsupportedKeyType",
]
