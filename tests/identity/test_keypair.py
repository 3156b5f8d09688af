"""Keypair: generation, seeds, PrivateKey protobuf storage, signing for each key type."""

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from libp2p_stream_sync.errors import DecodeError
from libp2p_stream_sync.identity import (
    EcdsaPublicKey,
    Ed25519PublicKey,
    KeyDecodeError,
    Keypair,
    KeyType,
    PeerId,
    PublicKey,
    RsaPublicKey,
    Secp256k1PublicKey,
    UnsupportedKeyType,
)
from libp2p_stream_sync.identity.keypair import SECP256K1_ORDER
from libp2p_stream_sync.identity.keys import decode_key_message, encode_key_message

# RFC 8032 section 7.1, TEST 1 (empty message).
RFC8032_SEED = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
RFC8032_PUBLIC = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
RFC8032_SIGNATURE = bytes.fromhex(
    "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bac"
    "c61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b")


@pytest.fixture(scope="module")
def rsa_keypair():
    return Keypair.generate(KeyType.RSA)


def test_from_seed_matches_rfc8032_test_1():
    kp = Keypair.from_seed(RFC8032_SEED)
    assert kp.key_type == KeyType.ED25519
    assert kp.public_key.to_data() == RFC8032_PUBLIC
    assert kp.public_key.to_protobuf() == bytes.fromhex("08011220") + RFC8032_PUBLIC
    assert kp.sign(b"") == RFC8032_SIGNATURE
    assert kp.to_bytes() == bytes.fromhex("08011240") + RFC8032_SEED + RFC8032_PUBLIC
    assert kp.peer_id.to_bytes() == bytes.fromhex("002408011220") + RFC8032_PUBLIC
    assert str(kp.peer_id).startswith("12D3KooW")
    assert kp.peer_id is kp.peer_id  # cached


def test_ed25519_private_key_forms():
    body_64 = RFC8032_SEED + RFC8032_PUBLIC
    for data in (RFC8032_SEED, body_64, body_64 + RFC8032_PUBLIC):
        raw = bytes([0x08, 0x01, 0x12, len(data)]) + data
        kp = Keypair.from_bytes(raw)
        assert kp.public_key.to_data() == RFC8032_PUBLIC
        assert kp.to_bytes() == bytes.fromhex("08011240") + body_64


@pytest.mark.parametrize("data,why", [
    (RFC8032_SEED + bytes(32), "does not match"),
    (RFC8032_SEED + RFC8032_PUBLIC + bytes(32), "mismatched"),
    (RFC8032_SEED[:31], "31 bytes"),
])
def test_bad_ed25519_private_keys(data, why):
    with pytest.raises(KeyDecodeError, match=why):
        Keypair.from_bytes(bytes([0x08, 0x01, 0x12, len(data)]) + data)


def test_from_seed_rejects_wrong_length():
    with pytest.raises(ValueError):
        Keypair.from_seed(b"\x01" * 31)


@pytest.mark.parametrize("key_type,cls", [
    (KeyType.ED25519, Ed25519PublicKey),
    (KeyType.SECP256K1, Secp256k1PublicKey),
    (KeyType.ECDSA, EcdsaPublicKey),
])
def test_generate_store_load_sign_verify(key_type, cls):
    kp = Keypair.generate(key_type)
    assert isinstance(kp.public_key, cls)
    loaded = Keypair.from_bytes(kp.to_bytes())
    assert loaded.public_key == kp.public_key
    assert loaded.to_bytes() == kp.to_bytes()
    assert loaded.peer_id == kp.peer_id == PeerId.from_public_key(kp.public_key)
    remote = PublicKey.from_protobuf(kp.public_key.to_protobuf())
    sig = kp.sign(b"message")
    assert remote.verify(b"message", sig)
    assert remote.verify(memoryview(b"message"), sig)
    assert not remote.verify(b"messagE", sig)
    assert not Keypair.generate(key_type).public_key.verify(b"message", sig)


def test_generate_defaults_to_ed25519():
    kp = Keypair.generate()
    assert kp.key_type == KeyType.ED25519
    assert len(kp.sign(b"x")) == 64
    assert kp.public_key != Keypair.generate().public_key


