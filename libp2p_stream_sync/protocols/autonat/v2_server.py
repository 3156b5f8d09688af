"""The AutoNAT v2 server: dial exactly one of the requested addresses back and prove
it with the request's nonce on a ``dial-back`` stream.

It picks the first address it is willing and able to dial (``targets.dialable``: TCP
or ``/ws`` we have, an IP we have a route to, not relayed, naming no other peer) on a
public IP (``IpScope``). When that IP is not the one the requester comes from, the
requester first pays :data:`DIAL_DATA_MIN` to :data:`DIAL_DATA_MAX` bytes (the spec's
amplification-attack prevention). It dials on a **new** connection, within
``Limits.autonat_dial_timeout``, and shares the v1 server's rate limits
(``Limits.max_autonat_dialbacks*``: one budget of dial-backs), charged once the dial
is sure to happen: a request refused, or whose data is not paid, costs nothing.
"""

from __future__ import annotations

import ipaddress
import logging
import random
import time
from typing import TYPE_CHECKING, Any, Protocol

from multiaddr import Multiaddr

from ...errors import DecodeError
from ...identity import PeerId
from ...ipscope import IpScope, ip_of
from .server import IP, REQUEST_TIMEOUT, RESPONSE_TIMEOUT, RateLimiter, ServerHost, \
    observed_ip
from .streams import read_message
from .targets import close_late_dial, dialable
from .v2_messages import (DIAL_BACK_PROTOCOL, MAX_MESSAGE_SIZE, DialDataResponse,
                          DialRequest, DialStatus, ResponseStatus, decode_dial_back_response,
                          decode_message, encode_dial_back, encode_dial_data_request,
                          encode_dial_response)

if TYPE_CHECKING:
    from ...connection import Connection
    from ...stream import Stream

log = logging.getLogger(__name__)

#: Bytes a requester pays before we dial an IP it does not come from (the spec: 30k
#: to 100k; we pick at random in between, as go-libp2p does).
DIAL_DATA_MIN = 30_000
DIAL_DATA_MAX = 100_000
#: Seconds the requester has to send that data.
DIAL_DATA_TIMEOUT = 15.0
#: Addresses of one request we look at, at most (the first we accept is dialed).
MAX_REQUEST_ADDRS = 64


class V2Host(ServerHost, Protocol):
    """What the v2 server needs beyond the v1 server's: opening the dial-back stream."""

    def open_on(self, conn: "Connection", protocol: Any, deadline: float,
                lazy: bool = False) -> "Stream": ...


