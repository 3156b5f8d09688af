"""PublicKey.from_protobuf / to_protobuf / verify for the four key types."""

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from hypothesis import given, settings, strategies as st

from libp2p_stream_sync.errors import DecodeError
from libp2p_stream_sync.identity import (
    EcdsaPublicKey,
    Ed25519PublicKey,
    KeyDecodeError,
    Keypair,
    KeyType,
    PublicKey,
    RsaPublicKey,
    Secp256k1PublicKey,
    UnsupportedKeyType,
)
from libp2p_stream_sync.identity.keys import encode_key_message

# RFC 8032 section 7.1, TEST 2 (one-byte message 0x72).
RFC8032_T2_PUBLIC = bytes.fromhex(
    "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c")
RFC8032_T2_SIGNATURE = bytes.fromhex(
    "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e"
    "458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00")
SPKI = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _spki(key) -> bytes:
    return key.public_key().public_bytes(*SPKI)


def test_ed25519_verifies_rfc8032_test_2():
    pk = PublicKey.from_protobuf(bytes.fromhex("08011220") + RFC8032_T2_PUBLIC)
    assert isinstance(pk, Ed25519PublicKey)
    assert pk.verify(b"\x72", RFC8032_T2_SIGNATURE)
    assert not pk.verify(b"\x73", RFC8032_T2_SIGNATURE)


@pytest.mark.parametrize("key_type", list(KeyType), ids=lambda t: t.name)
@pytest.mark.parametrize("signature", [b"", b"\x00", b"\x30\x06\x02\x01\x01\x02\x01\x01",
                                       bytes(64), bytes(256), b"\xff" * 600])
def test_verify_never_raises_on_bad_signatures(key_type, signature, keypairs):
    assert keypairs[key_type].public_key.verify(b"data", signature) is False


@pytest.fixture(scope="module")
def keypairs():
    return {t: Keypair.generate(t) for t in KeyType}


def test_fields_out_of_order_are_accepted_and_re_encoded_canonically():
    canonical = bytes.fromhex("08011220") + RFC8032_T2_PUBLIC
    reordered = bytes.fromhex("1220") + RFC8032_T2_PUBLIC + bytes.fromhex("0801")
    assert PublicKey.from_protobuf(reordered).to_protobuf() == canonical


def test_secp256k1_uncompressed_point_is_re_encoded_compressed():
    key = ec.generate_private_key(ec.SECP256K1()).public_key()
    uncompressed = key.public_bytes(serialization.Encoding.X962,
                                    serialization.PublicFormat.UncompressedPoint)
    compressed = key.public_bytes(serialization.Encoding.X962,
                                  serialization.PublicFormat.CompressedPoint)
    pk = PublicKey.from_protobuf(encode_key_message(2, uncompressed))
    assert isinstance(pk, Secp256k1PublicKey)
    assert pk.to_protobuf() == encode_key_message(2, compressed)
    assert len(pk.to_protobuf()) == 37


@pytest.mark.parametrize("curve", [ec.SECP256R1, ec.SECP384R1, ec.SECP521R1])
def test_ecdsa_nist_curves(curve):
    priv = ec.generate_private_key(curve())
    data = _spki(priv)
    pk = PublicKey.from_protobuf(encode_key_message(3, data))
    assert isinstance(pk, EcdsaPublicKey)
    assert pk.to_data() == data
    from cryptography.hazmat.primitives import hashes
    assert pk.verify(b"abc", priv.sign(b"abc", ec.ECDSA(hashes.SHA256())))


def test_rsa_public_key_is_pkix():
    priv = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pk = PublicKey.from_protobuf(encode_key_message(0, _spki(priv)))
    assert isinstance(pk, RsaPublicKey)
    assert pk.to_data() == _spki(priv)
    assert pk.to_protobuf()[:4] == bytes.fromhex("080012a6")  # 294-byte PKIX, 2048 bits


