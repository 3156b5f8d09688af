"""libp2p Noise XX handshake engine: full handshakes in memory, failures, hostile input."""

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from libp2p_stream_sync.engines.noise import (
    NoiseError, NoiseHandshake, InvalidHandshakePayload, InvalidIdentitySignature,
    PeerIdMismatch, decode_handshake_payload, encode_handshake_payload)
from libp2p_stream_sync.identity import Keypair, KeyType

YAMUX = "/yamux/1.0.0"
MPLEX = "/mplex/6.7.0"

# RFC 7748 section 6.1 X25519 test vector (Alice's key pair).
RFC7748_PRIVATE = bytes.fromhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
RFC7748_PUBLIC = bytes.fromhex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")

ALICE = Keypair.from_seed(bytes(range(32)))
BOB = Keypair.from_seed(bytes(range(1, 33)))
CAROL = Keypair.from_seed(bytes(range(2, 34)))


def run_handshake(initiator, responder):
    """Drive both sides to completion; returns the three wire messages."""
    m1 = initiator.data_to_send()
    assert responder.receive_data(m1) is False
    m2 = responder.data_to_send()
    assert initiator.receive_data(m2) is True
    m3 = initiator.data_to_send()
    assert responder.receive_data(m3) is True
    assert responder.data_to_send() == b""
    return m1, m2, m3


def pair(init_kp=ALICE, resp_kp=BOB, **kwargs):
    init_kwargs = {k[2:]: v for k, v in kwargs.items() if k.startswith("i_")}
    resp_kwargs = {k[2:]: v for k, v in kwargs.items() if k.startswith("r_")}
    return (NoiseHandshake(init_kp, initiator=True, **init_kwargs),
            NoiseHandshake(resp_kp, initiator=False, **resp_kwargs))


class BadSigner:
    """A keypair whose signatures have one bit flipped."""

    def __init__(self, keypair):
        self.public_key = keypair.public_key
        self._kp = keypair

    def sign(self, data):
        sig = bytearray(self._kp.sign(data))
        sig[0] ^= 1
        return bytes(sig)


class WrongKeySigner:
    """A keypair that signs some other static key than the one it uses."""

    def __init__(self, keypair):
        self.public_key = keypair.public_key
        self._kp = keypair

    def sign(self, data):
        return self._kp.sign(data[:-32] + bytes(32))


def test_full_handshake_sizes_identities_and_transport():
    i, r = pair(i_expected_peer=BOB.peer_id)
    m1, m2, m3 = run_handshake(i, r)
    # Ed25519 payload: 2 + 36 (identity_key) + 2 + 64 (identity_sig) = 104 bytes.
    assert len(m1) == 2 + 32 and m1[:2] == b"\x00\x20"
    assert len(m2) == 2 + 32 + 48 + 104 + 16 and m2[:2] == (len(m2) - 2).to_bytes(2, "big")
    assert len(m3) == 2 + 48 + 104 + 16 and m3[:2] == (len(m3) - 2).to_bytes(2, "big")
    assert i.complete and r.complete
    assert i.remote_peer_id == BOB.peer_id and r.remote_peer_id == ALICE.peer_id
    assert i.remote_public_key == BOB.public_key and r.remote_public_key == ALICE.public_key
    assert i.handshake_hash == r.handshake_hash and len(i.handshake_hash) == 32
    assert i.remote_muxers == [] and r.remote_muxers == []
    ti, left_i = i.to_transport()
    tr, left_r = r.to_transport()
    assert left_i == b"" and left_r == b""
    assert tr.receive_data(ti.encrypt(b"ping")) == b"ping"
    assert ti.receive_data(tr.encrypt(b"pong")) == b"pong"


def test_initiator_first_message_is_its_ephemeral_key():
    i = NoiseHandshake(ALICE, initiator=True, _ephemeral_key=RFC7748_PRIVATE)
    assert i.data_to_send() == b"\x00\x20" + RFC7748_PUBLIC
    assert i.data_to_send() == b""


def test_responder_sends_nothing_before_message_1():
    r = NoiseHandshake(BOB, initiator=False)
    assert r.data_to_send() == b""
    assert r.receive_data(b"\x00\x20" + bytes(31)) is False  # one byte short
    assert r.data_to_send() == b""


def test_fixed_keys_make_a_deterministic_transcript():
    def transcript():
        i, r = pair(i_static_key=bytes([1]) * 32, i__ephemeral_key=bytes([2]) * 32,
                    r_static_key=bytes([3]) * 32, r__ephemeral_key=bytes([4]) * 32)
        return run_handshake(i, r)
    assert transcript() == transcript()