class AutoNATv2Server:
    """Serves ``/libp2p/autonat/2/dial-request`` for one node (module docstring)."""

    def __init__(self, host: V2Host, scope: IpScope, rate: RateLimiter) -> None:
        self._host = host
        self.scope = scope
        self.rate = rate
        self.dial_timeout: float = host.limits.autonat_dial_timeout

    def on_stream(self, conn: "Connection", stream: "Stream") -> None:
        """Reactor: note where the requester comes from (the socket is the reactor's)
        and hand the request to the handler pool (reset when it is full)."""
        if self._host.run_in_worker(self.serve, conn.remote_peer_id, observed_ip(conn),
                                    stream, peer=stream.peer_id) is None:
            stream.reset()

    def serve(self, peer: PeerId, observed: "IP | None", stream: "Stream") -> None:
        """Worker: one request of ``peer``, seen at ``observed`` (None: relayed). A
        stream that breaks the protocol (unframeable, wrong message, data not paid in
        time) is reset; everything else is answered."""
        try:
            answer = self._answer(peer, observed, stream)
        except (OSError, DecodeError) as exc:
            log.info("AutoNAT v2 request from %s failed: %s", peer, exc)
            stream.reset()
            return
        try:
            stream.settimeout(RESPONSE_TIMEOUT)
            stream.write(encode_dial_response(*answer))
            stream.close()
        except OSError as exc:
            log.debug("AutoNAT v2 response to %s lost: %s", peer, exc)
            stream.reset()

    def _answer(self, peer: PeerId, observed: "IP | None", stream: "Stream"
                ) -> tuple[ResponseStatus, int, DialStatus]:
        request = decode_message(read_message(stream, time.monotonic() + REQUEST_TIMEOUT,
                                              MAX_MESSAGE_SIZE))
        if not isinstance(request, DialRequest):
            raise DecodeError("expected a DialRequest")
        if observed is None:
            return ResponseStatus.E_REQUEST_REJECTED, 0, DialStatus.UNUSED
        chosen = self.choose(request.addrs, peer)
        if chosen is None:
            return ResponseStatus.E_DIAL_REFUSED, 0, DialStatus.UNUSED
        index, target = chosen
        if not self.rate.allows(peer):  # before asking for data that would be wasted
            return ResponseStatus.E_REQUEST_REJECTED, 0, DialStatus.UNUSED
        if ipaddress.ip_address(ip_of(target) or "") != observed:
            self._collect_dial_data(stream, index)
        if not self.rate.admit(peer):  # others used the budget while this one paid
            return ResponseStatus.E_REQUEST_REJECTED, 0, DialStatus.UNUSED
        return ResponseStatus.OK, index, self._dial_back(peer, target, request.nonce)

    def choose(self, raw_addrs: list[bytes], peer: PeerId) -> tuple[int, Multiaddr] | None:
        """The first requested address we are willing and able to dial (module
        docstring), with its index; ``/p2p/`` stripped."""
        for index, raw in enumerate(raw_addrs[:MAX_REQUEST_ADDRS]):
            ma = dialable(raw, peer, self._host.transports)
            if ma is not None and self.scope.is_public(ip_of(ma) or ""):
                return index, ma
        return None

    def _collect_dial_data(self, stream: "Stream", index: int) -> None:
        """Ask for, and read, the bytes that pay for dialing another IP; DecodeError
        or the stream's OSError (TimeoutError included) when they do not come."""
        wanted = random.randint(DIAL_DATA_MIN, DIAL_DATA_MAX)
        stream.settimeout(RESPONSE_TIMEOUT)
        stream.write(encode_dial_data_request(index, wanted))
        deadline = time.monotonic() + DIAL_DATA_TIMEOUT
        received = 0
        while received < wanted:
            message = decode_message(read_message(stream, deadline, MAX_MESSAGE_SIZE))
            if not isinstance(message, DialDataResponse):
                raise DecodeError("expected DialDataResponse messages")
            received += len(message.data)

    def _dial_back(self, peer: PeerId, target: Multiaddr, nonce: int) -> DialStatus:
        deadline = time.monotonic() + self.dial_timeout
        before = self._host.connections(peer)
        try:
            conn = self._host.dial_new_connection(f"{target}/p2p/{peer}", self.dial_timeout)
        except (OSError, ValueError, ImportError) as exc:
            log.debug("AutoNAT v2 dial back to %s failed: %s", target, exc)
            if isinstance(exc, TimeoutError):
                close_late_dial(self._host, peer, target, before)
            return DialStatus.E_DIAL_ERROR
        try:
            stream = self._host.open_on(conn, DIAL_BACK_PROTOCOL, deadline)
            try:
                stream.settimeout(max(0.001, deadline - time.monotonic()))
                stream.write(encode_dial_back(nonce))
                status = decode_dial_back_response(read_message(stream, deadline, 64))
                stream.close()
            except BaseException:
                stream.reset()
                raise
            return DialStatus.OK if status == 0 else DialStatus.E_DIAL_BACK_ERROR
        except (OSError, DecodeError) as exc:
            log.debug("AutoNAT v2 dial-back stream to %s failed: %s", target, exc)
            return DialStatus.E_DIAL_BACK_ERROR
        finally:
            self._host.reactor.call_soon(conn.close)
