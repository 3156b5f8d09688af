"""Node.dial_new_connection: a dial that never reuses an open connection (AutoNAT's
dial-back must prove that a fresh dial works)."""

from __future__ import annotations

import pytest

from conftest import p2p_addr, wait_until
from libp2p_stream_sync import DialError


def test_a_new_connection_is_made_beside_the_open_one(make_node):
    a, b = make_node(), make_node()
    b.dial(p2p_addr(a), timeout=5)
    conn = b.dial_new_connection(p2p_addr(a), timeout=5)
    assert conn.remote_peer_id == a.peer_id
    assert len(b.connections(a.peer_id)) == 2
    b.reactor.call_soon(conn.close)
    assert wait_until(lambda: len(b.connections(a.peer_id)) == 1)
    assert len(b.ping(a.peer_id, timeout=5)) == 1  # the first one is untouched


def test_it_needs_a_peer_id_and_fails_like_dial(make_node):
    a, b = make_node(), make_node(listen=[])
    with pytest.raises(ValueError):
        b.dial_new_connection(str(a.listen_addrs[0]), timeout=5)
    with pytest.raises(ValueError):
        b.dial_new_connection(a.peer_id, timeout=5)
    a_addr = p2p_addr(a)
    a.close()
    with pytest.raises(DialError):
        b.dial_new_connection(a_addr, timeout=5)
