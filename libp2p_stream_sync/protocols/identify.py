"""identify (``/ipfs/id/1.0.0``) and identify push (``/ipfs/id/push/1.0.0``).

Wire format (libp2p specs, ``identify/README.md``): the side that answers writes one
or more varint length-prefixed ``Identify`` protobuf messages and closes the stream;
the reader merges them. A push is the same message sent by the side that opened the
stream, whenever its listen addresses or protocols change; it may carry only the
fields that changed.

This module holds the pure parts (building, parsing, merging) and the blocking
stream helpers; :class:`~libp2p_stream_sync.protocols.BuiltinProtocols` wires them
to the node.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable, Protocol, Sequence

from multiaddr import Multiaddr

from .._version import __version__
from ..codec.protobuf import Field, Schema, decode, encode
from ..codec.varint import decode_uvarint, encode_uvarint
from ..errors import DecodeError
from ..identity import PeerId, PublicKey

if TYPE_CHECKING:
    from ..connection import Connection
    from ..stream import Stream

log = logging.getLogger(__name__)

PROTOCOL = "/ipfs/id/1.0.0"
PUSH_PROTOCOL = "/ipfs/id/push/1.0.0"
AGENT_VERSION = f"libp2p_stream_sync/{__version__}"
PROTOCOL_VERSION = "ipfs/0.1.0"

#: We never send more than this (length prefixes included).
MAX_SEND_SIZE = 4096
#: We never accept more than this from a peer (length prefixes included).
MAX_RECEIVE_SIZE = 8192
#: How long we wait for a peer's identify (or push) message.
DEFAULT_TIMEOUT = 10.0
#: Identify push streams one peer may have open at once; more are reset.
MAX_PUSHES_PER_PEER = 2
#: Listen addresses and protocols kept from one peer's message; the rest are ignored
#: unparsed (an 8 KiB message could otherwise carry ~1,600 addresses).
MAX_LISTEN_ADDRS = 64
MAX_PROTOCOLS = 256

IDENTIFY = Schema("Identify", [
    Field(5, "protocolVersion", "string"),
    Field(6, "agentVersion", "string"),
    Field(1, "publicKey", "bytes"),
    Field(2, "listenAddrs", "bytes", repeated=True),
    Field(4, "observedAddr", "bytes"),
    Field(3, "protocols", "string", repeated=True),
    Field(8, "signedPeerRecord", "bytes"),
])


class IdentifyError(DecodeError):
    """A peer's identify message is malformed, oversized, or names another peer."""


@dataclass
class IdentifyInfo:
    """What a peer told us about itself through identify (and later pushes)."""

    peer_id: PeerId
    protocols: list[str] = field(default_factory=list)
    listen_addrs: list[Multiaddr] = field(default_factory=list)
    observed_addr: Multiaddr | None = None
    agent_version: str = ""
    protocol_version: str = ""
    public_key: PublicKey | None = None


# -- building ---------------------------------------------------------------------------
class Host(Protocol):
    """What identify needs of the node it speaks for."""

    keypair: Any

    @property
    def listen_addrs(self) -> Sequence[Multiaddr]:
        """Our bound listen addresses."""

    def supported_protocols(self) -> Sequence[str]:
        """The protocols we accept, sorted."""


def build_message(node: Host, conn: "Connection") -> bytes:
    """Our identify message for the peer on ``conn`` (varint length-prefixed)."""
    try:
        observed: bytes | None = conn.transport.remote_multiaddr(
            conn.sock, conn.remote_addr).to_bytes()
    except (OSError, ValueError):
        observed = None  # the socket is already gone: leave the field out
    return encode_message(
        public_key=node.keypair.public_key.to_protobuf(),
        listen_addrs=[ma.to_bytes() for ma in node.listen_addrs],
        observed_addr=observed,
        protocols=node.supported_protocols(),
    )