def test_byte_at_a_time_and_leftover_transport_data():
    i, r = pair()
    for byte in i.data_to_send():
        r.receive_data(bytes([byte]))
    m2 = r.data_to_send()
    for k in range(len(m2)):
        i.receive_data(memoryview(m2)[k:k + 1])
    assert i.complete
    ti, _ = i.to_transport()
    # The initiator pipelines its first transport frame right behind message 3.
    r.receive_data(bytearray(i.data_to_send() + ti.encrypt(b"/multistream/1.0.0\n")))
    tr, leftover = r.to_transport()
    assert len(leftover) == 2 + 19 + 16
    assert tr.receive_data(leftover) == b"/multistream/1.0.0\n"


@pytest.mark.parametrize("key_type", [KeyType.SECP256K1, KeyType.ECDSA, KeyType.RSA])
def test_other_identity_key_types(key_type):
    kp = Keypair.generate(key_type)
    i, r = pair(kp, ALICE, i_expected_peer=ALICE.peer_id)
    run_handshake(i, r)
    assert r.remote_peer_id == kp.peer_id and r.remote_public_key == kp.public_key


def test_wrong_expected_peer_fails_before_revealing_our_identity():
    i, r = pair(i_expected_peer=CAROL.peer_id)
    r.receive_data(i.data_to_send())
    with pytest.raises(PeerIdMismatch) as info:
        i.receive_data(r.data_to_send())
    assert str(CAROL.peer_id) in str(info.value) and str(BOB.peer_id) in str(info.value)
    assert info.value.expected == CAROL.peer_id and info.value.actual == BOB.peer_id
    assert i.data_to_send() == b""  # message 3 (with our identity) was never produced
    assert not i.complete and i.remote_peer_id is None
    with pytest.raises(RuntimeError):
        i.receive_data(b"\x00")


def test_responder_checks_expected_peer_too():
    i, r = pair(r_expected_peer=CAROL.peer_id)
    r.receive_data(i.data_to_send())
    i.receive_data(r.data_to_send())
    with pytest.raises(PeerIdMismatch):
        r.receive_data(i.data_to_send())
    assert not r.complete


@pytest.mark.parametrize("signer", [BadSigner, WrongKeySigner])
def test_bad_signature_from_responder(signer):
    i = NoiseHandshake(ALICE, initiator=True)
    r = NoiseHandshake(signer(BOB), initiator=False)
    r.receive_data(i.data_to_send())
    with pytest.raises(InvalidIdentitySignature):
        i.receive_data(r.data_to_send())
    assert i.remote_peer_id is None and i.data_to_send() == b""


@pytest.mark.parametrize("signer", [BadSigner, WrongKeySigner])
def test_bad_signature_from_initiator(signer):
    i = NoiseHandshake(signer(ALICE), initiator=True)
    r = NoiseHandshake(BOB, initiator=False)
    r.receive_data(i.data_to_send())
    i.receive_data(r.data_to_send())
    with pytest.raises(InvalidIdentitySignature):
        r.receive_data(i.data_to_send())
    assert not r.complete


def test_low_order_ephemeral_key_is_rejected():
    r = NoiseHandshake(BOB, initiator=False)
    with pytest.raises(NoiseError, match="low-order"):
        r.receive_data(b"\x00\x20" + bytes(32))


def test_local_misuse():
    i, r = pair()
    with pytest.raises(RuntimeError):
        i.to_transport()
    with pytest.raises(RuntimeError):
        i.selected_muxer()
    run_handshake(i, r)
    with pytest.raises(RuntimeError):
        r.receive_data(b"\x00\x10")
    i.to_transport()
    with pytest.raises(RuntimeError):  # a second transport would reuse nonces
        i.to_transport()


# -- early muxer negotiation ------------------------------------------------------------

@pytest.mark.parametrize("init_muxers, resp_muxers, expected", [
    # The example of connections/inlined-muxer-negotiation.md: the initiator's order wins.
    ([YAMUX, MPLEX], [MPLEX, YAMUX], YAMUX),
    ([MPLEX, YAMUX], [YAMUX, MPLEX], MPLEX),
    ([YAMUX], [MPLEX, YAMUX], YAMUX),
    ([YAMUX, MPLEX], [MPLEX], MPLEX),
    ([YAMUX], [MPLEX], None),  # no overlap: fall back to multistream-select
    ([], [YAMUX], None),
    ([YAMUX], [], None),
    ([], [], None),
])
def test_early_muxer_negotiation_both_roles(init_muxers, resp_muxers, expected):
    i, r = pair(i_muxers=init_muxers, r_muxers=resp_muxers)
    run_handshake(i, r)
    assert i.remote_muxers == resp_muxers and r.remote_muxers == init_muxers
    assert i.selected_muxer() == expected
    assert r.selected_muxer() == expected


