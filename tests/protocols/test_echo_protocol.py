"""The echo helper, built on the public Control API only."""

from __future__ import annotations

import os
import threading

import pytest

from libp2p_stream_sync import UnsupportedProtocol
from libp2p_stream_sync.protocols.echo import PROTOCOL, echo_roundtrip, serve_echo

from protocol_helpers import eventually, p2p_addr
import protocol_helpers

connected = protocol_helpers.connected  # fixtures
nodes = protocol_helpers.nodes


@pytest.mark.parametrize("size", [0, 1, 3 << 20])
def test_roundtrip(connected, size):
    a, b = connected
    with serve_echo(a.new_control()) as server:
        data = os.urandom(size)
        assert echo_roundtrip(b.new_control(), a.peer_id, data, timeout=10) == data
        eventually(lambda: server.served == 1)


def test_concurrent_streams_with_a_small_pool(nodes):
    a, b = nodes(), nodes(listen=[])
    control = b.new_control()
    results = {}
    with serve_echo(a.new_control(), max_streams=2):
        def run(i: int) -> None:
            data = os.urandom(100_000 + i)
            results[i] = echo_roundtrip(control, p2p_addr(a), data, timeout=10) == data

        threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(15)
    assert results == {i: True for i in range(8)}


def test_close_unregisters_the_protocol(connected):
    a, b = connected
    server = serve_echo(a.new_control(), "/my-echo/1.0.0")
    assert echo_roundtrip(b.new_control(), a.peer_id, b"hi", protocol="/my-echo/1.0.0",
                          timeout=5) == b"hi"
    server.close()
    with pytest.raises(UnsupportedProtocol):
        echo_roundtrip(b.new_control(), a.peer_id, b"hi", protocol="/my-echo/1.0.0",
                       timeout=5)
    assert PROTOCOL not in b.peer_protocols(a.peer_id)


def test_close_resets_streams_being_served(connected):
    a, b = connected
    server = serve_echo(a.new_control())
    stream = b.new_control().open_stream(a.peer_id, PROTOCOL, timeout=5)
    stream.settimeout(5)
    stream.write(b"ping")
    assert stream.read_exactly(4) == b"ping"
    server.close()
    with pytest.raises(ConnectionResetError):
        stream.read()
