"""ping (``/ipfs/ping/1.0.0``): echo 32-byte payloads to measure round trips.

Wire format (libp2p specs, ``ping/ping.md``): the dialer writes 32 random bytes, the
listener echoes them back, repeated on the same stream until the dialer closes it.
The spec asks listeners to accept at most two ping streams per peer at a time.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import TYPE_CHECKING

from ..errors import ProtocolError
from ..timeouts import step_timeout

if TYPE_CHECKING:
    from ..identity import PeerId
    from ..stream import Stream

log = logging.getLogger(__name__)

PROTOCOL = "/ipfs/ping/1.0.0"
PAYLOAD_SIZE = 32
#: A responder resets a ping stream that stays silent this long.
IDLE_TIMEOUT = 60.0
#: Concurrent inbound ping streams allowed per peer (spec: "at most two").
MAX_STREAMS_PER_PEER = 2


class PingMismatch(ProtocolError):
    """The peer echoed different bytes than we sent."""


class PingResponder:
    """Serves inbound ping streams, at most :data:`MAX_STREAMS_PER_PEER` per peer."""

    def __init__(self, idle_timeout: float = IDLE_TIMEOUT) -> None:
        self.idle_timeout = idle_timeout
        self._lock = threading.Lock()
        self._active: dict["PeerId", set] = {}

    def admit(self, stream: "Stream") -> bool:
        """Count a new stream; False when its peer already has too many."""
        with self._lock:
            streams = self._active.setdefault(stream.peer_id, set())
            if len(streams) >= MAX_STREAMS_PER_PEER:
                # A stream whose remote already finished is ending: a dialer that
                # pings again right after closing (its FIN came before this SYN)
                # must not be refused while our responder thread catches up.
                streams.difference_update([s for s in streams
                                           if getattr(s, "input_finished", False)])
                if len(streams) >= MAX_STREAMS_PER_PEER:
                    return False
            streams.add(stream)
            return True

    def release(self, stream: "Stream") -> None:
        with self._lock:
            streams = self._active.get(stream.peer_id)
            if streams is not None:
                streams.discard(stream)
                if not streams:
                    del self._active[stream.peer_id]

    def serve(self, stream: "Stream") -> None:
        """Blocking: echo payloads until the remote closes, goes silent or resets."""
        stream.settimeout(self.idle_timeout)
        try:
            while True:
                payload = stream.read_exactly(PAYLOAD_SIZE)
                stream.write(payload)
        except EOFError:  # the dialer is done (IncompleteReadError is an EOFError)
            stream.close()
        except OSError as exc:  # TimeoutError, resets, closed connections
            log.debug("ping stream from %s ended: %s", stream.peer_id, exc)
            stream.reset()
        finally:
            self.release(stream)


def ping_stream(stream: "Stream", count: int, deadline: float) -> list[float]:
    """Blocking: ``count`` round trips on an open ping stream; seconds for each.

    ``deadline`` may be ``inf``: each round trip then fails after ``STALL_TIMEOUT``.
    """
    rtts = []
    for _ in range(count):
        stream.settimeout(step_timeout(deadline, "ping"))
        payload = os.urandom(PAYLOAD_SIZE)
        start = time.perf_counter()
        stream.write(payload)
        echoed = stream.read_exactly(PAYLOAD_SIZE)
        rtts.append(time.perf_counter() - start)
        if echoed != payload:
            raise PingMismatch(f"{stream.peer_id} echoed different ping bytes")
    return rtts
