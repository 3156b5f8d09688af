"""Cross-check our Noise engine against the independent `noiseprotocol` package.

The libp2p layer on the noiseprotocol side (payload protobuf, signature, framing) is
built by hand here, so both the Noise state machine and the libp2p conventions are
checked against code we did not write.
"""

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from noise.connection import Keypair as NoiseKey, NoiseConnection

from libp2p_stream_sync.engines.noise import (
    InvalidHandshakePayload, InvalidIdentitySignature, NoiseHandshake, UnsupportedIdentityKey)
from libp2p_stream_sync.identity import Keypair

NAME = b"Noise_XX_25519_ChaChaPoly_SHA256"
YAMUX = "/yamux/1.0.0"
OUR_SEED = bytes(range(32))
THEIR_SEED = bytes(range(40, 72))
OURS = Keypair.from_seed(OUR_SEED)
THEIRS = Keypair.from_seed(THEIR_SEED)
OUR_STATIC = bytes(range(7, 39))
pytestmark = pytest.mark.filterwarnings("ignore:One of ephemeral keypairs is already set")


def raw(private_key):
    """The raw 32-byte public key of an Ed25519 or X25519 private key."""
    return private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


OUR_STATIC_PUBLIC = raw(X25519PrivateKey.from_private_bytes(OUR_STATIC))


def field(number, value):
    assert len(value) < 128
    return bytes([number << 3 | 2, len(value)]) + value


def ed25519_key_protobuf(public):
    return b"\x08\x01" + field(2, public)  # PublicKey{Type=Ed25519, Data=public}


def parse_fields(data):
    """A tiny protobuf reader for 1-byte keys and lengths (all this test needs)."""
    out, pos = [], 0
    while pos < len(data):
        key, length = data[pos], data[pos + 1]
        out.append((key >> 3, bytes(data[pos + 2:pos + 2 + length])))
        pos += 2 + length
    return out


class Peer:
    """A libp2p Noise peer on top of `noiseprotocol`, with an Ed25519 identity."""

    def __init__(self, initiator, seed=THEIR_SEED, static=None, ephemeral=None, muxers=()):
        self.identity = Ed25519PrivateKey.from_private_bytes(seed)
        self.static = static or X25519PrivateKey.generate().private_bytes_raw()
        self.static_public = raw(X25519PrivateKey.from_private_bytes(self.static))
        self.conn = NoiseConnection.from_name(NAME)
        (self.conn.set_as_initiator if initiator else self.conn.set_as_responder)()
        self.conn.set_keypair_from_private_bytes(NoiseKey.STATIC, self.static)
        if ephemeral:
            self.conn.set_keypair_from_private_bytes(NoiseKey.EPHEMERAL, ephemeral)
        self.conn.start_handshake()
        self.muxers = muxers

    def payload(self, identity_key=None, signature=None):
        identity_key = identity_key or ed25519_key_protobuf(raw(self.identity))
        signature = signature or self.identity.sign(b"noise-libp2p-static-key:" + self.static_public)
        out = field(1, identity_key) + field(2, signature)
        if self.muxers:
            out += field(4, b"".join(field(2, m.encode()) for m in self.muxers))
        return out

    def write(self, payload=b""):
        message = bytes(self.conn.write_message(payload))
        return len(message).to_bytes(2, "big") + message

    def read(self, wire):
        assert int.from_bytes(wire[:2], "big") == len(wire) - 2
        return bytes(self.conn.read_message(bytes(wire[2:])))

    @staticmethod
    def check_libp2p_payload(payload, keypair, static_public, muxers=()):
        """Verify the payload our engine sent: identity key, signature, muxers.

        (noiseprotocol forgets the remote static key when the handshake ends, so the
        test passes the one it configured; the handshake completing proves they match.)
        """
        fields = parse_fields(payload)
        assert [n for n, _ in fields] == [1, 2] + ([4] if muxers else [])
        identity_key, signature = fields[0][1], fields[1][1]
        assert identity_key == keypair.public_key.to_protobuf()
        Ed25519PublicKey.from_public_bytes(identity_key[4:]).verify(
            signature, b"noise-libp2p-static-key:" + static_public)
        if muxers:
            assert [v.decode() for _, v in parse_fields(fields[2][1])] == list(muxers)

    def transport_frame(self, plaintext):
        body = self.conn.encrypt(plaintext)
        return len(body).to_bytes(2, "big") + body

    def decrypt_frames(self, wire):
        out, pos = b"", 0
        while pos < len(wire):
            n = int.from_bytes(wire[pos:pos + 2], "big")
            out += self.conn.decrypt(bytes(wire[pos + 2:pos + 2 + n]))
            pos += 2 + n
        return out


def test_our_initiator_with_noiseprotocol_responder():
    ours = NoiseHandshake(OURS, initiator=True, expected_peer=THEIRS.peer_id, muxers=[YAMUX],
                          static_key=OUR_STATIC)
    theirs = Peer(initiator=False, muxers=["/mplex/6.7.0", YAMUX])
    assert theirs.read(ours.data_to_send()) == b""
    assert ours.receive_data(theirs.write(theirs.payload()))
    payload = theirs.read(ours.data_to_send())
    theirs.check_libp2p_payload(payload, OURS, OUR_STATIC_PUBLIC, [YAMUX])
    assert theirs.conn.handshake_finished
    assert ours.remote_peer_id == THEIRS.peer_id
    assert ours.remote_muxers == ["/mplex/6.7.0", YAMUX] and ours.selected_muxer() == YAMUX
    assert ours.handshake_hash == theirs.conn.get_handshake_hash()
    transport, leftover = ours.to_transport()
    assert leftover == b""
    for message in (b"hello", b"", bytes(70000)):
        assert theirs.decrypt_frames(transport.encrypt(message)) == message
    assert transport.receive_data(theirs.transport_frame(b"") + theirs.transport_frame(b"pong")) == b"pong"


