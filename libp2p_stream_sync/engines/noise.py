"""libp2p's /noise security handshake (Noise XX) and its transport, sans-IO.

Specs: libp2p/specs ``noise/README.md`` (handshake payload, wire format) and
``connections/inlined-muxer-negotiation.md`` (stream muxers in the payload).

The XX pattern, with every message sent as ``uint16_be(len) || message``::

    -> e                                   initiator, payload empty
    <- e, ee, s, es  + responder payload
    -> s, se         + initiator payload

Each payload is a ``NoiseHandshakePayload`` protobuf carrying the sender's libp2p
identity key and its signature over ``"noise-libp2p-static-key:" || static key``,
plus optional extensions (the stream muxers the sender supports).

Usage::

    hs = NoiseHandshake(keypair, initiator=True, expected_peer=peer, muxers=["/yamux/1.0.0"])
    send(hs.data_to_send())
    while not hs.complete:
        hs.receive_data(recv())
        send(hs.data_to_send())
    transport, leftover = hs.to_transport()
    plaintext = transport.receive_data(leftover)
"""

from __future__ import annotations

from typing import Sequence

from ..codec.protobuf import Field, Schema, decode, encode
from ..errors import DecodeError
from ..identity import Keypair, PeerId, PublicKey
from .noise_state import (
    DHLEN, MAX_MESSAGE_LEN, TAGLEN, DecryptionError, NoiseError, NonceExhausted,
    SymmetricState, dh, x25519_private_key, x25519_public_bytes,
)
from .noise_transport import MAX_FRAME_PLAINTEXT, NoiseTransport

__all__ = [
    "PROTOCOL_ID", "MAX_FRAME_PLAINTEXT", "NoiseHandshake", "NoiseTransport", "NoiseError",
    "DecryptionError", "NonceExhausted", "InvalidHandshakePayload", "UnsupportedIdentityKey",
    "InvalidIdentitySignature", "PeerIdMismatch", "encode_handshake_payload",
    "decode_handshake_payload",
]

#: The multistream-select protocol id of this security protocol.
PROTOCOL_ID = "/noise"
#: What the identity key signs, followed by the 32-byte static X25519 public key.
SIGNATURE_PREFIX = b"noise-libp2p-static-key:"


class InvalidHandshakePayload(NoiseError):
    """The remote's NoiseHandshakePayload is malformed or lacks a required field."""


class UnsupportedIdentityKey(InvalidHandshakePayload):
    """The remote's identity key is of a type we cannot verify, or is malformed."""


class InvalidIdentitySignature(NoiseError):
    """The remote's identity key did not sign its Noise static key."""


class PeerIdMismatch(NoiseError):
    """The remote authenticated as a different peer than the one we dialed."""

    def __init__(self, expected: PeerId, actual: PeerId) -> None:
        super().__init__(f"expected peer {expected} but the remote is {actual}")
        self.expected = expected
        self.actual = actual


_EXTENSIONS = Schema("NoiseExtensions", [
    Field(1, "webtransport_certhashes", "bytes", repeated=True),
    Field(2, "stream_muxers", "string", repeated=True),
])
_PAYLOAD = Schema("NoiseHandshakePayload", [
    Field(1, "identity_key", "bytes"),
    Field(2, "identity_sig", "bytes"),
    Field(4, "extensions", "message", schema=_EXTENSIONS),
])


def encode_handshake_payload(identity_key: bytes, identity_sig: bytes,
                             muxers: Sequence[str] = ()) -> bytes:
    """Encode a ``NoiseHandshakePayload``; the extensions are left out when ``muxers`` is empty."""
    extensions = {"stream_muxers": list(muxers)} if muxers else None
    return encode(_PAYLOAD, {"identity_key": identity_key, "identity_sig": identity_sig,
                             "extensions": extensions})


