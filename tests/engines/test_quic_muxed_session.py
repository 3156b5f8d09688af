"""``MuxedSession`` needs no byte channel: two sessions over a pair of QUIC engines.

Each side is a :class:`~libp2p_stream_sync.muxed.MuxedSession` over a
``QuicMuxer`` (client) or the connection a ``QuicEndpoint`` accepted (server), with a
minimal owner and link and a single-threaded fake reactor; the test shuttles the
datagrams in memory. It opens streams, negotiates a protocol (and is refused one),
echoes bytes, half-closes both ways and resets.
"""

from __future__ import annotations

import time
from concurrent.futures import Future
from typing import Any, Callable

import pytest

pytest.importorskip("aioquic")  # the optional extra; tests/engines/test_quic_extra.py

from libp2p_stream_sync.engines.quic import QuicMuxer  # noqa: E402
from libp2p_stream_sync.engines.quic_endpoint import QuicEndpoint  # noqa: E402
from libp2p_stream_sync.errors import UnsupportedProtocol  # noqa: E402
from libp2p_stream_sync.identity import Keypair  # noqa: E402
from libp2p_stream_sync.limits import Limits  # noqa: E402
from libp2p_stream_sync.muxed import MuxedSession  # noqa: E402

CLIENT_ADDR = ("127.0.0.1", 40001)
SERVER_ADDR = ("127.0.0.1", 40002)
ECHO = "/echo/1.0.0"


class _Timer:
    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeReactor:
    """call_soon / mark_dirty run when the test pumps; timers never fire (the test
    drives the QUIC engines' own timers)."""

    def __init__(self) -> None:
        self.calls: list[tuple[Callable, tuple]] = []
        self.dirty: list[Any] = []

    def call_soon(self, fn: Callable, *args: Any) -> None:
        self.calls.append((fn, args))

    def call_now_or_soon(self, fn: Callable, *args: Any) -> None:
        self.call_soon(fn, *args)  # the test's pump is the only "reactor turn"

    def call_later(self, delay: float, fn: Callable[[], Any]) -> _Timer:
        return _Timer()

    def mark_dirty(self, obj: Any) -> None:
        if obj not in self.dirty:
            self.dirty.append(obj)

    def run(self) -> bool:
        """Run the queued calls and flushes; True if there were any."""
        busy = False
        while self.calls or self.dirty:
            busy = True
            calls, self.calls = self.calls, []
            for fn, args in calls:
                fn(*args)
            dirty, self.dirty = self.dirty, []
            for obj in dirty:
                obj.flush()
        return busy


class Owner:
    """The ConnectionOwner calls a session makes, recorded."""

    limits = Limits()
    buffer_budget = None

    def __init__(self, reactor: FakeReactor, protocols: list[str]) -> None:
        self._reactor = reactor
        self.protocols = protocols
        self.inbound: list[Any] = []
        self.finished: list[Any] = []
        self.admitted = 0

    @property
    def reactor(self) -> FakeReactor:
        return self._reactor

    def protocol_supported(self, protocol: str) -> bool:
        return protocol in self.protocols

    def supported_protocols(self) -> list[str]:
        return self.protocols

    def admit_inbound_stream(self, peer: Any) -> bool:
        self.admitted += 1
        return True

    def inbound_stream_gone(self, peer: Any) -> None:
        self.admitted -= 1

    def inbound_stream(self, conn: Any, stream: Any) -> bool:
        self.inbound.append(stream)
        return True

    def inbound_stream_finished(self, stream: Any) -> None:
        self.finished.append(stream)


class Link:
    """interfaces.SessionLink for a QUIC engine: its output leaves as datagrams,
    which the test moves; nothing to pause."""

    output_paused = False
    bytes_sent = 0

    def __init__(self) -> None:
        self.session: MuxedSession | None = None
        self.ended: OSError | None = None

    def has_output_room(self) -> bool:
        return True

    def take_muxer_output(self) -> int:
        return self.bytes_sent

    def interest_changed(self) -> None:
        pass

    def peer_hung_up(self) -> bool:
        return False

    def input_failed(self, exc: Exception) -> None:
        raise exc

    def session_ended(self, error: OSError, cause: BaseException | None) -> None:
        self.ended = error

    def close(self) -> None:
        raise AssertionError("no idle close expected")

    def flush(self) -> None:
        assert self.session is not None
        self.session.pull()


class Side:
    def __init__(self, muxer: Any, protocols: list[str]) -> None:
        self.muxer = muxer
        self.reactor = FakeReactor()
        self.owner = Owner(self.reactor, protocols)
        self.link = Link()
        self.session: MuxedSession | None = None
        self.early: list = []  # events before the peer is verified

    def feed(self, events: list) -> None:
        if self.session is None:
            self.early += events
            if not self.muxer.is_verified:
                return
            self.session = MuxedSession("conn", self.owner, self.muxer, self.link,
                                        self.muxer.remote_peer_id)
            self.link.session = self.session
            events, self.early = self.early, []
        self.session.muxer_input(events)
        self.reactor.mark_dirty(self.link)


