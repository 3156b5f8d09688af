"""Exceptions shared by every layer.

Engines (layer 3) raise or report subclasses of :class:`ProtocolError` when a peer
breaks a wire rule; the node turns those into closed connections and log lines.
"""


class ProtocolError(Exception):
    """A peer sent bytes that break the rules of a wire protocol."""


class DecodeError(ProtocolError, ValueError):
    """Bytes could not be decoded (bad varint, malformed protobuf, oversized field...)."""


class AlreadyRegistered(Exception):
    """``Control.accept`` was called for a protocol that is already being accepted."""

    def __init__(self, protocol: str) -> None:
        """``protocol``: the protocol id that is taken (kept as :attr:`protocol`)."""
        super().__init__(f"protocol {protocol} is already registered")
        self.protocol = protocol


class OpenStreamError(ConnectionError):
    """``Control.open_stream`` failed. The message says why; ``__cause__`` is the OSError.

    A ``ConnectionError`` (so an ``OSError``), as a failed ``socket.connect`` would be.

    ``kind`` is a short machine-readable reason: ``"no-address"``, ``"dial"``,
    ``"handshake"``, ``"wrong-peer"``, ``"timeout"``, ``"connection-lost"``,
    ``"refused"`` (a stream limit), ``"unsupported-protocol"``, ``"closed"`` or ``"io"``.
    """

    def __init__(self, message: str, kind: str = "io") -> None:
        """``message`` says what failed; ``kind`` is one of the reasons listed above."""
        super().__init__(message)
        self.kind = kind


class UnsupportedProtocol(OpenStreamError):
    """The remote peer answered ``na``: it does not accept streams of ``protocol``."""

    def __init__(self, protocol: str, peer: object = None) -> None:
        """``protocol``: the refused protocol id; ``peer`` (optional) names the refuser."""
        where = f" by {peer}" if peer is not None else ""
        super().__init__(f"protocol {protocol} is not supported{where}", "unsupported-protocol")
        self.protocol = protocol


class DialError(ConnectionError):
    """A connection could not be established (refused, unreachable, handshake failed)."""


class PeerMismatchError(DialError):
    """The remote proved a different peer id than the one we dialed."""


class IncompleteReadError(EOFError):
    """The stream ended before ``read_exactly`` got its bytes; ``partial`` holds what came."""

    def __init__(self, partial: bytes, expected: int) -> None:
        """``partial``: the bytes that came before the end; ``expected``: the count asked."""
        super().__init__(f"stream ended after {len(partial)} of {expected} bytes")
        self.partial = partial
        self.expected = expected