def encode_message(*, public_key: bytes, listen_addrs: Sequence[bytes],
                   observed_addr: bytes | None, protocols: Sequence[str],
                   limit: int = MAX_SEND_SIZE) -> bytes:
    """Encode one length-prefixed identify message of at most ``limit`` bytes.

    When everything does not fit, protocols and then listen addresses are dropped from
    the end (and logged) until it does.
    """
    protos, addrs = list(protocols), list(listen_addrs)
    while True:
        body = encode(IDENTIFY, {
            "protocolVersion": PROTOCOL_VERSION,
            "agentVersion": AGENT_VERSION,
            "publicKey": public_key,
            "listenAddrs": addrs,
            "observedAddr": observed_addr,
            "protocols": protos,
        })
        message = encode_uvarint(len(body)) + body
        if len(message) <= limit or not (protos or addrs):
            return message
        if protos:
            log.warning("identify message too large: leaving out protocol %s", protos[-1])
            protos.pop()
        else:
            log.warning("identify message too large: leaving out a listen address")
            addrs.pop()


# -- parsing ------------------------------------------------------------------------------
def parse_message(data: bytes) -> dict:
    """Decode an identify message body (without its length prefix)."""
    return decode(IDENTIFY, data, max_size=MAX_RECEIVE_SIZE)


def split_messages(data: bytes | bytearray) -> list[dict]:
    """Decode every length-prefixed identify message in ``data`` (a whole stream)."""
    view = memoryview(data)
    pos = 0
    messages = []
    while pos < len(view):
        decoded = decode_uvarint(view, pos)
        if decoded is None:
            raise IdentifyError("truncated identify length prefix")
        size, pos = decoded
        if size > len(view) - pos:
            raise IdentifyError(f"identify message of {size} bytes is truncated")
        messages.append(parse_message(bytes(view[pos:pos + size])))
        pos += size
    return messages


def merge_messages(messages: Iterable[dict]) -> dict:
    """Merge several messages (spec: repeated fields append, singular fields replace)."""
    merged: dict[str, Any] = {}
    for message in messages:
        for key, value in message.items():
            if isinstance(value, list):
                merged.setdefault(key, []).extend(value)
            else:
                merged[key] = value
    return merged


def _parse_addrs(raw: Sequence[bytes], limit: int = MAX_LISTEN_ADDRS) -> list[Multiaddr]:
    """Decode at most ``limit`` distinct multiaddrs (linear time: duplicates are found
    by their bytes before any decoding); undecodable ones are skipped."""
    if len(raw) > limit:
        log.debug("identify carries %d addresses: keeping the first %d", len(raw), limit)
    seen: set[bytes] = set()
    addrs = []
    for item in raw:
        if len(addrs) >= limit:
            break
        key = bytes(item)
        if key in seen:
            continue
        seen.add(key)
        try:
            ma = Multiaddr(key)
            str(ma)  # the package decodes lazily: make it validate now
        except Exception:  # the multiaddr package raises assorted types
            log.debug("ignoring an undecodable multiaddr in identify")
            continue
        addrs.append(ma)
    return addrs


def check_public_key(message: dict, peer: PeerId) -> PublicKey | None:
    """The message's public key, verified to belong to ``peer`` (None when absent)."""
    raw = message.get("publicKey")
    if raw is None:
        return None
    try:
        key = PublicKey.from_protobuf(bytes(raw))
    except ValueError as exc:
        raise IdentifyError(f"bad public key in identify: {exc}") from exc
    if PeerId.from_public_key(key) != peer:
        raise IdentifyError(f"identify public key does not belong to {peer}")
    return key


def apply_message(info: IdentifyInfo, message: dict, *, push: bool = False) -> None:
    """Update ``info`` from a (merged) message.

    A full identify replaces every field; a push replaces only the fields it carries
    (empty repeated fields count as absent, as they cannot be told apart on the wire).
    """
    key = check_public_key(message, info.peer_id)
    if key is not None:
        info.public_key = key
    protocols = list(dict.fromkeys(p for p in message.get("protocols", []) if p))
    if protocols or not push:
        info.protocols = protocols[:MAX_PROTOCOLS]
    addrs = message.get("listenAddrs", [])
    if addrs or not push:
        info.listen_addrs = _parse_addrs(addrs)
    if "observedAddr" in message:
        parsed = _parse_addrs([message["observedAddr"]])
        info.observed_addr = parsed[0] if parsed else None
    if "agentVersion" in message:
        info.agent_version = message["agentVersion"]
    if "protocolVersion" in message:
        info.protocol_version = message["protocolVersion"]