def test_noiseprotocol_initiator_with_our_responder():
    ours = NoiseHandshake(OURS, initiator=False, expected_peer=THEIRS.peer_id, muxers=[YAMUX],
                          static_key=OUR_STATIC)
    theirs = Peer(initiator=True, muxers=[YAMUX, "/mplex/6.7.0"])
    assert ours.receive_data(theirs.write()) is False
    payload = theirs.read(ours.data_to_send())
    theirs.check_libp2p_payload(payload, OURS, OUR_STATIC_PUBLIC, [YAMUX])
    # The initiator sends message 3 and its first transport frame together.
    message_3 = theirs.write(theirs.payload())
    assert ours.receive_data(message_3 + theirs.transport_frame(b"early"))
    assert ours.remote_peer_id == THEIRS.peer_id and ours.selected_muxer() == YAMUX
    assert ours.remote_public_key.to_protobuf() == ed25519_key_protobuf(raw(theirs.identity))
    transport, leftover = ours.to_transport()
    assert transport.receive_data(leftover) == b"early"
    assert theirs.decrypt_frames(transport.encrypt(b"reply" * 30000)) == b"reply" * 30000


def fixed(n):
    return bytes([n]) * 32


@pytest.mark.parametrize("we_initiate", [True, False])
def test_transcripts_are_byte_identical_with_the_same_keys(we_initiate):
    """Our engine and noiseprotocol, given the same keys, put the same bytes on the wire."""
    def run(use_ours_for_the_tested_role):
        if use_ours_for_the_tested_role:
            tested = NoiseHandshake(Keypair.from_seed(THEIR_SEED), initiator=we_initiate,
                                    muxers=[YAMUX], static_key=fixed(1), _ephemeral_key=fixed(2))
        else:
            tested = Peer(we_initiate, THEIR_SEED, fixed(1), fixed(2), muxers=[YAMUX])
        other = NoiseHandshake(OURS, initiator=not we_initiate, static_key=fixed(3),
                               _ephemeral_key=fixed(4))
        initiator, responder = (tested, other) if we_initiate else (other, tested)
        wire = []

        def send(sender, receiver):
            if isinstance(sender, Peer):
                data = sender.write(sender.payload() if wire else b"")
            else:
                data = sender.data_to_send()
            wire.append(data)
            if isinstance(receiver, Peer):
                receiver.read(data)
            else:
                receiver.receive_data(data)
        send(initiator, responder)
        send(responder, initiator)
        send(initiator, responder)
        if isinstance(tested, Peer):
            wire.append(tested.transport_frame(b"after the handshake"))
        else:
            wire.append(tested.to_transport()[0].encrypt(b"after the handshake"))
        return wire
    assert run(True) == run(False)


# -- what a hostile or broken noiseprotocol peer sends ------------------------------------

def _ours_after_their_message_2(peer_payload):
    ours = NoiseHandshake(OURS, initiator=True)
    theirs = Peer(initiator=False)
    theirs.read(ours.data_to_send())
    return ours, theirs.write(peer_payload(theirs))


@pytest.mark.parametrize("make_payload, error", [
    (lambda p: b"", InvalidHandshakePayload),
    (lambda p: b"\xff\xff", InvalidHandshakePayload),
    (lambda p: field(1, ed25519_key_protobuf(raw(p.identity))), InvalidHandshakePayload),
    (lambda p: p.payload(identity_key=b"\x08\x09" + field(2, b"k" * 32)), UnsupportedIdentityKey),
    (lambda p: p.payload(identity_key=ed25519_key_protobuf(b"short")), UnsupportedIdentityKey),
    (lambda p: p.payload(signature=bytes(64)), InvalidIdentitySignature),
    (lambda p: p.payload(signature=p.identity.sign(b"noise-libp2p-static-key:" + bytes(32))),
     InvalidIdentitySignature),
    (lambda p: p.payload(identity_key=OURS.public_key.to_protobuf()), InvalidIdentitySignature),
])
def test_bad_payloads_from_noiseprotocol_peer(make_payload, error):
    ours, message_2 = _ours_after_their_message_2(make_payload)
    with pytest.raises(error):
        ours.receive_data(message_2)
    assert ours.data_to_send() == b"" and ours.remote_peer_id is None


def test_bad_initiator_payload_from_noiseprotocol_peer():
    ours = NoiseHandshake(OURS, initiator=False)
    theirs = Peer(initiator=True)
    ours.receive_data(theirs.write())
    theirs.read(ours.data_to_send())
    with pytest.raises(InvalidIdentitySignature):
        ours.receive_data(theirs.write(theirs.payload(signature=bytes(64))))
    assert not ours.complete


def test_payload_in_message_1_is_ignored():
    """The initiator must not send a payload in message 1; if one arrives it is only hashed."""
    ours = NoiseHandshake(OURS, initiator=False)
    theirs = Peer(initiator=True)
    ours.receive_data(theirs.write(b"unexpected"))
    theirs.read(ours.data_to_send())
    assert ours.receive_data(theirs.write(theirs.payload()))
    assert ours.remote_peer_id == THEIRS.peer_id
