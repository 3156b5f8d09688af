"""perf (``/perf/1.0.0``): measure throughput (libp2p specs, ``perf/perf.md``).

The client writes the number of bytes it wants back as an 8-byte big-endian unsigned
integer, then uploads its bytes and closes its write side. The server reads the size,
discards the upload until end of stream, sends the requested bytes and closes.

Both sides move data in 1 MiB pieces of one reused buffer: writes hand the muxer an
immutable ``bytes`` chunk (no copy), reads fill a reused ``bytearray``.
"""

from __future__ import annotations

import logging
import struct
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from ..errors import ProtocolError
from ..timeouts import step_timeout

if TYPE_CHECKING:
    from ..stream import Stream

log = logging.getLogger(__name__)

PROTOCOL = "/perf/1.0.0"
CHUNK_SIZE = 1024 * 1024
#: A server stream that makes no progress for this long is reset.
IDLE_TIMEOUT = 60.0
_SIZE = struct.Struct(">Q")
_ZEROS = bytes(CHUNK_SIZE)

#: ``progress(uploaded, downloaded)`` callbacks get byte counts so far.
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class PerfResult:
    """One perf run: bytes each way and the wall-clock seconds it took."""

    upload_bytes: int
    download_bytes: int
    seconds: float


class PerfError(ProtocolError):
    """The server sent a different number of bytes than requested."""


def send_bytes(stream: "Stream", total: int, progress: Callable[[int], None] | None = None
               ) -> None:
    """Write ``total`` bytes to ``stream`` in :data:`CHUNK_SIZE` pieces."""
    left = total
    while left:
        n = min(left, CHUNK_SIZE)
        stream.write(_ZEROS if n == CHUNK_SIZE else _ZEROS[:n])
        left -= n
        if progress is not None:
            progress(total - left)


def drain(stream: "Stream", progress: Callable[[int], None] | None = None) -> int:
    """Read ``stream`` to its end into a reused buffer; return how many bytes came."""
    buffer = bytearray(CHUNK_SIZE)
    total = 0
    while True:
        n = stream.readinto(buffer)
        if not n:
            return total
        total += n
        if progress is not None:
            progress(total)


def serve(stream: "Stream", idle_timeout: float = IDLE_TIMEOUT) -> None:
    """Blocking server side of one perf stream."""
    stream.settimeout(idle_timeout)
    try:
        (download,) = _SIZE.unpack(stream.read_exactly(_SIZE.size))
        drain(stream)
        send_bytes(stream, download)
        stream.close()
    except (EOFError, OSError) as exc:
        log.debug("perf stream from %s ended: %s", stream.peer_id, exc)
        stream.reset()


def run(stream: "Stream", upload_bytes: int, download_bytes: int, deadline: float,
        progress: Progress | None = None) -> PerfResult:
    """Blocking client side: upload, then download; raise on a short download.

    ``deadline`` may be ``inf``: a step without progress then fails after
    ``STALL_TIMEOUT``.
    """
    if upload_bytes < 0 or download_bytes < 0 or download_bytes >= 1 << 64:
        raise ValueError("byte counts must be non-negative (download below 2**64)")
    # The per-call timeout bounds each blocking step; the deadline bounds the run.
    stream.settimeout(step_timeout(deadline, "perf"))
    start = time.monotonic()
    uploaded = [0]

    def on_upload(n: int) -> None:
        uploaded[0] = n
        _tighten_timeout(stream, deadline)
        if progress is not None:
            progress(n, 0)

    def on_download(n: int) -> None:
        _tighten_timeout(stream, deadline)
        if progress is not None:
            progress(uploaded[0], n)

    stream.write(_SIZE.pack(download_bytes))
    send_bytes(stream, upload_bytes, on_upload)
    stream.close_write()
    received = drain(stream, on_download)
    seconds = time.monotonic() - start
    if received != download_bytes:
        raise PerfError(f"asked for {download_bytes} bytes, received {received}")
    return PerfResult(upload_bytes, download_bytes, seconds)


def _tighten_timeout(stream: "Stream", deadline: float) -> None:
    """Let the next blocking call wait only until ``deadline``; raise once it passed."""
    stream.settimeout(step_timeout(deadline, "perf"))
