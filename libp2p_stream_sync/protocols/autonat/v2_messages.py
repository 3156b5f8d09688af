"""AutoNAT v2 messages (libp2p specs, ``autonat/autonat-v2.md``): pure encoding and
decoding, no I/O.

``/libp2p/autonat/2/dial-request`` carries ``Message`` (one of ``DialRequest``,
``DialResponse``, ``DialDataRequest``, ``DialDataResponse``); the server dials one
address back and sends the request's nonce as a ``DialBack`` on a new
``/libp2p/autonat/2/dial-back`` stream, answered by ``DialBackResponse``. Every
message is varint length-prefixed (``messages.frame``). proto3: a field left out
means its zero value.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from ...codec.protobuf import Field, Schema, decode, encode
from ...errors import DecodeError
from .messages import AutoNATMessageError, frame

DIAL_REQUEST_PROTOCOL = "/libp2p/autonat/2/dial-request"
DIAL_BACK_PROTOCOL = "/libp2p/autonat/2/dial-back"
#: Largest message body we accept on either stream (a DialDataResponse carries 4 KiB
#: of data; requests are small).
MAX_MESSAGE_SIZE = 8192
#: Most data bytes one DialDataResponse carries (the spec's bound).
MAX_DATA_CHUNK = 4096


class ResponseStatus(enum.IntEnum):
    """``DialResponse.status``."""

    E_INTERNAL_ERROR = 0
    E_REQUEST_REJECTED = 100
    E_DIAL_REFUSED = 101
    OK = 200


class DialStatus(enum.IntEnum):
    """``DialResponse.dialStatus``: the outcome of the one dial."""

    UNUSED = 0
    E_DIAL_ERROR = 100
    E_DIAL_BACK_ERROR = 101
    OK = 200


DIAL_REQUEST = Schema("DialRequest", [Field(1, "addrs", "bytes", repeated=True),
                                      Field(2, "nonce", "fixed64")])
DIAL_DATA_REQUEST = Schema("DialDataRequest", [Field(1, "addrIdx", "uint"),
                                               Field(2, "numBytes", "uint")])
DIAL_RESPONSE = Schema("DialResponse", [Field(1, "status", "uint"),
                                        Field(2, "addrIdx", "uint"),
                                        Field(3, "dialStatus", "uint")])
DIAL_DATA_RESPONSE = Schema("DialDataResponse", [Field(1, "data", "bytes")])
MESSAGE = Schema("Message", [
    Field(1, "dialRequest", "message", schema=DIAL_REQUEST),
    Field(2, "dialResponse", "message", schema=DIAL_RESPONSE),
    Field(3, "dialDataRequest", "message", schema=DIAL_DATA_REQUEST),
    Field(4, "dialDataResponse", "message", schema=DIAL_DATA_RESPONSE),
])
DIAL_BACK = Schema("DialBack", [Field(1, "nonce", "fixed64")])
DIAL_BACK_RESPONSE = Schema("DialBackResponse", [Field(1, "status", "uint")])


@dataclass(frozen=True)
class DialRequest:
    """Addresses (raw multiaddr bytes, most wanted first) and the nonce."""

    addrs: list[bytes]
    nonce: int


@dataclass(frozen=True)
class DialDataRequest:
    """The server asks ``num_bytes`` of data before dialing ``addrs[addr_idx]``."""

    addr_idx: int
    num_bytes: int


@dataclass(frozen=True)
class DialResponse:
    """The outcome: ``status`` and ``dial_status`` are the enums when known, the raw
    numbers otherwise (the spec: discard what you do not understand)."""

    status: "ResponseStatus | int"
    addr_idx: int = 0
    dial_status: "DialStatus | int" = DialStatus.UNUSED


@dataclass(frozen=True)
class DialDataResponse:
    """A chunk of the data a DialDataRequest asked for."""

    data: bytes


def encode_dial_request(addrs: list[bytes], nonce: int) -> bytes:
    """A length-prefixed ``Message{dialRequest}``."""
    return frame(encode(MESSAGE, {"dialRequest": {"addrs": list(addrs), "nonce": nonce}}))


def encode_dial_data_request(addr_idx: int, num_bytes: int) -> bytes:
    """A length-prefixed ``Message{dialDataRequest}``."""
    return frame(encode(MESSAGE, {"dialDataRequest": {"addrIdx": addr_idx,
                                                      "numBytes": num_bytes}}))


def encode_dial_data_response(data: bytes) -> bytes:
    """A length-prefixed ``Message{dialDataResponse}`` (``data`` at most 4 KiB)."""
    if len(data) > MAX_DATA_CHUNK:
        raise ValueError(f"a DialDataResponse carries at most {MAX_DATA_CHUNK} bytes")
    return frame(encode(MESSAGE, {"dialDataResponse": {"data": data}}))


def encode_dial_response(status: ResponseStatus, addr_idx: int = 0,
                         dial_status: DialStatus = DialStatus.UNUSED) -> bytes:
    """A length-prefixed ``Message{dialResponse}``."""
    return frame(encode(MESSAGE, {"dialResponse": {
        "status": int(status), "addrIdx": addr_idx, "dialStatus": int(dial_status)}}))


def encode_dial_back(nonce: int) -> bytes:
    """A length-prefixed ``DialBack``."""
    return frame(encode(DIAL_BACK, {"nonce": nonce}))


def encode_dial_back_response() -> bytes:
    """A length-prefixed ``DialBackResponse{OK}``."""
    return frame(encode(DIAL_BACK_RESPONSE, {"status": 0}))


def _enum(kind: type, raw: int) -> "enum.IntEnum | int":
    try:
        return kind(raw)
    except ValueError:
        return raw


def decode_message(body: bytes) -> "DialRequest | DialDataRequest | DialResponse | " \
                                     "DialDataResponse":
    """Parse a ``Message`` body (without its prefix): the one message it holds.
    :class:`AutoNATMessageError` when it is malformed or holds none."""
    if len(body) > MAX_MESSAGE_SIZE:
        raise AutoNATMessageError(f"AutoNAT v2 message of {len(body)} bytes is too large")
    try:
        message = decode(MESSAGE, body, max_size=MAX_MESSAGE_SIZE)
    except DecodeError as exc:
        raise AutoNATMessageError(f"malformed AutoNAT v2 message: {exc}") from exc
    if "dialRequest" in message:
        request = message["dialRequest"]
        return DialRequest(list(request["addrs"]), request.get("nonce", 0))
    if "dialResponse" in message:
        response = message["dialResponse"]
        return DialResponse(_enum(ResponseStatus, response.get("status", 0)),
                            response.get("addrIdx", 0),
                            _enum(DialStatus, response.get("dialStatus", 0)))
    if "dialDataRequest" in message:
        wanted = message["dialDataRequest"]
        return DialDataRequest(wanted.get("addrIdx", 0), wanted.get("numBytes", 0))
    if "dialDataResponse" in message:
        return DialDataResponse(message["dialDataResponse"].get("data", b""))
    raise AutoNATMessageError("AutoNAT v2 message holds no known message")


def decode_dial_back(body: bytes) -> int:
    """The nonce of a ``DialBack`` body; :class:`AutoNATMessageError` when malformed."""
    try:
        return decode(DIAL_BACK, body, max_size=64).get("nonce", 0)
    except DecodeError as exc:
        raise AutoNATMessageError(f"malformed AutoNAT DialBack: {exc}") from exc


def decode_dial_back_response(body: bytes) -> int:
    """The status of a ``DialBackResponse`` body (0 is OK)."""
    try:
        return decode(DIAL_BACK_RESPONSE, body, max_size=64).get("status", 0)
    except DecodeError as exc:
        raise AutoNATMessageError(f"malformed AutoNAT DialBackResponse: {exc}") from exc
