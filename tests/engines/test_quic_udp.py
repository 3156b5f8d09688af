"""The QUIC datagram path outside memory: a client engine and a server endpoint on two
real loopback UDP sockets, driven by a select loop here; 4 MiB each way on one stream."""

from __future__ import annotations

import hashlib
import os
import select
import socket
import time

import pytest

pytest.importorskip("aioquic")

from libp2p_stream_sync.engines.muxer_events import (  # noqa: E402
    DataReceived, StreamEnded, StreamOpened,
)
from libp2p_stream_sync.engines.quic import QuicMuxer  # noqa: E402
from libp2p_stream_sync.engines.quic_endpoint import QuicEndpoint  # noqa: E402
from libp2p_stream_sync.identity import Keypair  # noqa: E402

SIZE = 4 * 1024 * 1024
CHUNK = 64 * 1024


def _udp() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    return sock


class Side:
    """One end of the transfer: writes ``outgoing`` on the stream, collects ``incoming``."""

    def __init__(self, engine: QuicMuxer | None) -> None:
        self.engine = engine
        self.sid: int | None = None
        self.outgoing = os.urandom(SIZE)
        self.offset = 0
        self.incoming = bytearray()
        self.ended = False
        self.closed = False

    def pump(self) -> None:
        """Write what the send window takes; FIN once everything is queued."""
        if self.engine is None or self.sid is None or self.closed:
            return
        while self.offset < SIZE:
            n = self.engine.send_data(self.sid, self.outgoing[self.offset:self.offset + CHUNK])
            if not n:
                return
            self.offset += n
        self.engine.close_stream(self.sid)
        self.closed = True

    def on_events(self, events: list) -> None:
        for event in events:
            if isinstance(event, StreamOpened):
                self.sid = event.stream_id
            elif isinstance(event, DataReceived):
                self.incoming += event.data
                self.engine.consumed(event.stream_id, len(event.data))
            elif isinstance(event, StreamEnded):
                self.ended = True


def test_4_mib_each_way_over_loopback_udp():
    client_sock, server_sock = _udp(), _udp()
    server_addr = server_sock.getsockname()
    endpoint = QuicEndpoint(Keypair.generate())
    server_key = endpoint.keypair
    client = Side(QuicMuxer.client(Keypair.generate(), server_addr, time.monotonic(),
                                   expected_peer=server_key.peer_id))
    server = Side(None)
    wall, cpu = time.perf_counter(), time.process_time()
    deadline = time.monotonic() + 60
    try:
        while not (client.ended and server.ended):
            now = time.monotonic()
            assert now < deadline, f"stalled: {len(client.incoming)} / {len(server.incoming)}"
            if client.engine.is_verified and client.sid is None:
                client.sid = client.engine.open_stream()
            client.pump()
            server.pump()
            for data, addr in client.engine.datagrams_to_send(now):
                client_sock.sendto(data, addr)
            for data, addr in endpoint.datagrams_to_send(now):
                server_sock.sendto(data, addr)
            timers = [t for t in (client.engine.get_timer(), endpoint.get_timer()) if t]
            wait = max(0.0, min([0.05] + [t - now for t in timers]))
            readable, _, _ = select.select([client_sock, server_sock], [], [], wait)
            now = time.monotonic()
            for sock in readable:
                for _ in range(64):
                    try:
                        data, addr = sock.recvfrom(65536)
                    except BlockingIOError:
                        break
                    if sock is client_sock:
                        client.on_events(client.engine.receive_datagram(data, addr, now))
                    else:
                        for conn, events in endpoint.receive_datagram(data, addr, now):
                            server.engine = conn
                            server.on_events(events)
            client.on_events(client.engine.handle_timer(now))
            for _conn, events in endpoint.handle_timer(now):
                server.on_events(events)
    finally:
        client_sock.close()
        server_sock.close()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    assert hashlib.sha256(server.incoming).digest() == hashlib.sha256(client.outgoing).digest()
    assert hashlib.sha256(client.incoming).digest() == hashlib.sha256(server.outgoing).digest()
    mib = 2 * SIZE / 2 ** 20
    print(f"\nQUIC over loopback UDP: {mib / wall:.1f} MiB/s (both directions together), "
          f"{cpu / mib * 1e3:.0f} ms CPU per MiB (both sides)")
