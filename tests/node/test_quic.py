"""QUIC (``/udp/N/quic-v1``) between real nodes over loopback (issue #15).

Streams, built-in protocols and failures over a QUIC connection, the dialer's
preference for QUIC, a silent peer, and hostile datagrams at a listener.
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time

import pytest

pytest.importorskip("aioquic")  # the optional extra; tests/engines/test_quic_extra.py

from libp2p_stream_sync import (  # noqa: E402
    Keypair, Limits, Node, OpenStreamError, PeerMismatchError, UnsupportedProtocol,
)
from libp2p_stream_sync.engines.quic import QuicMuxer  # noqa: E402
from libp2p_stream_sync.stream import SEND_BUFFER_HIGH_WATER  # noqa: E402

from conftest import EchoServer, wait_until  # noqa: E402

QUIC = "/ip4/127.0.0.1/udp/0/quic-v1"
TCP = "/ip4/127.0.0.1/tcp/0"
ECHO = "/echo/1.0.0"


def quic_addr(node: Node) -> str:
    """``node``'s QUIC listen address with its peer id."""
    ma = next(str(a) for a in node.listen_addrs if "quic-v1" in str(a))
    return f"{ma}/p2p/{node.peer_id}"


@pytest.fixture
def quic_pair(make_node):
    """(client, server, echo) with the client knowing only the server's QUIC address."""
    server = make_node(listen=[TCP, QUIC], enable_perf=True)
    client = make_node(listen=[QUIC])
    echo = EchoServer(server)
    client.add_address(server.peer_id, quic_addr(server).rsplit("/p2p/", 1)[0])
    yield client, server, echo
    echo.close()


def transports(node: Node, peer) -> set[str]:
    return {conn.transport.name for conn in node.connections(peer)}


def test_echo_many_streams_and_a_large_transfer(quic_pair):
    client, server, echo = quic_pair
    control = client.new_control()
    stream = control.open_stream(server.peer_id, ECHO)
    stream.settimeout(10)
    stream.write(b"hello over quic")
    stream.close_write()
    assert stream.readall() == b"hello over quic"
    assert transports(client, server.peer_id) == {"quic-v1"}
    assert transports(server, client.peer_id) == {"quic-v1"}

    streams = [control.open_stream(server.peer_id, ECHO, timeout=10) for _ in range(40)]
    for i, s in enumerate(streams):
        s.settimeout(10)
        s.write(i.to_bytes(4, "big") * 100)
        s.close_write()
    for i, s in enumerate(streams):
        assert s.readall() == i.to_bytes(4, "big") * 100

    big = control.open_stream(server.peer_id, ECHO)
    big.settimeout(20)
    payload = os.urandom(2 << 20)
    writer = threading.Thread(target=lambda: (big.write(payload), big.close_write()))
    writer.start()
    got = big.readall()
    writer.join(10)
    assert hashlib.sha256(got).digest() == hashlib.sha256(payload).digest()
    assert len(client.connections(server.peer_id)) == 1
    assert not echo.errors


def test_half_close_and_reset(quic_pair):
    client, server, _ = quic_pair
    incoming = server.new_control().accept("/hc/1.0.0")
    stream = client.new_control().open_stream(server.peer_id, "/hc/1.0.0")
    stream.settimeout(5)
    stream.write(b"question")
    stream.close_write()
    _, peer_stream = incoming.get(timeout=5)
    peer_stream.settimeout(5)
    assert peer_stream.readall() == b"question"  # our FIN reached it
    peer_stream.write(b"answer after our FIN")
    peer_stream.close()
    assert stream.readall() == b"answer after our FIN"

    doomed = client.new_control().open_stream(server.peer_id, "/hc/1.0.0")
    doomed.write(b"x")
    _, victim = incoming.get(timeout=5)
    victim.settimeout(5)
    assert victim.read(1) == b"x"
    doomed.reset()
    with pytest.raises(ConnectionResetError):
        victim.read()
    incoming.close()


