"""Circuit relay v2 messages, their framing, signed envelopes and vouchers."""

from __future__ import annotations

import pytest

from libp2p_stream_sync.codec.circuit import (HopMessage, HopType, Limit, MessageReader,
                                              Peer, Reservation, Status, StopMessage,
                                              StopType, Voucher, frame)
from libp2p_stream_sync.errors import DecodeError
from libp2p_stream_sync.identity import Keypair, KeyType
from libp2p_stream_sync.identity.envelope import (InvalidEnvelope, open_envelope,
                                                  open_voucher, seal, seal_voucher)


def test_hop_message_round_trip_with_every_part():
    message = HopMessage(HopType.STATUS, peer=Peer(b"\x00\x01", (b"\x04\x7f\0\0\1",)),
                         reservation=Reservation(1_700_000_000, (b"a", b"b"), b"v"),
                         limit=Limit(120, 131072), status=Status.OK)
    assert HopMessage.decode(message.encode()) == message


def test_hop_wire_bytes_follow_the_spec_field_numbers():
    # type=CONNECT (field 1 varint 1), peer (field 2) {id (field 1) = 0xAB}
    raw = HopMessage(HopType.CONNECT, peer=Peer(b"\xab")).encode()
    assert raw == bytes([0x08, 0x01, 0x12, 0x03, 0x0a, 0x01, 0xab])
    # status (field 5) = 204 NO_RESERVATION
    raw = HopMessage(HopType.STATUS, status=Status.NO_RESERVATION).encode()
    assert raw == bytes([0x08, 0x02, 0x28, 0xcc, 0x01])


def test_stop_message_round_trip_and_field_numbers():
    message = StopMessage(StopType.CONNECT, peer=Peer(b"\x01"), limit=Limit(data=5))
    assert StopMessage.decode(message.encode()) == message
    raw = StopMessage(StopType.STATUS, status=Status.OK).encode()
    assert raw == bytes([0x08, 0x01, 0x20, 0x64])  # status is field 4 in StopMessage


@pytest.mark.parametrize("raw", [b"", b"\x08\x07", b"\x08\x00\x28\x05",
                                 b"\x08\x01\x12\x00", b"\x08\x01\x12\x05\x0a"])
def test_malformed_hop_messages_are_decode_errors(raw):
    # no type, unknown type, unknown status, a peer without id, a truncated field
    with pytest.raises(DecodeError):
        HopMessage.decode(raw)


def test_limit_duration_must_fit_uint32():
    raw = StopMessage(StopType.CONNECT, limit=Limit(duration=1 << 32)).encode()
    with pytest.raises(DecodeError):
        StopMessage.decode(raw)


def test_message_reader_takes_bytes_as_they_come_and_keeps_the_rest():
    data = frame(HopMessage(HopType.RESERVE)) + b"circuit bytes"
    reader = MessageReader()
    assert reader.feed(data[:1]) is None
    assert HopMessage.decode(reader.feed(data[1:])) == HopMessage(HopType.RESERVE)
    assert bytes(reader.rest) == b"circuit bytes"


def test_message_reader_refuses_oversized_lengths():
    with pytest.raises(DecodeError):
        MessageReader().feed(b"\x81\x20")  # 4097


@pytest.mark.parametrize("key_type", [KeyType.ED25519, KeyType.SECP256K1, KeyType.ECDSA])
def test_voucher_seal_and_open(key_type):
    relay, peer = Keypair.generate(key_type), Keypair.generate()
    blob = seal_voucher(relay, peer.peer_id, 1_800_000_000)
    voucher = open_voucher(blob, relay=relay.peer_id, peer=peer.peer_id)
    assert voucher == Voucher(relay.peer_id.to_bytes(), peer.peer_id.to_bytes(),
                              1_800_000_000)


def test_voucher_checks_signer_names_and_domain():
    relay, peer, other = Keypair.generate(), Keypair.generate(), Keypair.generate()
    blob = seal_voucher(relay, peer.peer_id, 5)
    with pytest.raises(InvalidEnvelope):
        open_voucher(blob, peer=other.peer_id)
    with pytest.raises(InvalidEnvelope):
        open_voucher(blob, relay=other.peer_id)
    with pytest.raises(InvalidEnvelope):  # same bytes, another purpose
        open_envelope(blob, "libp2p-routing-record")
    # a voucher naming a relay other than its signer
    forged = Voucher(relay.peer_id.to_bytes(), peer.peer_id.to_bytes(), 5).encode()
    with pytest.raises(InvalidEnvelope, match="signed by"):
        open_voucher(seal(other, "libp2p-relay-rsvp", b"\x03\x02", forged))
    with pytest.raises(InvalidEnvelope, match="payload type"):
        open_voucher(seal(relay, "libp2p-relay-rsvp", b"\x03\x01", forged))


def test_tampered_envelope_does_not_verify():
    relay = Keypair.generate()
    blob = bytearray(seal_voucher(relay, Keypair.generate().peer_id, 7))
    blob[-70] ^= 1  # inside the payload, before the 64-byte signature
    with pytest.raises(InvalidEnvelope):
        open_voucher(bytes(blob))
    with pytest.raises(InvalidEnvelope):
        open_voucher(b"\x0a\x02\x08")


def test_envelope_signature_is_over_the_rfc_buffer():
    key = Keypair.generate()
    blob = seal(key, "d", b"\x01", b"xy")
    envelope = open_envelope(blob, "d")
    assert (envelope.payload_type, envelope.payload) == (b"\x01", b"xy")
    assert envelope.signer == key.peer_id
    # varint(len) domain varint(len) type varint(len) payload
    assert key.public_key.verify(b"\x01d\x01\x01\x02xy", blob[-64:])