# -- stream helpers ---------------------------------------------------------------------------
def responder(node: Host) -> Callable[["Connection", "Stream"], None]:
    """The reactor-side responder for ``node``: it sends our identify message and
    closes the stream.

    Non-blocking: the message (at most 4 KiB) is far below the stream's send buffer.
    """
    def respond(conn: "Connection", stream: "Stream") -> None:
        stream.write(build_message(node, conn))
        stream.close()
    return respond


def read_messages(stream: "Stream", timeout: float) -> dict:
    """Blocking: read a whole identify stream (bounded, timed) and merge its messages."""
    deadline = time.monotonic() + timeout
    data = bytearray()
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("identify message did not arrive in time")
        stream.settimeout(remaining)
        chunk = stream.read(MAX_RECEIVE_SIZE + 1 - len(data))
        if not chunk:
            break
        data += chunk
        if len(data) > MAX_RECEIVE_SIZE:
            raise IdentifyError(f"identify message larger than {MAX_RECEIVE_SIZE} bytes")
    return merge_messages(split_messages(data))


#: ``on_push(peer, merged message)``, called on the reactor thread.
PushHandler = Callable[[PeerId, dict], None]
#: ``call_later(delay, fn)`` schedules ``fn`` on the reactor; returns a cancellable handle.
CallLater = Callable[[float, Callable[[], None]], Any]


class PushReceiver:
    """Receives identify pushes on the reactor thread: no thread per stream, at most
    :data:`MAX_PUSHES_PER_PEER` streams per peer at once, each at most
    :data:`MAX_RECEIVE_SIZE` bytes and complete within ``timeout`` seconds."""

    def __init__(self, timeout: float, on_push: PushHandler) -> None:
        self.timeout = timeout
        self.on_push = on_push
        self._active: dict[PeerId, int] = {}

    def start(self, conn: "Connection", stream: "Stream", call_later: CallLater) -> bool:
        """Start gathering a push stream; False when its peer has too many open."""
        peer = stream.peer_id
        if self._active.get(peer, 0) >= MAX_PUSHES_PER_PEER:
            return False
        self._active[peer] = self._active.get(peer, 0) + 1
        _PushStream(self, conn, stream, call_later).start()
        return True

    def finished(self, peer: PeerId) -> None:
        left = self._active.get(peer, 0) - 1
        if left > 0:
            self._active[peer] = left
        else:
            self._active.pop(peer, None)


class _PushStream:
    """One push being gathered on the reactor."""

    __slots__ = ("receiver", "conn", "stream", "data", "timer", "done")

    def __init__(self, receiver: PushReceiver, conn: "Connection", stream: "Stream",
                 call_later: CallLater) -> None:
        self.receiver = receiver
        self.conn = conn
        self.stream = stream
        self.data = bytearray()
        self.done = False
        self.timer = call_later(receiver.timeout, self._expired)

    def start(self) -> None:
        self.stream.settimeout(0)  # reads on the reactor never wait
        self.conn.watch_stream(self.stream, self.on_event)
        self.on_event()  # the message (or its end) may have come with the negotiation

    def on_event(self) -> None:
        """Gather what has arrived; loop, as the end may be buffered behind the data."""
        while not self.done:
            try:
                chunk = self.stream.read(MAX_RECEIVE_SIZE + 1 - len(self.data))
            except BlockingIOError:
                return
            except OSError as exc:
                self._fail(f"stream failed: {exc}")
                return
            if not chunk:
                self._complete()
                return
            self.data += chunk
            if len(self.data) > MAX_RECEIVE_SIZE:
                self._fail(f"larger than {MAX_RECEIVE_SIZE} bytes")

    def _complete(self) -> None:
        """The pusher closed its side: apply what it sent."""
        self._finish()
        self.stream.close()
        try:
            message = merge_messages(split_messages(self.data))
        except DecodeError as exc:
            log.info("bad identify push from %s: %s", self.stream.peer_id, exc)
            return
        self.receiver.on_push(self.stream.peer_id, message)

    def _expired(self) -> None:
        self.timer = None
        self._fail(f"incomplete after {self.receiver.timeout} s")

    def _fail(self, reason: str) -> None:
        if self.done:
            return
        log.info("bad identify push from %s: %s", self.stream.peer_id, reason)
        self._finish()
        self.stream.reset()

    def _finish(self) -> None:
        self.done = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.receiver.finished(self.stream.peer_id)
