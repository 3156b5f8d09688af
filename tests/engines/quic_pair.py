"""In-memory plumbing for the QUIC engine tests: two engines, a fake clock, no sockets."""

from __future__ import annotations

from typing import Callable

from libp2p_stream_sync.engines.quic import QuicMuxer
from libp2p_stream_sync.engines.quic_endpoint import QuicEndpoint
from libp2p_stream_sync.identity import Keypair

CLIENT_ADDR = ("127.0.0.1", 40001)
SERVER_ADDR = ("127.0.0.1", 40002)


class Pair:
    """A client engine and a server endpoint joined by an in-memory "network".

    ``drop`` may filter datagrams: ``drop(data, to_server) -> True`` loses one.
    Events from each side collect in ``client_events`` / ``server_events``.
    """

    def __init__(self, client_key: Keypair | None = None, server_key: Keypair | None = None,
                 *, now: float = 0.0, client_kwargs: dict | None = None,
                 server_kwargs: dict | None = None, endpoint_kwargs: dict | None = None,
                 expected_peer="server", drop: Callable[[bytes, bool], bool] | None = None,
                 client: object | None = None) -> None:
        self.now = now
        self.client_key = client_key or Keypair.generate()
        self.server_key = server_key or Keypair.generate()
        expected = self.server_key.peer_id if expected_peer == "server" else expected_peer
        self.endpoint = QuicEndpoint(self.server_key, connection_kwargs=server_kwargs or {},
                                     **(endpoint_kwargs or {}))
        self.client = client or QuicMuxer.client(
            self.client_key, SERVER_ADDR, now, expected_peer=expected,
            **(client_kwargs or {}))
        self.drop = drop
        self.client_events: list = []
        self.server_events: list = []
        self.wire_bytes = 0
        self._server: QuicMuxer | None = None

    @property
    def server(self) -> QuicMuxer:
        """The connection the endpoint accepted for this client."""
        assert self._server is not None, "no connection accepted yet"
        return self._server

    def step(self) -> bool:
        """Move every pending datagram once; True if any moved."""
        moved = False
        for data, _addr in self.client.datagrams_to_send(self.now):
            moved = True
            self.wire_bytes += len(data)
            if not (self.drop and self.drop(data, True)):
                for conn, events in self.endpoint.receive_datagram(data, CLIENT_ADDR,
                                                                   self.now):
                    self._server = self._server or conn
                    self.server_events += events
        for data, _addr in self.endpoint.datagrams_to_send(self.now):
            moved = True
            self.wire_bytes += len(data)
            if not (self.drop and self.drop(data, False)):
                self.client_events += self.client.receive_datagram(data, SERVER_ADDR,
                                                                   self.now)
        return moved

    def run(self, max_steps: int = 100_000, until: Callable[[], bool] | None = None,
            tick: float = 1e-5) -> None:
        """Shuttle datagrams, the fake clock moving ``tick`` per step (pacing and loss
        timers need time to pass); without ``until``, stop once quiet and no timer is
        due within 10 ms."""
        for _ in range(max_steps):
            if until is not None and until():
                return
            moved = self.step()
            self.now += tick
            self.fire_timers()
            if not moved and until is None and not self._timer_due(self.now + 0.01):
                return
            if not moved and until is not None and not self._timer_due(self.now + tick):
                self.advance_to_next_timer()

    def _timer_due(self, by: float) -> bool:
        timers = [t for t in (self.client.get_timer(), self.endpoint.get_timer())
                  if t is not None]
        return bool(timers) and min(timers) <= by

    def advance_to_next_timer(self, limit: float = 1.0) -> None:
        """Jump the fake clock to the earliest timer (at most ``limit`` s) and fire."""
        timers = [t for t in (self.client.get_timer(), self.endpoint.get_timer())
                  if t is not None]
        self.now = max(self.now, min(min(timers, default=self.now + limit), self.now + limit))
        self.fire_timers()

    def fire_timers(self) -> None:
        """Run both sides' due timers at the current fake time."""
        t = self.client.get_timer()
        if t is not None and t <= self.now:
            self.client_events += self.client.handle_timer(self.now)
        for _conn, events in self.endpoint.handle_timer(self.now):
            self.server_events += events

    def handshake(self) -> None:
        """Run until both sides verified (or one gave up)."""
        self.run(until=lambda: self.client.is_terminated or (
            self.client.is_verified and self._server is not None
            and self.server.is_verified) or (not self.endpoint.connections
                                             and self.now > 5))
