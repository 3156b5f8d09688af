"""A closed connection is freed at once, by reference counting: no reference cycle
(connection <-> session <-> the session's helpers) waits for the cycle collector."""

from __future__ import annotations

import gc
import weakref

from conftest import connect, wait_until


def test_closed_connection_is_freed_without_the_cycle_collector(make_node):
    server = make_node()
    client = make_node(listen=[])
    connect(client, server)
    conn = client.connections(server.peer_id)[0]
    client.wait_identified(server.peer_id)
    gc.collect()
    gc.disable()
    try:
        ref = weakref.ref(conn)
        client.reactor.call_soon(conn.close)
        del conn
        assert wait_until(lambda: ref() is None, 5), \
            "a closed connection is kept alive by a reference cycle"
    finally:
        gc.enable()