def test_failed_handshake_discards_early_data():
    i, r = pair(i_expected_peer=CAROL.peer_id, r_muxers=[YAMUX])
    r.receive_data(i.data_to_send())
    with pytest.raises(PeerIdMismatch):
        i.receive_data(r.data_to_send())
    assert i.remote_muxers == []


def test_payload_too_large_is_a_local_error():
    with pytest.raises(ValueError):
        NoiseHandshake(ALICE, initiator=True, muxers=["/x" * 100] * 400)


# -- the payload codec --------------------------------------------------------------------

def test_payload_bytes_exact():
    assert encode_handshake_payload(b"K", b"S") == b"\x0a\x01K\x12\x01S"
    assert encode_handshake_payload(b"K", b"S", [YAMUX, "/m"]) == (
        b"\x0a\x01K\x12\x01S" + b"\x22\x12" + b"\x12\x0c/yamux/1.0.0" + b"\x12\x02/m")
    # Unknown fields (e.g. the old `data = 3`, certhashes) are skipped.
    assert decode_handshake_payload(
        b"\x1a\x02zz\x0a\x01K\x12\x01S\x22\x05\x0a\x03abc") == (b"K", b"S", [])


@pytest.mark.parametrize("raw", [b"", b"\x0a\x01K", b"\x12\x01S", b"\x0a\x05K", b"\x0a\x00\x12\x01S",
                                 b"\x0a\x01K\x12\x01S\x22\x02\x12\x01", b"\x0a\x01K\x12\x01S\x22\x03\x12\x01\xff"])
def test_malformed_payload(raw):
    with pytest.raises(InvalidHandshakePayload):
        decode_handshake_payload(raw)


@settings(max_examples=100)
@given(st.binary(min_size=1, max_size=80), st.binary(min_size=1, max_size=80),
       st.lists(st.text(max_size=20), max_size=5))
def test_payload_round_trip(key, sig, muxers):
    assert decode_handshake_payload(encode_handshake_payload(key, sig, muxers)) == (key, sig, muxers)


@settings(max_examples=200)
@given(st.binary(max_size=200))
def test_arbitrary_payload_bytes_only_raise_noise_error(raw):
    try:
        decode_handshake_payload(raw)
    except InvalidHandshakePayload:
        pass


# -- hostile handshake messages ----------------------------------------------------------

def _initiator_waiting_for_message_2():
    i, r = pair()
    r.receive_data(i.data_to_send())
    return i, r.data_to_send()


def _responder_waiting_for_message_3():
    i, r = pair()
    r.receive_data(i.data_to_send())
    i.receive_data(r.data_to_send())
    return r, i.data_to_send()


@pytest.mark.parametrize("setup", [_initiator_waiting_for_message_2, _responder_waiting_for_message_3])
def test_truncated_and_flipped_messages_raise_noise_error(setup):
    _, message = setup()
    body = message[2:]
    for cut in (0, 1, 31, 32, 47, 48, 63, 64, 80, 95, len(body) - 1):
        engine, _ = setup()
        with pytest.raises(NoiseError):
            engine.receive_data(len(body[:cut]).to_bytes(2, "big") + body[:cut])
    for bit in range(0, len(body) * 8, 97):
        engine, _ = setup()
        flipped = bytearray(message)
        flipped[2 + bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(NoiseError):
            engine.receive_data(flipped)


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300), st.sampled_from([0, 1]))
def test_arbitrary_handshake_bytes_only_raise_noise_error(data, which):
    engine, _ = (_initiator_waiting_for_message_2, _responder_waiting_for_message_3)[which]()
    try:
        engine.receive_data(data)
    except NoiseError:
        return
    assert not engine.complete


@settings(max_examples=100)
@given(st.binary(max_size=200))
def test_arbitrary_first_message_only_raises_noise_error(data):
    r = NoiseHandshake(BOB, initiator=False)
    try:
        r.receive_data(data)
    except NoiseError:
        return
    assert not r.complete
