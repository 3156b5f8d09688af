"""CIDv1 multibase text as used for libp2p peer ids."""

import pytest
from hypothesis import given, settings, strategies as st

from libp2p_stream_sync.codec import base58, cid, multihash
from libp2p_stream_sync.errors import DecodeError

# peer-ids spec: the same sha2-256 peer id as a CID and as raw base58btc.
SPEC_CID = "bafzbeie5745rpv2m6tjyuugywy4d5ewrqgqqhfnf445he3omzpjbx5xqxe"
SPEC_B58 = "QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N"


def test_spec_example_decodes_to_the_spec_peer_id():
    decoded = cid.decode(SPEC_CID)
    assert decoded.version == 1
    assert decoded.codec == cid.LIBP2P_KEY
    assert decoded.multihash == base58.decode(SPEC_B58)


def test_encode_is_lowercase_base32_without_padding():
    mh = base58.decode(SPEC_B58)
    assert cid.encode(cid.LIBP2P_KEY, mh) == SPEC_CID
    assert cid.encode(0x55, b"\x00\x00") == "bafkqaaa"  # raw codec, empty identity


def test_uppercase_and_base58_multibase_forms_are_accepted():
    mh = base58.decode(SPEC_B58)
    assert cid.decode("B" + SPEC_CID[1:].upper()).multihash == mh
    z_text = "z" + base58.encode(b"\x01\x72" + mh)
    assert cid.decode(z_text) == cid.decode(SPEC_CID)


@pytest.mark.parametrize("text,why", [
    ("", "empty"),
    ("mAXI", "unsupported multibase prefix 'm'"),
    ("bafzBEIE", "mixes letter cases"),
    ("b" + "a" * 9, "impossible length"),
    ("bafzbeie5745rpv2m6tjyuugywy4d5ewrqgqqhfnf445he3omzpjbx5xqxe=", "padding"),
    ("bafzbeie5745rpv2m6tjyuugywy4d5ewrqgqqhfnf445he3omzpjbx5xqxf", "trailing bits"),
    ("bafzbeie5745rpv2m6tjyuugywy4d5ewrqgqqhfnf445he3omzpjbx5xq", "truncated"),
    ("bafy1aaa", "invalid base32"),
    ("bé", "non-ASCII"),
    ("bciqa", "unsupported CID version 18"),
    ("b", "truncated in its version"),
    ("bae", "truncated in its multicodec"),
])
def test_malformed_cid_text_raises(text, why):
    with pytest.raises(DecodeError, match=why):
        cid.decode(text)


def test_oversized_text_rejected():
    with pytest.raises(DecodeError, match="exceeds"):
        cid.decode("b" + "a" * 600)


@settings(max_examples=150)
@given(st.integers(0, 1 << 20), st.sampled_from([0x00, 0x12]), st.binary(max_size=50))
def test_round_trip(codec, code, data):
    mh = multihash.digest(code, data)
    text = cid.encode(codec, mh)
    assert text.startswith("b") and text == text.lower() and "=" not in text
    assert cid.decode(text) == cid.Cid(1, codec, mh)


@settings(max_examples=300)
@given(st.text(max_size=70))
def test_arbitrary_text_only_raises_decode_error(text):
    try:
        cid.decode(text)
    except DecodeError:
        pass


@settings(max_examples=300)
@given(st.binary(max_size=50))
def test_arbitrary_base32_payload_only_raises_decode_error(raw):
    text = cid._base32_encode(raw)
    try:
        decoded = cid.decode("b" + text)
    except DecodeError:
        return
    assert cid.encode(decoded.codec, decoded.multihash) == "b" + text
