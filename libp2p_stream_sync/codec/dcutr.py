"""DCUtR messages (libp2p specs, ``relay/DCUtR.md``), sans-IO.

``/libp2p/dcutr`` carries :class:`HolePunch` messages: ``CONNECT`` (with the sender's
observed, dialable addresses) and ``SYNC``. Each is prefixed with its length as an
unsigned varint and at most :data:`MAX_MESSAGE_SIZE` bytes long (the spec's "SHOULD
refuse ... larger than 4 KiB"); ``codec.circuit.MessageReader`` frames them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from ..errors import DecodeError
from . import protobuf as pb
from .varint import encode_uvarint

PROTOCOL = "/libp2p/dcutr"
#: Largest message accepted (the spec's 4 KiB, go-libp2p's ``maxMsgSize``).
MAX_MESSAGE_SIZE = 4096


class HolePunchType(enum.IntEnum):
    """``HolePunch.type``."""

    CONNECT = 100
    SYNC = 300


_HOLE_PUNCH = pb.Schema("HolePunch", [pb.Field(1, "type", "uint"),
                                      pb.Field(2, "ObsAddrs", "bytes", repeated=True)])


@dataclass(frozen=True)
class HolePunch:
    """One DCUtR message: its type and (for ``CONNECT``) raw multiaddr bytes."""

    type: HolePunchType
    obs_addrs: tuple[bytes, ...] = ()

    def encode(self) -> bytes:
        """The protobuf bytes (no length prefix)."""
        return pb.encode(_HOLE_PUNCH, {"type": int(self.type),
                                       "ObsAddrs": list(self.obs_addrs)})

    @classmethod
    def decode(cls, data: bytes | bytearray | memoryview) -> "HolePunch":
        """Parse protobuf bytes; DecodeError when malformed, larger than
        :data:`MAX_MESSAGE_SIZE`, or the type is missing or unknown."""
        values = pb.decode(_HOLE_PUNCH, data, max_size=MAX_MESSAGE_SIZE)
        try:
            kind = HolePunchType(values["type"])
        except (KeyError, ValueError):
            raise DecodeError(f"HolePunch.type missing or unknown: "
                              f"{values.get('type')}") from None
        return cls(kind, tuple(values["ObsAddrs"]))

    def framed(self) -> bytes:
        """The message with its varint length prefix, as sent on the stream."""
        body = self.encode()
        return encode_uvarint(len(body)) + body
