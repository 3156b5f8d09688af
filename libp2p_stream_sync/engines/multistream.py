"""multistream-select 1.0 (``/multistream/1.0.0``) as a sans-IO engine.

One :class:`MultistreamDialer` or :class:`MultistreamListener` runs one negotiation on
one byte stream (a raw connection or a muxed stream). Wire format, per the libp2p
connections spec and github.com/multiformats/multistream-select:

* every message is ``uvarint(len(text) + 1) || text || "\\n"``;
* both sides first send the header ``/multistream/1.0.0``;
* the dialer proposes a protocol id, the listener echoes it (agreement) or answers
  ``na``; the dialer may then propose the next one;
* ``ls`` asks the listener for its protocols. The answer is one message whose body
  is the concatenation of ``uvarint(len(p) + 1) || p || "\\n"`` for every protocol,
  followed by a final ``"\\n"`` (what rust-libp2p and go-multistream send).

Once a side has agreed, whatever bytes followed the final message belong to the
negotiated protocol and are handed back as :attr:`Agreed.leftover`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Sequence

from ..codec.varint import decode_uvarint, encode_uvarint
from ..errors import DecodeError, ProtocolError

__all__ = [
    "PROTOCOL_ID",
    "MAX_MESSAGE_SIZE",
    "MAX_PROTOCOL_ID_LENGTH",
    "MultistreamError",
    "NegotiationFailed",
    "Agreed",
    "encode_message",
    "encode_ls_response",
    "MultistreamDialer",
    "MultistreamListener",
]

PROTOCOL_ID = "/multistream/1.0.0"

#: Largest incoming message (length prefix value) we accept. go-multistream rejects
#: messages over 64 KiB; we accept up to the same bound so no real peer is refused.
MAX_MESSAGE_SIZE = 64 * 1024

#: Largest protocol id we propose or echo. js-libp2p refuses ids over 1024 bytes, so
#: anything longer could not be negotiated with every peer.
MAX_PROTOCOL_ID_LENGTH = 1024

_NA = b"na"
_LS = b"ls"
_HEADER = PROTOCOL_ID.encode()


class MultistreamError(ProtocolError):
    """The peer broke multistream-select (bad header, malformed or oversized message)."""


class NegotiationFailed(MultistreamError):
    """The listener answered ``na`` to every protocol the dialer proposed."""

    def __init__(self, protocols: Sequence[str]) -> None:
        self.protocols: tuple[str, ...] = tuple(protocols)
        super().__init__(f"peer supports none of {list(self.protocols)}")


@dataclass(frozen=True, slots=True)
class Agreed:
    """Negotiation finished on ``protocol``; ``leftover`` followed the final message."""

    protocol: str
    leftover: bytes


def encode_message(text: str | bytes) -> bytes:
    """Frame one multistream message: ``uvarint(len + 1) || text || "\\n"``."""
    raw = text.encode("utf-8") if isinstance(text, str) else bytes(text)
    return encode_uvarint(len(raw) + 1) + raw + b"\n"


def encode_ls_response(protocols: Sequence[str]) -> bytes:
    """Frame the listener's answer to ``ls``: one message of length-prefixed lines.

    The body, every protocol as ``uvarint(len + 1) || p || "\\n"``, is framed like
    any message, so the message's own trailing newline ends the list (as in
    rust-libp2p: ``uvarint(len(body) + 1) || body || "\\n"``).
    """
    body = bytearray()
    for proto in protocols:
        body += encode_message(proto)
    return encode_message(bytes(body))


def _check_protocol_id(protocol: str) -> bytes:
    """Validate a protocol id we are about to send; return its UTF-8 bytes."""
    if not isinstance(protocol, str):
        raise TypeError(f"protocol ids are str, not {type(protocol).__name__}")
    raw = protocol.encode("utf-8")
    if not raw or b"\n" in raw:
        raise ValueError(f"invalid protocol id {protocol!r}")
    if len(raw) > MAX_PROTOCOL_ID_LENGTH:
        raise ValueError(f"protocol id longer than {MAX_PROTOCOL_ID_LENGTH} bytes")
    if raw in (_NA, _LS, _HEADER):
        raise ValueError(f"{protocol!r} is reserved by multistream-select")
    return raw


class _MessageReader:
    """Splits received bytes into multistream messages (bodies without the newline)."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        self._buf += data

    def next_message(self) -> bytes | None:
        """Return the next complete message body, or ``None`` if more bytes are needed."""
        buf = self._buf
        try:
            decoded = decode_uvarint(buf, 0)
        except DecodeError as exc:
            raise MultistreamError(f"bad message length: {exc}") from None
        if decoded is None:
            return None
        length, start = decoded
        if length == 0:
            raise MultistreamError("empty message (no trailing newline)")
        if length > MAX_MESSAGE_SIZE:
            raise MultistreamError(f"message of {length} bytes exceeds {MAX_MESSAGE_SIZE}")
        end = start + length
        if len(buf) < end:
            return None
        if buf[end - 1] != 0x0A:
            raise MultistreamError("message does not end with a newline")
        body = bytes(buf[start:end - 1])
        del buf[:end]
        return body

    @property
    def buffered(self) -> int:
        """Bytes received and not yet handed out as a message."""
        return len(self._buf)

    def take_rest(self) -> bytes:
        """Hand over (and forget) everything buffered after the last message read."""
        rest = bytes(self._buf)
        self._buf = bytearray()
        return rest