def test_rsa_generate_store_load_sign_verify(rsa_keypair):
    kp = rsa_keypair
    assert isinstance(kp.public_key, RsaPublicKey)
    assert kp.to_bytes()[:2] == b"\x08\x00"
    loaded = Keypair.from_bytes(kp.to_bytes())
    assert loaded.peer_id == kp.peer_id
    assert kp.peer_id.to_bytes()[:2] == b"\x12\x20"
    sig = kp.sign(b"m")
    assert len(sig) == 256
    # PKCS#1 v1.5 with SHA-256, checked independently.
    key = serialization.load_der_public_key(kp.public_key.to_data())
    key.verify(sig, b"m", padding.PKCS1v15(), hashes.SHA256())
    assert PublicKey.from_protobuf(kp.public_key.to_protobuf()).verify(b"m", sig)


def test_rsa_generate_rejects_small_keys():
    with pytest.raises(ValueError):
        Keypair.generate(KeyType.RSA, rsa_bits=1024)


def test_secp256k1_signatures_are_low_s_and_high_s_still_verifies():
    kp = Keypair.generate(KeyType.SECP256K1)
    for i in range(16):
        sig = kp.sign(bytes([i]))
        r, s = decode_dss_signature(sig)
        assert s <= SECP256K1_ORDER // 2
        high = encode_dss_signature(r, SECP256K1_ORDER - s)
        assert kp.public_key.verify(bytes([i]), high)


def test_secp256k1_private_key_is_the_raw_scalar():
    raw = bytes.fromhex("08021220") + (1).to_bytes(32, "big")
    kp = Keypair.from_bytes(raw)
    # Scalar 1: the public key is the generator point G (compressed).
    assert kp.public_key.to_data().hex() == (
        "0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798")
    assert kp.to_bytes() == raw


@pytest.mark.parametrize("scalar", [0, SECP256K1_ORDER, (1 << 256) - 1])
def test_secp256k1_scalar_out_of_range(scalar):
    with pytest.raises(KeyDecodeError, match="out of range"):
        Keypair.from_bytes(bytes.fromhex("08021220") + scalar.to_bytes(32, "big"))


def _private_msg(key_type: int, data: bytes) -> bytes:
    return encode_key_message(key_type, data)


def _private_data(kp: Keypair) -> bytes:
    return decode_key_message(kp.to_bytes(), 1 << 16)[1]


def test_ecdsa_private_key_must_be_on_a_nist_curve():
    k1 = ec.generate_private_key(ec.SECP256K1()).private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption())
    with pytest.raises(KeyDecodeError, match="P-256"):
        Keypair.from_bytes(_private_msg(3, k1))


def test_ecdsa_private_key_accepts_pkcs8_too():
    key = ec.generate_private_key(ec.SECP384R1())
    pkcs8 = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption())
    kp = Keypair.from_bytes(_private_msg(3, pkcs8))
    assert kp.public_key.verify(b"x", kp.sign(b"x"))
    # Stored back in SEC1 form, as go-libp2p writes it (30 81 a4 02 01 01 04 30 <scalar>).
    assert _private_data(kp)[:8] == bytes.fromhex("3081a40201010430")


def test_rsa_private_key_size_bounds():
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024).private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption())
    with pytest.raises(KeyDecodeError, match="1024 bits"):
        Keypair.from_bytes(_private_msg(0, small))


@pytest.mark.parametrize("raw,exc", [
    (_private_msg(5, b"x" * 32), UnsupportedKeyType),
    (_private_msg(0, b"not der"), KeyDecodeError),
    (_private_msg(3, b"\x30\x03\x02\x01\x01"), KeyDecodeError),
    (b"\x08\x01", KeyDecodeError),
    (b"\x12\x20" + bytes(32), KeyDecodeError),
    (b"\x08\x01\x12\x40", KeyDecodeError),
    (_private_msg(1, bytes(70000)), KeyDecodeError),
])
def test_bad_private_keys_raise_decode_errors(raw, exc):
    with pytest.raises(exc):
        Keypair.from_bytes(raw)
    assert issubclass(exc, DecodeError) and issubclass(exc, ValueError)


def test_ecdsa_rsa_keys_of_another_type_are_rejected(rsa_keypair):
    with pytest.raises(KeyDecodeError, match="non-RSA"):
        Keypair.from_bytes(_private_msg(0, _private_data(Keypair.generate(KeyType.ECDSA))))
    with pytest.raises(KeyDecodeError, match="P-256"):
        Keypair.from_bytes(_private_msg(3, _private_data(rsa_keypair)))


def test_repr_names_type_and_peer():
    kp = Keypair.from_seed(RFC8032_SEED)
    assert repr(kp) == f"Keypair(ED25519, {kp.peer_id})"
