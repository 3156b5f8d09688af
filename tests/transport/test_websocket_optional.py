"""What works without wsproto: the /ws multiaddr helpers, and a clear error naming the extra.

No ``importorskip`` here: these tests must run whether or not wsproto is installed.
"""

import importlib
import socket
import sys

import pytest

from libp2p_stream_sync.identity import Keypair
from libp2p_stream_sync.transport.websocket import (is_websocket_multiaddr,
                                                    split_websocket_multiaddr)


def test_websocket_multiaddrs_split_into_tcp_address_and_host_header():
    peer = Keypair.from_seed(b"\x05" * 32).peer_id
    tcp, host = split_websocket_multiaddr(f"/ip4/127.0.0.1/tcp/4001/ws/p2p/{peer}")
    assert (str(tcp), host) == (f"/ip4/127.0.0.1/tcp/4001/p2p/{peer}", "127.0.0.1:4001")
    assert split_websocket_multiaddr("/ip6/::1/tcp/80/ws")[1] == "[::1]:80"
    assert split_websocket_multiaddr("/dns4/example.com/tcp/443/ws")[1] == "example.com:443"
    assert is_websocket_multiaddr("/ip4/1.2.3.4/tcp/1/ws")
    assert not is_websocket_multiaddr("/ip4/1.2.3.4/tcp/1")
    with pytest.raises(ValueError, match="wss"):
        split_websocket_multiaddr("/ip4/1.2.3.4/tcp/443/wss")
    with pytest.raises(ValueError):
        split_websocket_multiaddr("/ip4/1.2.3.4/tcp/1")


def test_without_wsproto_the_modules_import_and_a_channel_names_the_extra(monkeypatch):
    for name in [m for m in sys.modules if m == "wsproto" or m.startswith("wsproto.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "wsproto", None)
    for name in ("libp2p_stream_sync.engines.websocket",
                 "libp2p_stream_sync.transport.websocket"):
        monkeypatch.delitem(sys.modules, name)
    module = importlib.import_module("libp2p_stream_sync.transport.websocket")
    a, b = socket.socketpair()
    with a, b:
        with pytest.raises(ImportError, match=r"pip install 'libp2p_stream_sync\[ws\]'"):
            module.WebSocketChannel(a, "server")
        with pytest.raises(ImportError, match=r"libp2p_stream_sync\[ws\]"):
            module.require_wsproto()