class QuicSessions:
    """A client and a server side; :meth:`pump` moves everything until quiet."""

    def __init__(self) -> None:
        server_key, client_key = Keypair.generate(), Keypair.generate()
        self.endpoint = QuicEndpoint(server_key)
        now = time.monotonic()
        self.client = Side(QuicMuxer.client(client_key, SERVER_ADDR, now,
                                            expected_peer=server_key.peer_id), [])
        self.server: Side | None = None
        self.pump(until=lambda: self.client.session is not None
                  and self.server is not None and self.server.session is not None)

    def sides(self) -> list[Side]:
        return [self.client] + ([self.server] if self.server else [])

    def step(self) -> bool:
        moved = False
        for side in self.sides():
            if side.session is not None:
                moved |= side.reactor.run()
        now = time.monotonic()
        for data, _ in self.client.muxer.datagrams_to_send(now):
            moved = True
            for conn, events in self.endpoint.receive_datagram(data, CLIENT_ADDR, now):
                if self.server is None:
                    self.server = Side(conn, [ECHO])
                self.server.feed(events)
        for data, _ in self.endpoint.datagrams_to_send(now):
            moved = True
            self.client.feed(self.client.muxer.receive_datagram(data, SERVER_ADDR, now))
        for side in self.sides():
            timer = side.muxer.get_timer()
            if timer is not None and timer <= now:
                side.feed(side.muxer.handle_timer(now))
        return moved

    def pump(self, until: Callable[[], bool] | None = None, limit: float = 5.0) -> None:
        deadline = time.monotonic() + limit
        quiet = 0
        while time.monotonic() < deadline:
            if until is not None and until():
                return
            quiet = 0 if self.step() else quiet + 1
            if until is None and quiet >= 3:
                return
        assert until is None, "pump: condition not reached"

    def open(self, protocol: str) -> Future:
        future: Future = Future()
        assert self.client.session is not None
        self.client.session.open(protocol, future)
        self.pump(until=future.done)
        return future


def at_eof(stream: Any) -> bool:
    """The stream (timeout 0, nothing unread) has seen the remote's FIN."""
    try:
        return stream.read() == b""
    except BlockingIOError:
        return False


def test_two_sessions_over_quic_open_negotiate_echo_half_close_and_reset():
    net = QuicSessions()
    client, server = net.client, net.server
    assert server is not None and client.session is not None

    # A protocol the server does not speak is refused with UnsupportedProtocol.
    refused = net.open("/nope/1.0.0")
    assert isinstance(refused.exception(0), UnsupportedProtocol)

    # Negotiate /echo, echo bytes both ways.
    stream = net.open(ECHO).result(0)
    assert stream.protocol == ECHO and stream.peer_id == client.muxer.remote_peer_id
    stream.settimeout(0)
    stream.write(b"hello over quic")
    net.pump(until=lambda: bool(server.owner.inbound)
             and server.owner.inbound[0].unread_bytes >= 15)
    peer = server.owner.inbound[0]
    peer.settimeout(0)
    assert peer.protocol == ECHO
    assert peer.read() == b"hello over quic"
    peer.write(b"HELLO OVER QUIC")
    net.pump(until=lambda: stream.unread_bytes >= 15)
    assert stream.read() == b"HELLO OVER QUIC"

    # Half-close: our FIN reaches the server, which still answers, then ends too.
    stream.close_write()
    net.pump(until=lambda: at_eof(peer))
    peer.write(b"last words")
    peer.close_write()
    net.pump(until=lambda: stream.unread_bytes >= 10)
    assert stream.read() == b"last words"
    net.pump(until=lambda: at_eof(stream))
    net.pump()
    assert client.session.stream_counts()["streams"] == 0  # retired both ways
    assert server.session.stream_counts()["streams"] == 0
    assert server.owner.finished == [peer] and server.owner.admitted == 0

    # Reset: the server's read fails with ConnectionResetError.
    doomed = net.open(ECHO).result(0)
    doomed.settimeout(0)
    doomed.write(b"x")
    net.pump(until=lambda: len(server.owner.inbound) == 2)
    victim = server.owner.inbound[1]
    victim.settimeout(0)
    doomed.reset()
    net.pump()
    with pytest.raises(ConnectionResetError):
        victim.read()
    assert server.session.stream_counts() == {"streams": 0, "negotiating": 0}
    assert client.link.ended is None and server.link.ended is None