def decode_handshake_payload(raw: bytes) -> tuple[bytes, bytes, list[str]]:
    """Decode a ``NoiseHandshakePayload`` into ``(identity_key, identity_sig, muxers)``.

    Raises :class:`InvalidHandshakePayload` when it is malformed or lacks the key or
    signature.
    """
    try:
        msg = decode(_PAYLOAD, raw, max_size=MAX_MESSAGE_LEN)
    except DecodeError as exc:
        raise InvalidHandshakePayload(f"malformed Noise handshake payload: {exc}") from exc
    key, sig = msg.get("identity_key"), msg.get("identity_sig")
    if not key or not sig:
        raise InvalidHandshakePayload("Noise handshake payload lacks identity_key or identity_sig")
    muxers = msg["extensions"]["stream_muxers"] if "extensions" in msg else []
    return key, sig, muxers


class NoiseIdentity:
    """A node's long-lived Noise static key with its signed libp2p payload.

    Made once per node and shared by every handshake (go and js keep one static key
    per node too): each connection then saves an X25519 key generation and an
    Ed25519 signature.
    """

    def __init__(self, keypair: Keypair, static_key: bytes | None = None) -> None:
        self.keypair = keypair
        self.static = x25519_private_key(static_key)
        self.static_public = x25519_public_bytes(self.static)
        self._identity_key = keypair.public_key.to_protobuf()
        self._signature = keypair.sign(SIGNATURE_PREFIX + self.static_public)
        self._payloads: dict[tuple[str, ...], bytes] = {}

    def payload(self, muxers: Sequence[str]) -> bytes:
        """The encoded handshake payload announcing ``muxers`` (cached)."""
        key = tuple(muxers)
        payload = self._payloads.get(key)
        if payload is None:
            payload = encode_handshake_payload(self._identity_key, self._signature, key)
            if len(self._payloads) < 16:
                self._payloads[key] = payload
        return payload


def _frame(message: bytes) -> bytes:
    return len(message).to_bytes(2, "big") + message