def test_a_writer_blocks_while_the_reader_does_not_read(make_node):
    limits = Limits(max_stream_buffer=256 * 1024, max_connection_buffer=256 * 1024,
                    quic_send_buffer=64 * 1024)
    server = make_node(listen=[QUIC], limits=limits)
    client = make_node(listen=[], limits=limits)
    incoming = server.new_control().accept("/sink/1.0.0")
    stream = client.new_control().open_stream(quic_addr(server), "/sink/1.0.0")
    stream.settimeout(1.0)
    chunk = b"z" * 65536
    written = 0
    with pytest.raises(TimeoutError):
        for _ in range(64):  # 4 MiB: far beyond the windows and buffers
            stream.write(chunk)
            written += len(chunk)
    # What the writer got rid of is bounded by the peer's receive window, our QUIC
    # send buffer and the stream's own queue: the peer did not read, so it blocked.
    assert written <= 256 * 1024 + 64 * 1024 + SEND_BUFFER_HIGH_WATER + 65536
    _, sink = incoming.get(timeout=5)
    sink.settimeout(5)
    assert sink.unread_bytes <= 256 * 1024
    got = 0
    while got < written:  # reading frees the window: the rest flows
        got += len(sink.read(1 << 20))
    assert got >= written
    incoming.close()


def test_ping_identify_and_perf(quic_pair):
    client, server, _ = quic_pair
    rtts = client.ping(server.peer_id, count=3)
    assert len(rtts) == 3 and all(0 < rtt < 5 for rtt in rtts)
    info = client.wait_identified(server.peer_id, timeout=5)
    listen = {str(ma) for ma in info.listen_addrs}
    assert {str(ma) for ma in server.listen_addrs} == listen
    assert any("/tcp/" in ma for ma in listen) and any("/quic-v1" in ma for ma in listen)
    # The server saw us at our listening socket: we dialed from it, as go does.
    assert str(info.observed_addr) in {str(ma) for ma in client.listen_addrs}
    result = client.perf(server.peer_id, 256 * 1024, 512 * 1024, timeout=20)
    assert (result.upload_bytes, result.download_bytes) == (256 * 1024, 512 * 1024)


def test_unsupported_protocol_and_wrong_peer_id(quic_pair, make_node):
    client, server, _ = quic_pair
    with pytest.raises(UnsupportedProtocol):
        client.new_control().open_stream(server.peer_id, "/nope/1.0.0", timeout=5)
    assert client.ping(server.peer_id)  # the connection is fine after a refusal
    impostor = Keypair.generate().peer_id
    other = make_node(listen=[])
    wrong = quic_addr(server).rsplit("/p2p/", 1)[0] + f"/p2p/{impostor}"
    with pytest.raises(PeerMismatchError):
        other.dial(wrong, timeout=5)
    assert other.connected_peers() == []


def test_node_listens_on_tcp_and_quic_and_prefers_quic(make_node):
    server = make_node(listen=[TCP, QUIC])
    client = make_node(listen=[])
    tcp_ma = next(str(a) for a in server.listen_addrs if "/tcp/" in str(a))
    client.add_address(server.peer_id, tcp_ma)  # the TCP address is first in the book
    client.add_address(server.peer_id, quic_addr(server).rsplit("/p2p/", 1)[0])
    assert client.ping(server.peer_id)
    assert transports(client, server.peer_id) == {"quic-v1"}


def test_dialer_falls_back_to_tcp_when_quic_fails(make_node):
    server = make_node(listen=[TCP])
    client = make_node(listen=[], limits=Limits(handshake_timeout=1.0))
    dead = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # swallows every datagram
    dead.bind(("127.0.0.1", 0))
    try:
        client.add_address(server.peer_id, str(server.listen_addrs[0]))
        client.add_address(server.peer_id,
                           f"/ip4/127.0.0.1/udp/{dead.getsockname()[1]}/quic-v1")
        started = time.monotonic()
        assert client.ping(server.peer_id, timeout=8)
        assert time.monotonic() - started >= 0.9  # QUIC was tried first and timed out
        assert transports(client, server.peer_id) == {"tcp"}
    finally:
        dead.close()


def test_a_silent_peer_is_detected(make_node):
    limits = Limits(keepalive_interval=0.3, keepalive_timeout=0.7)
    server = make_node(listen=[QUIC], limits=limits)
    client = make_node(listen=[], limits=limits)
    client.dial(quic_addr(server))
    assert wait_until(lambda: client.peer_id in server.connected_peers())
    (conn,) = server.connections(client.peer_id)
    conn.sock.send = lambda datagrams: None  # the server goes silent (drops all)
    started = time.monotonic()
    assert wait_until(lambda: not client.connected_peers(), timeout=5)
    assert time.monotonic() - started < 4


