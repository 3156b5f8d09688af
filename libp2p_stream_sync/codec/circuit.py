"""Circuit relay v2 messages (libp2p specs, ``relay/circuit-v2.md``), sans-IO.

:class:`HopMessage` (``/libp2p/circuit/relay/0.2.0/hop``) and :class:`StopMessage`
(``.../stop``) with their parts :class:`Peer`, :class:`Reservation`, :class:`Limit`
and the :class:`Status` codes; the reservation :class:`Voucher` payload (sealed in a
signed envelope by ``identity.envelope``). On the wire every message is prefixed with
its length as an unsigned varint; :class:`MessageReader` takes bytes as they come and
yields whole messages, at most :data:`MAX_MESSAGE_SIZE` bytes each (go-libp2p's bound).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from ..errors import DecodeError
from . import protobuf as pb
from .varint import decode_uvarint, encode_uvarint

HOP_PROTOCOL = "/libp2p/circuit/relay/0.2.0/hop"
STOP_PROTOCOL = "/libp2p/circuit/relay/0.2.0/stop"
#: Largest message accepted (go-libp2p's ``maxMessageSize``).
MAX_MESSAGE_SIZE = 4096
#: Signed-envelope domain and payload type of reservation vouchers.
VOUCHER_DOMAIN = "libp2p-relay-rsvp"
VOUCHER_PAYLOAD_TYPE = b"\x03\x02"


class Status(enum.IntEnum):
    """A relay's (or a stop target's) answer."""

    OK = 100
    RESERVATION_REFUSED = 200
    RESOURCE_LIMIT_EXCEEDED = 201
    PERMISSION_DENIED = 202
    CONNECTION_FAILED = 203
    NO_RESERVATION = 204
    MALFORMED_MESSAGE = 400
    UNEXPECTED_MESSAGE = 401


class HopType(enum.IntEnum):
    """``HopMessage.type``."""

    RESERVE = 0
    CONNECT = 1
    STATUS = 2


class StopType(enum.IntEnum):
    """``StopMessage.type``."""

    CONNECT = 0
    STATUS = 1


_PEER = pb.Schema("Peer", [pb.Field(1, "id", "bytes"),
                           pb.Field(2, "addrs", "bytes", repeated=True)])
_RESERVATION = pb.Schema("Reservation", [pb.Field(1, "expire", "uint"),
                                         pb.Field(2, "addrs", "bytes", repeated=True),
                                         pb.Field(3, "voucher", "bytes")])
_LIMIT = pb.Schema("Limit", [pb.Field(1, "duration", "uint"), pb.Field(2, "data", "uint")])
_HOP = pb.Schema("HopMessage", [pb.Field(1, "type", "uint"),
                                pb.Field(2, "peer", "message", schema=_PEER),
                                pb.Field(3, "reservation", "message", schema=_RESERVATION),
                                pb.Field(4, "limit", "message", schema=_LIMIT),
                                pb.Field(5, "status", "uint")])
_STOP = pb.Schema("StopMessage", [pb.Field(1, "type", "uint"),
                                  pb.Field(2, "peer", "message", schema=_PEER),
                                  pb.Field(3, "limit", "message", schema=_LIMIT),
                                  pb.Field(4, "status", "uint")])
_VOUCHER = pb.Schema("Voucher", [pb.Field(1, "relay", "bytes"), pb.Field(2, "peer", "bytes"),
                                 pb.Field(3, "expiration", "uint")])
_UINT32 = 1 << 32


@dataclass(frozen=True)
class Peer:
    """A peer id (raw multihash bytes) and, optionally, its addresses (raw multiaddrs)."""

    id: bytes
    addrs: tuple[bytes, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The protobuf field values."""
        return {"id": self.id, "addrs": list(self.addrs)}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "Peer":
        """From decoded field values; DecodeError without the required ``id``."""
        if "id" not in values:
            raise DecodeError("Peer.id is required")
        return cls(values["id"], tuple(values["addrs"]))


@dataclass(frozen=True)
class Limit:
    """Limits of one relayed connection: ``duration`` seconds, ``data`` bytes each way
    (0 or None: no limit)."""

    duration: int | None = None
    data: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """The protobuf field values."""
        return {"duration": self.duration, "data": self.data}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "Limit":
        """From decoded field values; DecodeError for a duration beyond uint32."""
        duration = values.get("duration")
        if duration is not None and duration >= _UINT32:
            raise DecodeError("Limit.duration exceeds uint32")
        return cls(duration, values.get("data"))


@dataclass(frozen=True)
class Reservation:
    """A granted reservation: ``expire`` (UNIX seconds, UTC), the relay's addresses
    (raw multiaddrs with ``/p2p/<relay>``) and the signed voucher (envelope bytes)."""

    expire: int | None = None
    addrs: tuple[bytes, ...] = ()
    voucher: bytes | None = None

    def to_dict(self) -> dict[str, Any]:
        """The protobuf field values."""
        return {"expire": self.expire, "addrs": list(self.addrs), "voucher": self.voucher}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "Reservation":
        """From decoded field values."""
        return cls(values.get("expire"), tuple(values["addrs"]), values.get("voucher"))


