"""The AutoNAT v2 client: each server tests one of our addresses, and proves its
dial by echoing our nonce on a ``dial-back`` stream.

We send the same candidates as v1 (``client.candidate_addrs``), most wanted first, a
fresh random 64-bit nonce per request, and pay up to :data:`MAX_DIAL_DATA` bytes when
a server asks (it does when the address's IP is not the one it sees us at). An ``OK``
whose nonce never reached us is not believed (``failed``). The verdict rule is v1's
(``client.verdict``), over per-address observations.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Protocol, Sequence

from multiaddr import Multiaddr

from ...errors import DecodeError, UnsupportedProtocol
from .client import FAILED, REACHABLE, REFUSED, UNREACHABLE, ClientHost, Observation
from .streams import read_message
from .v2_messages import (DIAL_BACK_PROTOCOL, DIAL_REQUEST_PROTOCOL, MAX_DATA_CHUNK,
                          MAX_MESSAGE_SIZE, DialDataRequest, DialResponse, DialStatus,
                          ResponseStatus, decode_dial_back, decode_message,
                          encode_dial_back_response, encode_dial_data_response,
                          encode_dial_request)

if TYPE_CHECKING:
    from ...connection import Connection
    from ...control import PeerLike
    from ...stream import Stream

log = logging.getLogger(__name__)

#: Most bytes we pay a server to dial an address on another IP (the spec's ceiling).
MAX_DIAL_DATA = 100_000
#: Seconds a server has to send its DialBack once its stream is open.
DIAL_BACK_TIMEOUT = 5.0
_CHUNK = encode_dial_data_response(bytes(MAX_DATA_CHUNK))


class V2ClientHost(ClientHost, Protocol):
    """What the v2 client needs beyond v1's: serving the dial-back stream."""

    def serve_on_reactor(self, protocol: str, handler: Any) -> None: ...

    def run_in_worker(self, fn: Callable[..., Any], *args: Any,
                      peer: Any = None) -> Any: ...


class AutoNATv2Client:
    """Asks servers to dial our addresses; answers their dial-backs."""

    def __init__(self, host: V2ClientHost) -> None:
        self._host = host
        self._lock = threading.Lock()
        #: Nonces of our requests in flight -> whether their dial-back came.
        self._pending: dict[int, threading.Event] = {}
        self._serving = False

    def ensure_serving(self) -> None:
        """Accept dial-back streams from now on (done on the first request, so that
        nodes that never probe do not advertise the protocol)."""
        with self._lock:
            if self._serving:
                return
            self._serving = True
        self._host.serve_on_reactor(DIAL_BACK_PROTOCOL, self._on_dial_back)

    # -- dial-back side ----------------------------------------------------------------
    def _on_dial_back(self, conn: "Connection", stream: "Stream") -> None:
        if self._host.run_in_worker(self._answer_dial_back, stream,
                                    peer=stream.peer_id) is None:
            stream.reset()

    def _answer_dial_back(self, stream: "Stream") -> None:
        try:
            nonce = decode_dial_back(read_message(stream, time.monotonic()
                                                  + DIAL_BACK_TIMEOUT, 64))
        except (OSError, DecodeError) as exc:
            log.info("bad AutoNAT v2 dial-back from %s: %s", stream.peer_id, exc)
            stream.reset()
            return
        with self._lock:
            seen = self._pending.get(nonce)
        if seen is not None:
            seen.set()
        else:
            log.debug("AutoNAT v2 dial-back from %s with a nonce we did not send",
                      stream.peer_id)
        try:
            stream.settimeout(DIAL_BACK_TIMEOUT)
            stream.write(encode_dial_back_response())
            stream.close()
        except OSError:
            stream.reset()

    # -- request side ------------------------------------------------------------------
    def ask(self, server: "PeerLike", addrs: Sequence[Multiaddr],
            deadline: float) -> Observation:
        """Blocking: one request to ``server``; never raises for the server's faults."""
        self.ensure_serving()
        nonce = secrets.randbits(64)
        seen = threading.Event()
        with self._lock:
            self._pending[nonce] = seen
        try:
            return self._ask(server, addrs, deadline, nonce, seen)
        finally:
            with self._lock:
                self._pending.pop(nonce, None)

    def _ask(self, server: "PeerLike", addrs: Sequence[Multiaddr], deadline: float,
             nonce: int, seen: threading.Event) -> Observation:
        try:
            stream = self._host.new_control().open_stream(
                server, DIAL_REQUEST_PROTOCOL, timeout=max(0.001, deadline - time.monotonic()))
        except UnsupportedProtocol:
            return Observation(server, FAILED, None, "does not serve AutoNAT v2")
        except (OSError, ValueError) as exc:
            return Observation(server, FAILED, None, f"cannot open a stream: {exc}")
        peer: Any = stream.peer_id or server
        try:
            stream.settimeout(max(0.001, deadline - time.monotonic()))
            stream.write(encode_dial_request([ma.to_bytes() for ma in addrs], nonce))
            while True:
                message = decode_message(read_message(stream, deadline, MAX_MESSAGE_SIZE))
                if isinstance(message, DialResponse):
                    break
                if not isinstance(message, DialDataRequest):
                    raise DecodeError(f"unexpected {type(message).__name__}")
                if message.num_bytes > MAX_DIAL_DATA or message.addr_idx >= len(addrs):
                    stream.reset()  # the spec: reject the cost by resetting
                    return Observation(peer, FAILED, None, f"asked {message.num_bytes} "
                                       f"bytes to dial address {message.addr_idx}")
                self._pay(stream, message.num_bytes)
        except (OSError, DecodeError) as exc:
            stream.reset()
            return Observation(peer, FAILED, None, f"no answer: {exc}")
        try:
            stream.close()
        except OSError:
            pass  # the answer is in
        return self._judge(peer, message, addrs, seen)

    @staticmethod
    def _pay(stream: "Stream", num_bytes: int) -> None:
        sent = 0
        while sent < num_bytes:
            stream.write(_CHUNK)
            sent += MAX_DATA_CHUNK

    @staticmethod
    def _judge(peer: Any, response: DialResponse, addrs: Sequence[Multiaddr],
               seen: threading.Event) -> Observation:
        if response.status != ResponseStatus.OK:
            name = getattr(response.status, "name", str(response.status))
            return Observation(peer, REFUSED, None, name)
        if response.addr_idx >= len(addrs):
            return Observation(peer, FAILED, None, f"answered for address "
                               f"{response.addr_idx} of {len(addrs)}")
        addr = addrs[response.addr_idx]
        if response.dial_status == DialStatus.OK:
            # The server answers only once our DialBackResponse reached it: the nonce
            # is in (a short wait covers the worker that recorded it).
            if seen.wait(1.0):
                return Observation(peer, REACHABLE, addr, "")
            return Observation(peer, FAILED, addr, "OK without our nonce: not believed")
        if response.dial_status == DialStatus.E_DIAL_ERROR:
            return Observation(peer, UNREACHABLE, addr, "E_DIAL_ERROR")
        name = getattr(response.dial_status, "name", str(response.dial_status))
        return Observation(peer, FAILED, addr, name)
