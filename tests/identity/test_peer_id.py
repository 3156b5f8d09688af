"""PeerId: derivation rule, parsing of both text forms, validation, ordering, hashing."""

import pickle

import pytest
from hypothesis import given, settings, strategies as st

from libp2p_stream_sync.codec import base58, cid, multihash
from libp2p_stream_sync.identity import (
    InvalidPeerId,
    KeyDecodeError,
    Keypair,
    KeyType,
    PeerId,
)

SEED = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
ED_PUBLIC = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
SHA_ID = "QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N"


class _FakeKey:
    """Stands in for a PublicKey whose protobuf encoding has a chosen length."""

    def __init__(self, encoded: bytes) -> None:
        self.encoded = encoded

    def to_protobuf(self) -> bytes:
        return self.encoded


def test_inline_threshold_is_42_bytes():
    at = PeerId.from_public_key(_FakeKey(b"k" * 42))
    assert at.to_bytes() == b"\x00\x2a" + b"k" * 42
    over = PeerId.from_public_key(_FakeKey(b"k" * 43))
    assert over.to_bytes() == multihash.digest(multihash.SHA2_256, b"k" * 43)


def test_ed25519_peer_id_bytes_and_text():
    pid = Keypair.from_seed(SEED).peer_id
    assert pid.to_bytes() == bytes.fromhex("002408011220") + ED_PUBLIC
    assert str(pid) == base58.encode(pid.to_bytes()) == pid.to_base58()
    assert pid.to_cid_string() == cid.encode(0x72, pid.to_bytes())
    assert pid.to_cid_string().startswith("bafzaa")
    assert repr(pid) == f"PeerId({str(pid)!r})"


def test_from_bytes_round_trip_and_accepts_views():
    pid = Keypair.from_seed(SEED).peer_id
    assert PeerId.from_bytes(pid.to_bytes()) == pid
    assert PeerId.from_bytes(memoryview(bytearray(pid.to_bytes()))) == pid


@pytest.mark.parametrize("raw,why", [
    (b"", "truncated"),
    (b"\x12\x20" + bytes(31), "truncated"),
    (b"\x12\x20" + bytes(33), "trailing"),
    (b"\x12\x14" + bytes(20), "expected 32"),
    (b"\x11\x14" + bytes(20), "unsupported multihash code 0x11"),
    (b"\x00\x2b" + bytes(43), "exceeds 42"),
    (b"\x01\x00", "unsupported"),
])
def test_from_bytes_rejects_unsupported_multihashes(raw, why):
    with pytest.raises(InvalidPeerId, match=why):
        PeerId.from_bytes(raw)


@pytest.mark.parametrize("text,why", [
    ("", "neither"),
    # Dropping or adding a base58 digit changes every byte, including the code.
    ("Qm", "invalid peer id multihash: unsupported multihash code 0x5"),
    ("QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5", "unsupported multihash code 0x50"),
    ("QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5NN", "unsupported multihash code 0x4"),
    ("1" + base58.encode(b"\x20" + bytes(10)), "truncated"),  # "1" = leading 0x00 code
    ("1" + base58.encode(b"\x01ab"), "1 trailing"),
    ("QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE0DWjhx5N", "invalid base58btc character '0'"),
    ("12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5Sl", "character 'l'"),
    (" " + SHA_ID, "neither"),
    ("bafkqaaa", "not libp2p-key"),  # a valid CID with the raw (0x55) codec
    ("bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi", "not libp2p-key"),
    ("xyz", "unsupported multibase prefix"),
    ("b" + "a" * 300, "too long"),
])
def test_from_string_rejects_invalid_text(text, why):
    with pytest.raises(InvalidPeerId, match=why):
        PeerId.from_string(text)
    with pytest.raises(ValueError):
        PeerId.from_string(text)


def test_from_string_rejects_non_str():
    with pytest.raises(InvalidPeerId, match="must be a str"):
        PeerId.from_string(b"QmYy")  # type: ignore[arg-type]


def test_base58_cid_and_uppercase_base32_forms():
    pid = PeerId.from_string(SHA_ID)
    assert PeerId.from_string("z" + base58.encode(b"\x01\x72" + pid.to_bytes())) == pid
    assert PeerId.from_string("B" + pid.to_cid_string()[1:].upper()) == pid


def test_ordering_equality_hashing():
    ids = sorted({Keypair.generate().peer_id for _ in range(8)})
    assert [p.to_bytes() for p in ids] == sorted(p.to_bytes() for p in ids)
    a, b = ids[0], ids[1]
    assert a < b and b > a and a <= a and not (b < a)
    assert a != b and a == PeerId.from_bytes(a.to_bytes())
    assert len({a, PeerId.from_string(str(a)), PeerId.from_string(a.to_cid_string())}) == 1
    assert a != str(a)
    with pytest.raises(TypeError):
        a < str(a)  # noqa: B015


def test_pickle_round_trip():
    pid = PeerId.from_string(SHA_ID)
    assert pickle.loads(pickle.dumps(pid)) == pid


def test_matches_public_key():
    kp = Keypair.generate(KeyType.SECP256K1)
    assert kp.peer_id.matches_public_key(kp.public_key)
    assert not kp.peer_id.matches_public_key(Keypair.generate().public_key)


def test_extract_public_key_of_invalid_inline_key_raises_key_decode_error():
    pid = PeerId.from_bytes(b"\x00\x04\x08\x01\x12\x00")
    with pytest.raises(KeyDecodeError):
        pid.extract_public_key()


@settings(max_examples=100)
@given(st.binary(min_size=32, max_size=32))
def test_ed25519_round_trips(seed):
    kp = Keypair.from_seed(seed)
    pid = kp.peer_id
    assert str(pid).startswith("12D3KooW")
    assert PeerId.from_string(str(pid)) == pid
    assert PeerId.from_string(pid.to_cid_string()) == pid
    assert PeerId.from_bytes(pid.to_bytes()) == pid
    assert pid.extract_public_key() == kp.public_key


@settings(max_examples=150)
@given(st.binary(max_size=60))
def test_sha256_round_trips(data):
    pid = PeerId.from_bytes(multihash.digest(multihash.SHA2_256, data))
    assert str(pid).startswith("Qm")
    assert PeerId.from_string(str(pid)) == pid == PeerId.from_string(pid.to_cid_string())


@settings(max_examples=300)
@given(st.binary(max_size=50))
def test_arbitrary_bytes_only_raise_invalid_peer_id(data):
    try:
        pid = PeerId.from_bytes(data)
    except InvalidPeerId:
        return
    assert pid.to_bytes() == data
    try:
        pid.extract_public_key()
    except KeyDecodeError:
        pass


@settings(max_examples=300)
@given(st.one_of(st.text(max_size=70),
                 st.text(alphabet=base58.ALPHABET, max_size=60).map(lambda s: "1" + s),
                 st.text(alphabet="abcdefghijklmnopqrstuvwxyz234567", max_size=70)
                 .map(lambda s: "b" + s)))
def test_arbitrary_text_only_raises_invalid_peer_id(text):
    try:
        PeerId.from_string(text)
    except InvalidPeerId:
        pass


def test_extract_public_key_requires_the_canonical_encoding():
    canonical = bytes.fromhex("08011220") + ED_PUBLIC
    reordered = bytes.fromhex("1220") + ED_PUBLIC + bytes.fromhex("0801")
    assert PeerId.from_bytes(b"\x00\x24" + canonical).extract_public_key() is not None
    with pytest.raises(KeyDecodeError, match="canonical"):
        PeerId.from_bytes(b"\x00\x24" + reordered).extract_public_key()
