"""Configurable limits (issue #7, item 5)."""

from __future__ import annotations

import time

import pytest

from libp2p_stream_sync import OpenStreamError
from libp2p_stream_sync.limits import Limits

from conftest import EchoServer, p2p_addr, wait_until


def test_limits_are_validated():
    with pytest.raises(ValueError):
        Limits(max_stream_buffer=1000)
    with pytest.raises(ValueError):
        Limits(handshake_timeout=0)


def test_inbound_connection_limit(make_node):
    server = make_node(limits=Limits(max_inbound_connections=2))
    clients = [make_node(listen=[]) for _ in range(3)]
    for client in clients[:2]:
        client.dial(p2p_addr(server))
    with pytest.raises(ConnectionError):
        clients[2].dial(p2p_addr(server), timeout=5)
    assert wait_until(lambda: len(server.connected_peers()) == 2)
    clients[0].close()
    assert wait_until(lambda: len(server.connected_peers()) == 1)
    assert clients[2].dial(p2p_addr(server), timeout=5) == server.peer_id


def test_outbound_connection_limit(make_node):
    servers = [make_node() for _ in range(2)]
    client = make_node(listen=[], limits=Limits(max_outbound_connections=1))
    client.dial(p2p_addr(servers[0]))
    with pytest.raises(ConnectionError, match="outbound connection limit"):
        client.dial(p2p_addr(servers[1]))


def test_inbound_streams_per_protocol_per_peer(make_node):
    server = make_node(limits=Limits(max_inbound_streams_per_protocol_per_peer=3))
    client = make_node(listen=[])
    incoming = server.new_control().accept("/few/1.0.0", capacity=10)
    control = client.new_control()
    streams = [control.open_stream(p2p_addr(server), "/few/1.0.0", timeout=5)
               for _ in range(5)]
    accepted = [incoming.get(timeout=5) for _ in range(3)]
    with pytest.raises(TimeoutError):
        incoming.get(timeout=0.3)
    refused = 0
    for stream in streams[3:]:
        stream.settimeout(2)
        with pytest.raises(ConnectionResetError):
            stream.read()
        refused += 1
    assert refused == 2
    # Closing accepted streams frees their places.
    for _, stream in accepted:
        stream.reset()
    assert wait_until(lambda: not server._registry.inbound_counts())
    control.open_stream(server.peer_id, "/few/1.0.0", timeout=5)
    assert incoming.get(timeout=5)[0] == client.peer_id


def test_streams_per_connection(make_node):
    server = make_node(limits=Limits(max_streams_per_connection=4))
    client = make_node(listen=[], limits=Limits(max_streams_per_connection=4))
    EchoServer(server)
    control = client.new_control()
    client.dial(p2p_addr(server))
    # Identify streams (both ways) count too: let them finish first.
    client.wait_identified(server.peer_id)
    conn = client.connections(server.peer_id)[0]
    assert wait_until(lambda: conn._muxer.stream_count == 0)
    streams = [control.open_stream(server.peer_id, "/echo/1.0.0", timeout=5)
               for _ in range(4)]
    with pytest.raises(OpenStreamError):
        control.open_stream(server.peer_id, "/echo/1.0.0", timeout=5)
    assert len(streams) == 4


def test_idle_connections_are_closed(make_node):
    server = make_node(limits=Limits(idle_connection_timeout=0.3))
    client = make_node(listen=[])
    EchoServer(server)
    stream = client.new_control().open_stream(p2p_addr(server), "/echo/1.0.0", timeout=5)
    time.sleep(0.6)  # a stream is open: not idle
    assert client.connected_peers() == [server.peer_id]
    stream.write(b"x")
    stream.close_write()
    stream.settimeout(5)
    assert stream.readall() == b"x"
    assert wait_until(lambda: client.connected_peers() == [], timeout=3)


def test_keepalive_detects_a_silent_peer(make_node):
    limits = Limits(keepalive_interval=0.2, keepalive_timeout=0.3)
    server = make_node()
    client = make_node(listen=[], limits=limits)
    client.dial(p2p_addr(server))
    assert wait_until(lambda: client.peer_id in server.connected_peers())
    server_conn = server.connections(client.peer_id)[0]
    # The server stops reading its socket (as if frozen): pings go unanswered.
    server.reactor.call_soon(server.reactor.unregister, server_conn.sock)
    start = time.monotonic()
    assert wait_until(lambda: client.connected_peers() == [], timeout=3)
    assert time.monotonic() - start < 1.5
