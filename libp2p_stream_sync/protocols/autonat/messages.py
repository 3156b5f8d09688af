"""AutoNAT v1 messages (libp2p specs, ``autonat/autonat-v1.md``): pure encoding and
decoding, no I/O.

A stream carries one varint length-prefixed ``Message`` each way: the client's
``DIAL`` (its peer id and the addresses it wants tried) and the server's
``DIAL_RESPONSE`` (a status, a text, and the address that worked).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from ...codec.protobuf import Field, Schema, decode, encode
from ...codec.varint import decode_uvarint, encode_uvarint
from ...errors import DecodeError

PROTOCOL = "/libp2p/autonat/1.0.0"
#: Largest message body we send or accept (go-libp2p's bound too).
MAX_MESSAGE_SIZE = 4096


class MessageType(enum.IntEnum):
    """``Message.type``."""

    DIAL = 0
    DIAL_RESPONSE = 1


class Status(enum.IntEnum):
    """``DialResponse.status``."""

    OK = 0
    E_DIAL_ERROR = 100
    E_DIAL_REFUSED = 101
    E_BAD_REQUEST = 200
    E_INTERNAL_ERROR = 300


PEER_INFO = Schema("PeerInfo", [Field(1, "id", "bytes"),
                                Field(2, "addrs", "bytes", repeated=True)])
DIAL = Schema("Dial", [Field(1, "peer", "message", schema=PEER_INFO)])
DIAL_RESPONSE = Schema("DialResponse", [Field(1, "status", "uint"),
                                        Field(2, "statusText", "string"),
                                        Field(3, "addr", "bytes")])
MESSAGE = Schema("Message", [Field(1, "type", "uint"),
                             Field(2, "dial", "message", schema=DIAL),
                             Field(3, "dialResponse", "message", schema=DIAL_RESPONSE)])


class AutoNATMessageError(DecodeError):
    """An AutoNAT message is malformed, oversized, or not the one expected."""


@dataclass(frozen=True)
class DialRequest:
    """A client's ``DIAL``: its peer id (raw bytes, may be absent) and addresses
    (raw multiaddr bytes, undecoded)."""

    peer_id: bytes | None
    addrs: list[bytes] = field(default_factory=list)


@dataclass(frozen=True)
class DialResponse:
    """A server's ``DIAL_RESPONSE``. ``status`` is a :class:`Status` when known, the
    raw number otherwise; ``addr`` the raw multiaddr that was reached (OK only)."""

    status: "Status | int"
    text: str = ""
    addr: bytes | None = None


def frame(body: bytes) -> bytes:
    """``body`` with its varint length prefix."""
    return encode_uvarint(len(body)) + body


def encode_dial(peer_id: bytes, addrs: list[bytes]) -> bytes:
    """A length-prefixed ``DIAL`` message."""
    return frame(encode(MESSAGE, {
        "type": MessageType.DIAL,
        "dial": {"peer": {"id": peer_id, "addrs": list(addrs)}},
    }))


def encode_response(status: Status, text: str = "", addr: bytes | None = None) -> bytes:
    """A length-prefixed ``DIAL_RESPONSE`` message."""
    return frame(encode(MESSAGE, {
        "type": MessageType.DIAL_RESPONSE,
        "dialResponse": {"status": int(status), "statusText": text or None, "addr": addr},
    }))


def _decode(body: bytes) -> dict:
    if len(body) > MAX_MESSAGE_SIZE:
        raise AutoNATMessageError(f"AutoNAT message of {len(body)} bytes is too large")
    try:
        return decode(MESSAGE, body, max_size=MAX_MESSAGE_SIZE)
    except DecodeError as exc:
        raise AutoNATMessageError(f"malformed AutoNAT message: {exc}") from exc


def decode_request(body: bytes) -> DialRequest:
    """Parse a ``DIAL`` body (without its prefix); :class:`AutoNATMessageError` when
    it is not one. An absent ``type`` is read as ``DIAL``: proto2 gives an absent
    enum its default (the first value, ``DIAL = 0``), as go-libp2p's ``GetType()``
    does (rust-libp2p rejects it; every client sends the field anyway). A response
    keeps needing its explicit ``DIAL_RESPONSE``."""
    message = _decode(body)
    if message.get("type", MessageType.DIAL) != MessageType.DIAL or "dial" not in message:
        raise AutoNATMessageError("expected an AutoNAT DIAL message")
    peer = message["dial"].get("peer")
    if peer is None:
        raise AutoNATMessageError("AutoNAT DIAL without peer info")
    return DialRequest(peer.get("id"), list(peer.get("addrs", [])))


def decode_response(body: bytes) -> DialResponse:
    """Parse a ``DIAL_RESPONSE`` body; :class:`AutoNATMessageError` when it is not one."""
    message = _decode(body)
    if message.get("type") != MessageType.DIAL_RESPONSE or "dialResponse" not in message:
        raise AutoNATMessageError("expected an AutoNAT DIAL_RESPONSE message")
    response = message["dialResponse"]
    if "status" not in response:
        raise AutoNATMessageError("AutoNAT DIAL_RESPONSE without a status")
    raw = response["status"]
    try:
        status: Status | int = Status(raw)
    except ValueError:
        status = raw
    return DialResponse(status, response.get("statusText", ""), response.get("addr"))


def frame_header(buffer: bytes | bytearray, max_size: int = MAX_MESSAGE_SIZE
                 ) -> tuple[int, int] | None:
    """``(prefix length, body length)`` of the message ``buffer`` starts with, or None
    while its length prefix is incomplete; :class:`AutoNATMessageError` when the
    announced length exceeds ``max_size`` (at most 16 KiB; nothing need be buffered
    beyond it)."""
    try:  # 2 bytes reach 16 KiB: a longer prefix announces too much anyway
        decoded = decode_uvarint(buffer, 0, max_bytes=3)
    except DecodeError as exc:
        raise AutoNATMessageError(f"malformed AutoNAT length prefix: {exc}") from exc
    if decoded is None:
        return None
    size, start = decoded
    if size > max_size:
        raise AutoNATMessageError(f"AutoNAT message of {size} bytes is too large")
    return start, size
