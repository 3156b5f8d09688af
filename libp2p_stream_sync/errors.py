"""Exceptions shared by every layer.

Engines (layer 3) raise or report subclasses of :class:`ProtocolError` when a peer
breaks a wire rule; the node turns those into closed connections and log lines.
"""


class ProtocolError(Exception):
    """A peer sent bytes that break the rules of a wire protocol."""


class DecodeError(ProtocolError, ValueError):
    """Bytes could not be decoded (bad varint, malformed protobuf, oversized field...)."""
