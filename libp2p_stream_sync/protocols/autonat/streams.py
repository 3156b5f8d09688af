"""Blocking reads of one length-prefixed AutoNAT message from a stream."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from .messages import MAX_MESSAGE_SIZE, AutoNATMessageError, frame_header

if TYPE_CHECKING:
    from ...stream import Stream


def read_message(stream: "Stream", deadline: float,
                 max_size: int = MAX_MESSAGE_SIZE) -> bytes:
    """Read one message body of at most ``max_size`` bytes before ``deadline``
    (``time.monotonic()``), never a byte past it.

    Raises ``TimeoutError``, :class:`AutoNATMessageError` (oversized, malformed, or
    the stream ended first) or the stream's ``OSError``.
    """
    buffer = bytearray()
    while True:
        header = frame_header(buffer, max_size)
        if header is not None and len(buffer) >= sum(header):
            return bytes(buffer[header[0]:])
        want = 1 if header is None else sum(header) - len(buffer)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no complete AutoNAT message in time")
        stream.settimeout(remaining)
        chunk = stream.read(want)
        if not chunk:
            raise AutoNATMessageError("the stream ended before the AutoNAT message did")
        buffer += chunk