def _initial(now: float, port: int) -> bytes:
    """A client's first datagram (a full-size QUIC v1 Initial) to ``port``."""
    muxer = QuicMuxer.client(Keypair.generate(), ("127.0.0.1", port), now)
    return muxer.datagrams_to_send(now)[0][0]


def test_hostile_datagrams_leave_no_state_and_an_honest_peer_is_served(make_node):
    server = make_node(listen=[QUIC])
    port = int(str(server.listen_addrs[0]).split("/")[4])
    attacker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        initial = _initial(time.monotonic(), port)
        junk = [os.urandom(n) for n in (1, 20, 1200, 1500)]
        junk += [initial[:n] for n in (1, 7, 100, 1199)]      # truncated
        junk += [bytes([0x40]) + os.urandom(60)]               # short header, no route
        junk += [initial[:600] + os.urandom(len(initial) - 600)]  # corrupted
        for data in junk:
            attacker.sendto(data, ("127.0.0.1", port))
        for _ in range(3):                                      # replayed
            attacker.sendto(initial, ("127.0.0.1", port))
        client = make_node(listen=[])
        assert client.ping(quic_addr(server), timeout=5)
        # The replayed Initial made at most one half-open connection, the rest none.
        assert server.counts()["pending"] <= 1
        assert server.connected_peers() == [client.peer_id]
    finally:
        attacker.close()


def test_a_flood_of_connection_attempts_is_bounded(make_node):
    server = make_node(listen=[QUIC], limits=Limits(quic_max_half_open_per_host=4))
    port = int(str(server.listen_addrs[0]).split("/")[4])
    attacker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        now = time.monotonic()
        for _ in range(30):  # valid Initials from one address, never completed
            attacker.sendto(_initial(now, port), ("127.0.0.1", port))
        assert wait_until(lambda: server.counts()["pending"] >= 4, timeout=5)
        time.sleep(0.3)
        assert server.counts()["pending"] == 4
    finally:
        attacker.close()


def test_quic_limits_are_the_engine_settings():
    from libp2p_stream_sync.quic_connection import quic_settings
    settings = quic_settings(Limits(max_stream_buffer=1 << 20, max_connection_buffer=4 << 20,
                                    keepalive_interval=5, keepalive_timeout=3))
    assert settings["stream_window"] == 1 << 20
    assert settings["connection_window"] == 4 << 20
    assert settings["idle_timeout"] == 8 and settings["keepalive_interval"] == 5


def test_flush_returns_once_the_bytes_left_in_datagrams(quic_pair):
    client, server, _ = quic_pair
    stream = client.new_control().open_stream(server.peer_id, ECHO)
    stream.settimeout(10)
    (conn,) = client.connections(server.peer_id)
    before = conn.bytes_sent
    payload = os.urandom(1 << 20)
    stream.write(payload)
    stream.flush()
    # bytes_sent counts stream payload put into packets: flush() waited for all of it.
    assert conn.bytes_sent - before >= len(payload)
    stream.close_write()
    assert len(stream.readall()) == len(payload)


def test_streams_beyond_the_per_peer_bound_are_reset(make_node):
    server = make_node(listen=[QUIC], limits=Limits(max_inbound_streams_per_peer=4))
    incoming = server.new_control().accept("/hold/1.0.0")
    client = make_node(listen=[])
    control = client.new_control()
    held = [control.open_stream(quic_addr(server), "/hold/1.0.0", timeout=5)
            for _ in range(4)]
    with pytest.raises((OpenStreamError, ConnectionResetError)):
        extra = control.open_stream(server.peer_id, "/hold/1.0.0", timeout=5)
        extra.settimeout(5)
        extra.write(b"x")
        extra.read(1)
    for stream in held:
        stream.reset()
    assert wait_until(lambda: server.counts()["inbound_streams"] == 0)
    assert client.ping(server.peer_id)  # the connection itself was never at fault
    incoming.close()
