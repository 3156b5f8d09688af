"""Connection.collect: reactor-side request-less reads (used by identify)."""

from __future__ import annotations

import time
from concurrent.futures import Future

import pytest

from conftest import p2p_addr


def collect(client, server, protocol, limit=1024, timeout=2.0):
    conn_ready = client.dial(p2p_addr(server))
    conn = client.connections(conn_ready)[0]
    result: Future = Future()
    client.reactor.call_soon(conn.collect, protocol, limit, timeout,
                              lambda data, error: result.set_result((data, error)))
    return result.result(timeout + 3)


@pytest.fixture
def pair(make_node):
    return make_node(listen=[]), make_node()


def test_collects_the_whole_response(pair):
    client, server = pair
    incoming = server.new_control().accept("/c/1.0.0")

    def answer():
        _, stream = incoming.get(timeout=5)
        stream.settimeout(5)
        assert stream.read() == b""  # the collector half-closed at once
        stream.write(b"part one, ")
        stream.write(b"part two")
        stream.close()

    import threading
    thread = threading.Thread(target=answer)
    thread.start()
    data, error = collect(client, server, "/c/1.0.0")
    thread.join(5)
    assert (data, error) == (b"part one, part two", None)


def test_too_large_response_is_an_error(pair):
    client, server = pair
    incoming = server.new_control().accept("/c/1.0.0")
    import threading
    threading.Thread(target=lambda: incoming.get(timeout=5)[1].write(b"x" * 5000),
                     daemon=True).start()
    data, error = collect(client, server, "/c/1.0.0", limit=1000)
    assert data is None and "larger than 1000" in str(error)


def test_silent_peer_times_out(pair):
    client, server = pair
    server.new_control().accept("/c/1.0.0")  # accepted, never answered
    start = time.monotonic()
    data, error = collect(client, server, "/c/1.0.0", timeout=0.5)
    assert data is None and isinstance(error, TimeoutError)
    assert time.monotonic() - start < 2


def test_unsupported_protocol_is_reported(pair):
    client, server = pair
    data, error = collect(client, server, "/nobody/1.0.0")
    assert data is None and getattr(error, "protocol", None) == "/nobody/1.0.0"
