"""Signed envelopes (libp2p RFC 0002) and circuit relay reservation vouchers.

An envelope carries a payload, its type hint, the signer's public key and a signature
over ``varint(len(domain)) domain varint(len(type)) type varint(len(payload)) payload``;
the domain string is not on the wire, so a signature made for one purpose never
verifies for another. The signature is field 5 on the wire (go-, js-, rust- and
py-libp2p; the RFC's text says 4). :func:`seal_voucher` / :func:`open_voucher` apply it to the
relay's reservation voucher (domain ``libp2p-relay-rsvp``, type ``0x0302``).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..codec import protobuf as pb
from ..codec.circuit import VOUCHER_DOMAIN, VOUCHER_PAYLOAD_TYPE, Voucher
from ..codec.varint import encode_uvarint
from ..errors import DecodeError
from .keypair import Keypair
from .keys import PublicKey
from .peer_id import PeerId

_ENVELOPE = pb.Schema("Envelope", [pb.Field(1, "public_key", "bytes"),
                                   pb.Field(2, "payload_type", "bytes"),
                                   pb.Field(3, "payload", "bytes"),
                                   pb.Field(5, "signature", "bytes")])
#: Largest envelope accepted (a voucher signed with an RSA-8192 key is ~1.3 KB).
MAX_ENVELOPE_SIZE = 8192


class InvalidEnvelope(DecodeError):
    """An envelope is malformed, its signature does not verify, or its contents are not
    what the caller expects (another domain, type, signer or peer)."""


@dataclass(frozen=True)
class Envelope:
    """An opened, verified envelope: who signed it and what it carries."""

    public_key: PublicKey
    payload_type: bytes
    payload: bytes

    @property
    def signer(self) -> PeerId:
        """The peer id of the signing key."""
        return PeerId.from_public_key(self.public_key)


def _signed_bytes(domain: str, payload_type: bytes, payload: bytes) -> bytes:
    raw_domain = domain.encode("utf-8")
    return b"".join((encode_uvarint(len(raw_domain)), raw_domain,
                     encode_uvarint(len(payload_type)), payload_type,
                     encode_uvarint(len(payload)), payload))


def seal(keypair: Keypair, domain: str, payload_type: bytes, payload: bytes) -> bytes:
    """The envelope bytes of ``payload`` signed by ``keypair`` for ``domain``."""
    signature = keypair.sign(_signed_bytes(domain, payload_type, payload))
    return pb.encode(_ENVELOPE, {"public_key": keypair.public_key.to_protobuf(),
                                 "payload_type": payload_type, "payload": payload,
                                 "signature": signature})


def open_envelope(data: bytes | bytearray | memoryview, domain: str) -> Envelope:
    """Decode and verify an envelope signed for ``domain``; :class:`InvalidEnvelope`
    when it is malformed or the signature does not verify."""
    try:
        values = pb.decode(_ENVELOPE, data, max_size=MAX_ENVELOPE_SIZE)
        missing = [n for n in ("public_key", "payload_type", "payload", "signature")
                   if n not in values]
        if missing:
            raise InvalidEnvelope(f"envelope lacks {', '.join(missing)}")
        key = PublicKey.from_protobuf(values["public_key"])
    except InvalidEnvelope:
        raise
    except DecodeError as exc:
        raise InvalidEnvelope(f"malformed envelope: {exc}") from exc
    signed = _signed_bytes(domain, values["payload_type"], values["payload"])
    if not key.verify(signed, values["signature"]):
        raise InvalidEnvelope(f"envelope signature does not verify for domain {domain!r}")
    return Envelope(key, values["payload_type"], values["payload"])


def seal_voucher(relay: Keypair, peer: PeerId, expiration: int) -> bytes:
    """The voucher ``relay`` signs for ``peer``'s reservation until ``expiration``."""
    voucher = Voucher(relay.peer_id.to_bytes(), peer.to_bytes(), expiration)
    return seal(relay, VOUCHER_DOMAIN, VOUCHER_PAYLOAD_TYPE, voucher.encode())


def open_voucher(data: bytes | bytearray | memoryview, *, relay: PeerId | None = None,
                 peer: PeerId | None = None) -> Voucher:
    """Verify a voucher envelope and return its payload.

    Raises :class:`InvalidEnvelope` unless it is well formed, of the voucher type,
    signed by the relay it names, and (when given) for ``relay`` and ``peer``.
    """
    envelope = open_envelope(data, VOUCHER_DOMAIN)
    if envelope.payload_type != VOUCHER_PAYLOAD_TYPE:
        raise InvalidEnvelope(f"not a voucher: payload type {envelope.payload_type.hex()}")
    try:
        voucher = Voucher.decode(envelope.payload)
        named_relay = PeerId.from_bytes(voucher.relay)
        named_peer = PeerId.from_bytes(voucher.peer)
    except DecodeError as exc:
        raise InvalidEnvelope(f"malformed voucher: {exc}") from exc
    if named_relay != envelope.signer:
        raise InvalidEnvelope(f"voucher for relay {named_relay} signed by {envelope.signer}")
    if relay is not None and named_relay != relay:
        raise InvalidEnvelope(f"voucher names relay {named_relay}, not {relay}")
    if peer is not None and named_peer != peer:
        raise InvalidEnvelope(f"voucher names peer {named_peer}, not {peer}")
    return voucher
