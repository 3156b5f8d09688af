"""The AutoNAT v2 client: each server tests one of our addresses, and proves its
dial by echoing our nonce on a ``dial-back`` stream.

We send the same candidates as v1 (``client.candidate_addrs``), most wanted first, a
fresh random 64-bit nonce per request, and pay up to :data:`MAX_DIAL_DATA` bytes in
all per request when a server asks (it does when the address's IP is not the one it
sees us at); a server asking more gets the stream reset. An ``OK`` is believed only
when its nonce reached us on a dial-back connection the server opened to us (never on
one we opened) whose local address is of the kind asked about
(:func:`dial_back_matches`); otherwise it is ``failed``. The verdict rule is v1's
(``client.verdict``), over per-address observations.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Protocol, Sequence

from multiaddr import Multiaddr

from ...errors import DecodeError
from .client import (FAILED, REACHABLE, REFUSED, UNREACHABLE, ClientHost, Observation,
                     open_request)
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
_P2P_NAMES = ("p2p", "ipfs")


def dial_back_matches(local: Multiaddr | None, asked: Multiaddr) -> bool:
    """Whether a dial-back that arrived at our ``local`` address can be the dial of
    ``asked``: the same IP version and the same transport protocols after it (values
    differ behind a NAT, the kinds do not; go-libp2p's ``areAddrsConsistent``)."""
    if local is None:
        return False
    kinds = [[proto.name for proto in ma.protocols() if proto.name not in _P2P_NAMES]
             for ma in (local, asked)]
    return bool(kinds[0]) and kinds[0] == kinds[1] and kinds[0][0] in ("ip4", "ip6")


class _Waiter:
    """A request in flight: its nonce's dial-back has ``arrived`` at ``local``."""

    def __init__(self) -> None:
        self.arrived = threading.Event()
        self.local: Multiaddr | None = None


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
        #: Nonces of our requests in flight -> where their dial-back came, once it has.
        self._pending: dict[int, _Waiter] = {}
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
        """Reactor: a dial-back counts only on a connection the server opened; its
        local address (read here: the socket is the reactor's) goes to the worker."""
        if conn.initiator:
            log.info("AutoNAT v2 dial-back from %s on a connection we opened: reset",
                     stream.peer_id)
            stream.reset()
            return
        # Our end of the channel as a multiaddr of its transport: the transport's
        # sockaddr-to-multiaddr (named for the remote end) serves either end. TCP
        # sockets and WebSocket channels have getsockname; ByteChannel does not say so.
        channel: Any = conn.sock
        try:
            local = conn.transport.remote_multiaddr(channel, channel.getsockname())
        except (OSError, ValueError, AttributeError):
            local = None  # no way to check it: its nonce will not be believed
        if self._host.run_in_worker(self._answer_dial_back, stream, local,
                                    peer=stream.peer_id) is None:
            stream.reset()

    def _answer_dial_back(self, stream: "Stream", local: Multiaddr | None) -> None:
        try:
            nonce = decode_dial_back(read_message(stream, time.monotonic()
                                                  + DIAL_BACK_TIMEOUT, 64))
        except (OSError, DecodeError) as exc:
            log.info("bad AutoNAT v2 dial-back from %s: %s", stream.peer_id, exc)
            stream.reset()
            return
        with self._lock:
            waiter = self._pending.get(nonce)
        if waiter is not None:
            waiter.local = local
            waiter.arrived.set()
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
        waiter = _Waiter()
        with self._lock:
            self._pending[nonce] = waiter
        try:
            return self._ask(server, addrs, deadline, nonce, waiter)
        finally:
            with self._lock:
                self._pending.pop(nonce, None)

    def _ask(self, server: "PeerLike", addrs: Sequence[Multiaddr], deadline: float,
             nonce: int, waiter: _Waiter) -> Observation:
        stream = open_request(self._host, server, DIAL_REQUEST_PROTOCOL, "AutoNAT v2",
                              deadline)
        if isinstance(stream, Observation):
            return stream
        peer: Any = stream.peer_id or server
        paid = 0
        try:
            stream.settimeout(max(0.001, deadline - time.monotonic()))
            stream.write(encode_dial_request([ma.to_bytes() for ma in addrs], nonce))
            while True:
                message = decode_message(read_message(stream, deadline, MAX_MESSAGE_SIZE))
                if isinstance(message, DialResponse):
                    break
                if not isinstance(message, DialDataRequest):
                    raise DecodeError(f"unexpected {type(message).__name__}")
                if paid + message.num_bytes > MAX_DIAL_DATA or \
                        message.addr_idx >= len(addrs):
                    stream.reset()  # the spec: reject the cost by resetting
                    return Observation(peer, FAILED, None, f"asked {message.num_bytes} "
                                       f"bytes (after {paid}) to dial address "
                                       f"{message.addr_idx}")
                self._pay(stream, message.num_bytes)
                paid += message.num_bytes
        except (OSError, DecodeError) as exc:
            stream.reset()
            return Observation(peer, FAILED, None, f"no answer: {exc}")
        try:
            stream.close()
        except OSError:
            pass  # the answer is in
        return self._judge(peer, message, addrs, waiter)

    @staticmethod
    def _pay(stream: "Stream", num_bytes: int) -> None:
        """Send exactly ``num_bytes`` of dial data, in chunks of at most 4 KiB."""
        left = num_bytes
        while left >= MAX_DATA_CHUNK:
            stream.write(_CHUNK)
            left -= MAX_DATA_CHUNK
        if left:
            stream.write(encode_dial_data_response(bytes(left)))

    @staticmethod
    def _judge(peer: Any, response: DialResponse, addrs: Sequence[Multiaddr],
               waiter: _Waiter) -> Observation:
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
            if not waiter.arrived.wait(1.0):
                return Observation(peer, FAILED, addr, "OK without our nonce: not believed")
            if not dial_back_matches(waiter.local, addr):
                return Observation(peer, FAILED, addr, f"OK, but the dial-back came to "
                                   f"{waiter.local}: not believed")
            return Observation(peer, REACHABLE, addr, "")
        if response.dial_status == DialStatus.E_DIAL_ERROR:
            return Observation(peer, UNREACHABLE, addr, "E_DIAL_ERROR")
        name = getattr(response.dial_status, "name", str(response.dial_status))
        return Observation(peer, FAILED, addr, name)
