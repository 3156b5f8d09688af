"""identify (``/ipfs/id/1.0.0``): tell a peer who we are and what we speak."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .. import __version__
from ..codec.protobuf import Field, Schema, decode, encode
from ..codec.varint import encode_uvarint

if TYPE_CHECKING:
    from ..connection import Connection
    from ..stream import Stream

PROTOCOL = "/ipfs/id/1.0.0"
PUSH_PROTOCOL = "/ipfs/id/push/1.0.0"
AGENT_VERSION = f"libp2p_stream_sync/{__version__}"
PROTOCOL_VERSION = "ipfs/0.1.0"

IDENTIFY = Schema("Identify", [
    Field(5, "protocolVersion", "string"),
    Field(6, "agentVersion", "string"),
    Field(1, "publicKey", "bytes"),
    Field(2, "listenAddrs", "bytes", repeated=True),
    Field(4, "observedAddr", "bytes"),
    Field(3, "protocols", "string", repeated=True),
    Field(8, "signedPeerRecord", "bytes"),
])


def build_message(conn: "Connection") -> bytes:
    """Our identify message for the peer on ``conn`` (varint length-prefixed)."""
    from ..transport.tcp import sockaddr_to_multiaddr

    node = conn.node
    observed = sockaddr_to_multiaddr(conn.sock.family, conn.remote_addr).to_bytes()
    body = encode(IDENTIFY, {
        "protocolVersion": PROTOCOL_VERSION,
        "agentVersion": AGENT_VERSION,
        "publicKey": node.keypair.public_key.to_protobuf(),
        "listenAddrs": [ma.to_bytes() for ma in node.listen_addrs],
        "observedAddr": observed,
        "protocols": node._supported_protocols(),
    })
    return encode_uvarint(len(body)) + body


def respond(conn: "Connection", stream: "Stream") -> None:
    """Reactor-side responder: send our identify message and close the stream."""
    stream.write(build_message(conn))
    stream.close()


def parse_message(data: bytes) -> dict:
    """Decode an identify message body (without its length prefix)."""
    return decode(IDENTIFY, data, max_size=8192)