def _part(cls: Any, values: dict[str, Any], name: str) -> Any:
    raw = values.get(name)
    return None if raw is None else cls.from_dict(raw)


def _dict_of(part: Any) -> dict[str, Any] | None:
    return None if part is None else part.to_dict()


def _status(values: dict[str, Any]) -> Status | None:
    raw = values.get("status")
    if raw is None:
        return None
    try:
        return Status(raw)
    except ValueError:
        raise DecodeError(f"unknown status code {raw}") from None


@dataclass(frozen=True)
class HopMessage:
    """A message of the hop protocol (client ⇄ relay)."""

    type: HopType
    peer: Peer | None = None
    reservation: Reservation | None = None
    limit: Limit | None = None
    status: Status | None = None

    def encode(self) -> bytes:
        """The protobuf bytes (no length prefix)."""
        return pb.encode(_HOP, {"type": int(self.type), "peer": _dict_of(self.peer),
                                "reservation": _dict_of(self.reservation),
                                "limit": _dict_of(self.limit),
                                "status": None if self.status is None else int(self.status)})

    @classmethod
    def decode(cls, data: bytes | bytearray | memoryview) -> "HopMessage":
        """Parse protobuf bytes; DecodeError when malformed, the type is missing or
        unknown, or a status code is unknown."""
        values = pb.decode(_HOP, data, max_size=MAX_MESSAGE_SIZE)
        try:
            kind = HopType(values["type"])
        except (KeyError, ValueError):
            raise DecodeError(f"HopMessage.type missing or unknown: "
                              f"{values.get('type')}") from None
        return cls(kind, _part(Peer, values, "peer"),
                   _part(Reservation, values, "reservation"), _part(Limit, values, "limit"),
                   _status(values))


@dataclass(frozen=True)
class StopMessage:
    """A message of the stop protocol (relay ⇄ the target of a circuit)."""

    type: StopType
    peer: Peer | None = None
    limit: Limit | None = None
    status: Status | None = None

    def encode(self) -> bytes:
        """The protobuf bytes (no length prefix)."""
        return pb.encode(_STOP, {"type": int(self.type), "peer": _dict_of(self.peer),
                                 "limit": _dict_of(self.limit),
                                 "status": None if self.status is None else int(self.status)})

    @classmethod
    def decode(cls, data: bytes | bytearray | memoryview) -> "StopMessage":
        """Parse protobuf bytes; DecodeError as for :meth:`HopMessage.decode`."""
        values = pb.decode(_STOP, data, max_size=MAX_MESSAGE_SIZE)
        try:
            kind = StopType(values["type"])
        except (KeyError, ValueError):
            raise DecodeError(f"StopMessage.type missing or unknown: "
                              f"{values.get('type')}") from None
        return cls(kind, _part(Peer, values, "peer"), _part(Limit, values, "limit"),
                   _status(values))


@dataclass(frozen=True)
class Voucher:
    """A reservation voucher's payload: relay and reserving peer (raw peer id bytes)
    and the expiration (UNIX seconds). Encoded canonically: fields in number order."""

    relay: bytes
    peer: bytes
    expiration: int

    def encode(self) -> bytes:
        """The canonical protobuf bytes."""
        return pb.encode(_VOUCHER, {"relay": self.relay, "peer": self.peer,
                                    "expiration": self.expiration})

    @classmethod
    def decode(cls, data: bytes | bytearray | memoryview) -> "Voucher":
        """Parse; DecodeError when malformed or a required field is missing."""
        values = pb.decode(_VOUCHER, data, max_size=MAX_MESSAGE_SIZE)
        missing = [name for name in ("relay", "peer", "expiration") if name not in values]
        if missing:
            raise DecodeError(f"Voucher lacks {', '.join(missing)}")
        return cls(values["relay"], values["peer"], values["expiration"])


def frame(message: "HopMessage | StopMessage") -> bytes:
    """``message`` with its varint length prefix, as sent on a hop or stop stream."""
    body = message.encode()
    return encode_uvarint(len(body)) + body


@dataclass
class MessageReader:
    """Collects length-prefixed messages from bytes as they arrive.

    :meth:`feed` returns the body of the first whole message (None until it is
    complete); bytes after it stay in :attr:`rest` (on a hop stream that became a
    circuit, they are the circuit's first bytes). A length beyond ``max_size`` raises
    :class:`DecodeError`, so at most ``max_size`` plus a varint is ever buffered.
    """

    max_size: int = MAX_MESSAGE_SIZE
    rest: bytearray = field(default_factory=bytearray)

    def feed(self, data: bytes | bytearray | memoryview) -> bytes | None:
        """Add ``data``; the first whole message's body once there is one."""
        self.rest += data
        head = decode_uvarint(self.rest, 0, 5)
        if head is None:
            return None
        length, start = head
        if length > self.max_size:
            raise DecodeError(f"relay message of {length} bytes exceeds {self.max_size}")
        if len(self.rest) - start < length:
            return None
        body = bytes(self.rest[start:start + length])
        del self.rest[:start + length]
        return body