def _bad_cases():
    rsa1024 = _spki(rsa.generate_private_key(public_exponent=65537, key_size=1024))
    p256 = _spki(ec.generate_private_key(ec.SECP256R1()))
    k1_spki = _spki(ec.generate_private_key(ec.SECP256K1()))
    ed_spki = _spki(ed25519.Ed25519PrivateKey.generate())
    not_on_curve = b"\x02" + b"\xff" * 32  # x >= p
    return [
        (encode_key_message(4, b"x"), UnsupportedKeyType, "unsupported key type 4"),
        (encode_key_message(1000, b"x"), UnsupportedKeyType, "unsupported key type 1000"),
        (b"\x08\x01", KeyDecodeError, "Type or Data"),
        (b"\x12\x01x", KeyDecodeError, "Type or Data"),
        (b"\x08\x01\x12\x20" + bytes(10), KeyDecodeError, "malformed"),
        (b"\x08\x01\x12\x00\x0a\x01", KeyDecodeError, "malformed"),
        (encode_key_message(1, bytes(31)), KeyDecodeError, "31 bytes"),
        (encode_key_message(2, bytes(33)), KeyDecodeError, "Secp256k1"),
        (encode_key_message(2, not_on_curve), KeyDecodeError, "Secp256k1"),
        (encode_key_message(2, bytes(20)), KeyDecodeError, "20 bytes"),
        (encode_key_message(0, rsa1024), KeyDecodeError, "1024 bits"),
        (encode_key_message(0, p256), KeyDecodeError, "non-RSA"),
        (encode_key_message(0, b"\x30\x00"), KeyDecodeError, "PKIX"),
        (encode_key_message(3, rsa1024), KeyDecodeError, "non-EC"),
        (encode_key_message(3, ed_spki), KeyDecodeError, "non-EC"),
        (encode_key_message(3, k1_spki), KeyDecodeError, "curve secp256k1"),
        (encode_key_message(3, p256 + b"\x00"), KeyDecodeError, "PKIX"),
        (encode_key_message(0, bytes(3000)), KeyDecodeError, "exceeds"),
    ]


@pytest.mark.parametrize("raw,exc,why", _bad_cases())
def test_bad_public_keys_raise_decode_errors(raw, exc, why):
    with pytest.raises(exc, match=why):
        PublicKey.from_protobuf(raw)


def test_error_hierarchy():
    assert issubclass(UnsupportedKeyType, KeyDecodeError)
    assert issubclass(KeyDecodeError, DecodeError)
    assert issubclass(KeyDecodeError, ValueError)


def test_equality_and_hash(keypairs):
    a = keypairs[KeyType.ED25519].public_key
    b = PublicKey.from_protobuf(a.to_protobuf())
    assert a == b and hash(a) == hash(b) and a is not b
    assert a != keypairs[KeyType.SECP256K1].public_key
    assert a != a.to_protobuf()
    assert repr(a) == f"Ed25519PublicKey({a.to_data().hex()})"


@settings(max_examples=300)
@given(st.binary(max_size=120))
def test_arbitrary_bytes_only_raise_key_decode_error(data):
    try:
        PublicKey.from_protobuf(data)
    except KeyDecodeError:
        pass


@settings(max_examples=300)
@given(st.integers(0, 6), st.binary(max_size=120))
def test_arbitrary_key_data_only_raises_key_decode_error(key_type, data):
    try:
        pk = PublicKey.from_protobuf(encode_key_message(key_type, data))
    except KeyDecodeError:
        return
    assert pk.verify(b"x", data) in (True, False)


@settings(max_examples=100)
@given(st.binary(max_size=100), st.integers(0, 99), st.integers(0, 255))
def test_mutated_valid_keys_only_raise_key_decode_error(tail, pos, byte):
    for base in _VALID:
        mutated = bytearray(base)
        mutated[pos % len(mutated)] = byte
        for candidate in (bytes(mutated), bytes(mutated[:pos % len(mutated)]), base + tail):
            try:
                PublicKey.from_protobuf(candidate)
            except KeyDecodeError:
                pass


_VALID = [Keypair.generate(t).public_key.to_protobuf()
          for t in (KeyType.ED25519, KeyType.SECP256K1, KeyType.ECDSA)]