def _describe(body: bytes) -> str:
    return repr(body[:64].decode("utf-8", "replace"))


class _Negotiator:
    """What dialer and listener share: a reader, an output queue, a done flag."""

    def __init__(self) -> None:
        self._reader = _MessageReader()
        self._out = bytearray()
        self._header_seen = False
        self._finished = False

    def data_to_send(self) -> bytes:
        """Return (and dequeue) every byte queued for the peer; ``b""`` when none."""
        if not self._out:
            return b""
        out = bytes(self._out)
        self._out.clear()
        return out

    @property
    def finished(self) -> bool:
        """True once negotiation ended (agreed, failed, or broken by the peer)."""
        return self._finished

    @property
    def buffered(self) -> int:
        """Received bytes held until they form a complete message (or are processed)."""
        return self._reader.buffered

    def _start_receive(self, data: bytes | bytearray | memoryview) -> None:
        if self._finished:
            raise RuntimeError("negotiation is already over")
        self._reader.feed(data)

    def _next_message(self) -> bytes | None:
        """Next message after the header (checked here), or ``None`` for more bytes."""
        try:
            while True:
                body = self._reader.next_message()
                if body is None or self._header_seen:
                    return body
                if body != _HEADER:
                    raise MultistreamError(f"expected {PROTOCOL_ID!r}, got {_describe(body)}")
                self._header_seen = True
        except MultistreamError:
            self._finished = True
            raise


class MultistreamDialer(_Negotiator):
    """The proposing side: tries ``protocols`` in order until one is echoed.

    The header and the first proposal are queued at construction, as one batch.
    With ``lazy=True`` (one protocol only) the caller may write protocol data right
    behind them without waiting (0-RTT); it still feeds the listener's bytes in until
    :class:`Agreed` (or :class:`NegotiationFailed`) to strip the header and echo.
    """

    def __init__(self, protocols: Sequence[str], *, lazy: bool = False) -> None:
        super().__init__()
        if isinstance(protocols, str):
            raise TypeError("protocols must be a sequence of str, not a str")
        self.protocols: tuple[str, ...] = tuple(protocols)
        if not self.protocols:
            raise ValueError("at least one protocol is needed")
        if lazy and len(self.protocols) != 1:
            raise ValueError("a lazy dialer proposes exactly one protocol")
        self.lazy = lazy
        self._encoded = [_check_protocol_id(p) for p in self.protocols]
        self._index = 0
        self._out += encode_message(_HEADER)
        self._out += encode_message(self._encoded[0])

    @property
    def proposing(self) -> str:
        """The protocol currently proposed (awaiting an echo or ``na``)."""
        return self.protocols[self._index]

    def receive_data(self, data: bytes | bytearray | memoryview) -> Agreed | None:
        """Feed the listener's bytes; return :class:`Agreed` once it echoes a proposal.

        Raises :class:`NegotiationFailed` when the last proposal gets ``na`` and
        :class:`MultistreamError` on anything malformed or unexpected.
        """
        self._start_receive(data)
        while True:
            body = self._next_message()
            if body is None:
                return None
            if body == self._encoded[self._index]:
                self._finished = True
                return Agreed(self.protocols[self._index], self._reader.take_rest())
            if body != _NA:
                self._finished = True
                raise MultistreamError(
                    f"proposed {self.proposing!r}, peer answered {_describe(body)}")
            self._index += 1
            if self._index == len(self.protocols):
                self._finished = True
                raise NegotiationFailed(self.protocols)
            self._out += encode_message(self._encoded[self._index])