class NoiseHandshake:
    """One side of a libp2p Noise XX handshake.

    ``keypair`` is our libp2p identity. ``expected_peer`` (normally given when
    dialing) is checked against the remote's identity before we reveal ours.
    ``muxers`` are the stream muxer protocol ids we support, in our order of
    preference, sent for early muxer negotiation (none: no extension is sent).
    ``static_key`` optionally fixes the 32-byte X25519 static private key (a fresh
    one is generated otherwise; ``_ephemeral_key`` exists for deterministic tests).

    The initiator's first message is in :meth:`data_to_send` right after
    construction. Peer misbehaviour raises :class:`NoiseError` subclasses from
    :meth:`receive_data`; the handshake is then dead and the connection must close.
    """

    def __init__(self, keypair: Keypair, *, initiator: bool,
                 expected_peer: PeerId | None = None, muxers: Sequence[str] = (),
                 static_key: bytes | None = None, identity: NoiseIdentity | None = None,
                 _ephemeral_key: bytes | None = None) -> None:
        self.initiator = initiator
        self.expected_peer = expected_peer
        self._muxers = list(muxers)
        if identity is None:
            identity = NoiseIdentity(keypair, static_key)
        elif identity.keypair is not keypair or static_key is not None:
            raise ValueError("identity must belong to keypair (and replaces static_key)")
        self._static = identity.static
        self._static_public = identity.static_public
        self._ephemeral = x25519_private_key(_ephemeral_key)
        self._ephemeral_public = x25519_public_bytes(self._ephemeral)
        self._payload = identity.payload(self._muxers)
        # Our payload goes in message 2 or 3 after 32 + 48 bytes of keys, plus a tag.
        if len(self._payload) + DHLEN + DHLEN + 2 * TAGLEN > MAX_MESSAGE_LEN:
            raise ValueError("Noise handshake payload too large (too many muxers?)")
        self._state = SymmetricState()
        self._remote_ephemeral = b""
        self._remote_static = b""
        self._outgoing = bytearray()
        self._incoming = bytearray()
        self._step = 0  # index of the next XX message (0, 1, 2); 3 = complete
        self._error: NoiseError | None = None
        self._transport_taken = False
        self.remote_peer_id: PeerId | None = None
        self.remote_public_key: PublicKey | None = None
        self.remote_muxers: list[str] = []
        if initiator:
            self._write_message_1()

    # -- public API -------------------------------------------------------------

    @property
    def complete(self) -> bool:
        """True once the handshake succeeded (our last message may still be queued)."""
        return self._step == 3

    @property
    def handshake_hash(self) -> bytes:
        """The Noise handshake hash ``h`` (a channel binding once complete)."""
        return self._state.h

    def data_to_send(self) -> bytes:
        """Everything queued for the wire; empties the queue."""
        out = bytes(self._outgoing)
        self._outgoing.clear()
        return out

    def receive_data(self, data: bytes | bytearray | memoryview) -> bool:
        """Feed bytes from the remote; returns :attr:`complete`.

        Raises a :class:`NoiseError` subclass when the remote misbehaves.
        Bytes that follow the final handshake message are kept for
        :meth:`to_transport`.
        """
        if self._error is not None:
            raise RuntimeError("the Noise handshake already failed") from self._error
        if self.complete:
            raise RuntimeError("the Noise handshake is complete; use to_transport()")
        self._incoming += data
        try:
            self._process_incoming()
        except NoiseError as exc:
            self._error = exc
            self._incoming.clear()
            self.remote_muxers = []  # early data of a failed handshake is discarded
            raise
        return self.complete

    def selected_muxer(self) -> str | None:
        """The stream muxer chosen by early negotiation, or ``None`` to negotiate later.

        Per connections/inlined-muxer-negotiation.md the *initiator's* preference
        wins: the first muxer in the initiator's list that the responder also lists.
        ``None`` when either side sent no list, or the lists do not overlap; then the
        caller falls back to multistream-select after the handshake (go-libp2p does
        the same; the spec says the handshake "MUST fail" on no overlap, and
        js-libp2p fails it).
        """
        if not self.complete:
            raise RuntimeError("the Noise handshake is not complete")
        if self.initiator:
            preferred, other = self._muxers, self.remote_muxers
        else:
            preferred, other = self.remote_muxers, self._muxers
        accepted = set(other)
        for muxer in preferred:
            if muxer in accepted:
                return muxer
        return None

    def to_transport(self) -> tuple[NoiseTransport, bytes]:
        """The transport cipher, and the bytes received after the last handshake message.

        Call once, after :meth:`data_to_send` has been flushed. The leftover bytes are
        transport frames: feed them to ``transport.receive_data``.
        """
        if not self.complete:
            raise RuntimeError("the Noise handshake is not complete")
        if self._transport_taken:
            raise RuntimeError("to_transport() was already called")  # would reuse nonces
        self._transport_taken = True
        initiator_key, responder_key = self._state.split()
        if self.initiator:
            transport = NoiseTransport(initiator_key, responder_key)
        else:
            transport = NoiseTransport(responder_key, initiator_key)
        leftover = bytes(self._incoming)
        self._incoming.clear()
        return transport, leftover

    # -- the XX state machine ---------------------------------------------------

    def _process_incoming(self) -> None:
        while self._step < 3 and len(self._incoming) >= 2:
            length = int.from_bytes(self._incoming[:2], "big")
            if len(self._incoming) < 2 + length:
                return
            message = bytes(self._incoming[2:2 + length])
            del self._incoming[:2 + length]
            self._read_message(message)

    def _read_message(self, message: bytes) -> None:
        if self.initiator and self._step == 1:
            self._read_message_2(message)
            self._write_message_3()
        elif not self.initiator and self._step == 0:
            self._read_message_1(message)
            self._write_message_2()
        elif not self.initiator and self._step == 2:
            self._read_message_3(message)
        else:  # unreachable: the initiator writes steps 0 and 2 itself
            raise AssertionError(f"no message to read at step {self._step}")

    def _queue(self, message: bytes) -> None:
        self._outgoing += _frame(message)
        self._step += 1

    def _write_message_1(self) -> None:
        # -> e
        st = self._state
        st.mix_hash(self._ephemeral_public)
        payload = st.encrypt_and_hash(b"")  # no key yet: the empty payload, in clear
        self._queue(self._ephemeral_public + payload)

    def _read_message_1(self, message: bytes) -> None:
        if len(message) < DHLEN:
            raise NoiseError(f"Noise handshake message 1 too short ({len(message)} bytes)")
        st = self._state
        self._remote_ephemeral = message[:DHLEN]
        st.mix_hash(self._remote_ephemeral)
        # The initiator must not send a payload here; whatever it sent is hashed and ignored.
        st.decrypt_and_hash(message[DHLEN:])
        self._step += 1

    def _write_message_2(self) -> None:
        # <- e, ee, s, es
        st = self._state
        st.mix_hash(self._ephemeral_public)
        st.mix_key(dh(self._ephemeral, self._remote_ephemeral))
        encrypted_static = st.encrypt_and_hash(self._static_public)
        st.mix_key(dh(self._static, self._remote_ephemeral))
        self._queue(self._ephemeral_public + encrypted_static
                    + st.encrypt_and_hash(self._payload))

    def _read_message_2(self, message: bytes) -> None:
        if len(message) < DHLEN + DHLEN + 2 * TAGLEN:
            raise NoiseError(f"Noise handshake message 2 too short ({len(message)} bytes)")
        st = self._state
        self._remote_ephemeral = message[:DHLEN]
        st.mix_hash(self._remote_ephemeral)
        st.mix_key(dh(self._ephemeral, self._remote_ephemeral))
        self._remote_static = st.decrypt_and_hash(message[DHLEN:2 * DHLEN + TAGLEN])
        st.mix_key(dh(self._ephemeral, self._remote_static))
        self._authenticate(st.decrypt_and_hash(message[2 * DHLEN + TAGLEN:]))
        self._step += 1

    def _write_message_3(self) -> None:
        # -> s, se
        st = self._state
        encrypted_static = st.encrypt_and_hash(self._static_public)
        st.mix_key(dh(self._static, self._remote_ephemeral))
        self._queue(encrypted_static + st.encrypt_and_hash(self._payload))

    def _read_message_3(self, message: bytes) -> None:
        if len(message) < DHLEN + 2 * TAGLEN:
            raise NoiseError(f"Noise handshake message 3 too short ({len(message)} bytes)")
        st = self._state
        self._remote_static = st.decrypt_and_hash(message[:DHLEN + TAGLEN])
        st.mix_key(dh(self._ephemeral, self._remote_static))
        self._authenticate(st.decrypt_and_hash(message[DHLEN + TAGLEN:]))
        self._step += 1

    def _authenticate(self, payload: bytes) -> None:
        """Check the remote's payload: identity key, signature, expected peer id."""
        key_bytes, signature, muxers = decode_handshake_payload(payload)
        try:
            public_key = PublicKey.from_protobuf(key_bytes)
        except ValueError as exc:  # KeyDecodeError / UnsupportedKeyType are DecodeErrors
            raise UnsupportedIdentityKey(f"remote identity key rejected: {exc}") from exc
        if not public_key.verify(SIGNATURE_PREFIX + self._remote_static, signature):
            raise InvalidIdentitySignature(
                "remote identity key's signature over its Noise static key is invalid")
        peer_id = PeerId.from_public_key(public_key)
        if self.expected_peer is not None and peer_id != self.expected_peer:
            raise PeerIdMismatch(self.expected_peer, peer_id)
        self.remote_public_key = public_key
        self.remote_peer_id = peer_id
        self.remote_muxers = muxers