class MultistreamListener(_Negotiator):
    """The answering side: echoes the first proposal ``is_supported`` accepts.

    The header is queued at construction (some dialers wait for it before they
    propose). Unknown proposals get ``na``; ``ls`` is answered with
    ``list_protocols()`` (an empty list when it is ``None``). ``is_supported`` is
    called for every proposal, so protocols can be (de)registered at any time.

    ``max_output`` bounds the answers one :meth:`receive_data` call queues: once that
    many bytes wait in :meth:`data_to_send`, the remaining messages stay buffered and
    :attr:`awaiting_drain` is True; drain the output, then call ``receive_data(b"")``
    to go on. A peer flooding ``ls`` then cannot make one call produce unbounded
    output.
    """

    def __init__(self, is_supported: Callable[[str], bool], *,
                 list_protocols: Callable[[], Sequence[str]] | None = None,
                 max_output: int | None = None) -> None:
        super().__init__()
        self._is_supported = is_supported
        self._list_protocols = list_protocols
        self._max_output = max_output
        self._awaiting_drain = False
        self._out += encode_message(_HEADER)

    @property
    def awaiting_drain(self) -> bool:
        """True when the last :meth:`receive_data` stopped at ``max_output``."""
        return self._awaiting_drain

    def receive_data(self, data: bytes | bytearray | memoryview) -> Agreed | None:
        """Feed the dialer's bytes; return :class:`Agreed` once a proposal is accepted.

        Raises :class:`MultistreamError` on a wrong header or a malformed message.
        """
        self._start_receive(data)
        self._awaiting_drain = False
        while True:
            if self._max_output is not None and len(self._out) >= self._max_output:
                self._awaiting_drain = True
                return None
            body = self._next_message()
            if body is None:
                return None
            if body == _LS:
                self._out += self._ls_answer()
                continue
            protocol = self._accept(body)
            if protocol is None:
                self._out += encode_message(_NA)
                continue
            self._out += encode_message(body)
            self._finished = True
            return Agreed(protocol, self._reader.take_rest())

    def _accept(self, body: bytes) -> str | None:
        """The proposal as a str if we take it; ``None`` means answer ``na``."""
        if len(body) > MAX_PROTOCOL_ID_LENGTH or body in (_NA, _HEADER):
            return None
        try:
            protocol = body.decode("utf-8")
        except UnicodeDecodeError:
            return None  # not a valid id, so certainly not one of ours
        return protocol if self._is_supported(protocol) else None

    def _ls_answer(self) -> bytes:
        if self._list_protocols is None:
            return _encoded_ls_answer(())
        return _encoded_ls_answer(tuple(self._list_protocols()))


@lru_cache(maxsize=16)
def _encoded_ls_answer(protocols: tuple[str, ...]) -> bytes:
    """The ``ls`` answer for ``protocols``, leaving out ids we could never send.

    Cached: a peer may ask ``ls`` thousands of times on one stream, and a node's
    protocols rarely change.
    """
    listable = []
    for proto in protocols:
        raw = proto.encode("utf-8")
        if raw and b"\n" not in raw and len(raw) <= MAX_PROTOCOL_ID_LENGTH:
            listable.append(proto)
    return encode_ls_response(listable)
