"""WebSocket (/ws) and TLS (/tls/1.0.0) in the node: dial and listen on /ws, choose
and negotiate the security protocol, and hostile or missing-package cases."""

from __future__ import annotations

import socket
import time

import pytest

from libp2p_stream_sync import Limits, Node
from libp2p_stream_sync.engines import tls as tls_engine
from libp2p_stream_sync.engines.upgrade import TLS, Upgrade
from libp2p_stream_sync.errors import OpenStreamError, PeerMismatchError
from libp2p_stream_sync.identity import Keypair

from conftest import LOOPBACK, EchoServer, wait_until

ECHO = "/echo/1.0.0"
WS = "/ip4/127.0.0.1/tcp/0/ws"
NOISE_ID, TLS_ID = "/noise", "/tls/1.0.0"


def addr_of(node: Node, suffix: str) -> str:
    """The node's listen address of one transport ("tcp" or "ws"), with /p2p/."""
    for ma in node.listen_addrs:
        is_ws = str(ma).endswith("/ws")
        if is_ws == (suffix == "ws"):
            return f"{ma}/p2p/{node.peer_id}"
    raise AssertionError(f"no {suffix} listen address in {node.listen_addrs}")


def echo_once(client: Node, addr: str, payload: bytes) -> bytes:
    stream = client.new_control().open_stream(addr, ECHO, timeout=5)
    stream.settimeout(5)
    stream.write(payload)
    stream.close_write()
    got = _read_to_end(stream)
    stream.close()
    return got


def _read_to_end(stream) -> bytes:
    chunks = []
    while True:
        data = stream.read(1 << 16)
        if not data:
            return b"".join(chunks)
        chunks.append(data)


def test_a_node_listens_on_tcp_and_ws_at_once_and_identify_reports_both(make_node):
    server = make_node(listen=[LOOPBACK, WS])
    echo = EchoServer(server)
    kinds = sorted("ws" if str(ma).endswith("/ws") else "tcp" for ma in server.listen_addrs)
    assert kinds == ["tcp", "ws"]
    client = make_node(listen=[])
    payload = bytes(range(256)) * 1000  # many WebSocket frames, both ways
    assert echo_once(client, addr_of(server, "ws"), payload) == payload
    info = client.wait_identified(server.peer_id, timeout=5)
    assert {str(ma) for ma in server.listen_addrs} <= {str(ma) for ma in info.listen_addrs}
    assert str(info.observed_addr).endswith("/ws")  # the server saw a WebSocket peer
    assert echo_once(client, addr_of(server, "tcp"), b"tcp too") == b"tcp too"
    echo.close()


@pytest.mark.parametrize("transport", ["tcp", "ws"])
def test_tls_secures_tcp_and_ws_connections(make_node, transport):
    server = make_node(listen=[LOOPBACK, WS], security=["tls"])
    echo = EchoServer(server)
    client = make_node(listen=[], security=["tls"])
    payload = b"x" * 300_000  # many TLS records
    assert echo_once(client, addr_of(server, transport), payload) == payload
    [conn] = client.connections(server.peer_id)
    assert conn.security_protocol == TLS_ID
    echo.close()


@pytest.mark.parametrize("client_pref, expected", [
    (["noise", "tls"], NOISE_ID), (["tls", "noise"], TLS_ID), (None, NOISE_ID)])
def test_the_dialers_order_of_preference_picks_the_security(make_node, client_pref,
                                                            expected):
    server = make_node(security=["noise", "tls"])
    client = make_node(listen=[], security=client_pref)
    client.dial(addr_of(server, "tcp"), timeout=5)
    [conn] = client.connections(server.peer_id)
    assert conn.security_protocol == expected
    assert wait_until(lambda: bool(server.connections(client.peer_id)))
    assert server.connections(client.peer_id)[0].security_protocol == expected


def test_no_common_security_protocol_fails_the_dial(make_node):
    server = make_node(security=["tls"])
    client = make_node(listen=[], security=["noise"])
    with pytest.raises(ConnectionError, match="noise"):
        client.dial(addr_of(server, "tcp"), timeout=5)


def test_unknown_security_name_is_a_value_error():
    with pytest.raises(ValueError, match="unknown security protocol 'ssl'"):
        Node(security=["ssl"])
    with pytest.raises(ValueError, match="at least one"):
        Node(security=[])


@pytest.mark.parametrize("transport", ["tcp", "ws"])
def test_a_tls_peer_with_another_peer_id_is_a_peer_mismatch(make_node, transport):
    server = make_node(listen=[LOOPBACK, WS], security=["tls"])
    client = make_node(listen=[], security=["tls"])
    impostor_id = Keypair.generate().peer_id
    wrong = addr_of(server, transport).replace(str(server.peer_id), str(impostor_id))
    with pytest.raises(PeerMismatchError):
        client.dial(wrong, timeout=5)
    with pytest.raises(OpenStreamError) as info:
        client.new_control().open_stream(wrong, ECHO, timeout=5)
    assert info.value.kind == "wrong-peer"
    assert client.connected_peers() == []


def test_a_ws_peer_that_never_completes_the_upgrade_is_closed_at_handshake_timeout(
        make_node):
    server = make_node(listen=[LOOPBACK, WS], limits=Limits(handshake_timeout=0.5))
    echo = EchoServer(server)
    ws_port = int(addr_of(server, "ws").split("/")[4])
    silent = socket.create_connection(("127.0.0.1", ws_port), timeout=5)
    silent.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # never ends its head
    started = time.monotonic()
    client = make_node(listen=[])
    assert echo_once(client, addr_of(server, "tcp"), b"still served") == b"still served"
    assert silent.recv(100) == b""  # closed by the server, without a response
    closed_after = time.monotonic() - started
    assert 0.3 < closed_after < 5
    assert echo_once(client, addr_of(server, "tcp"), b"and after") == b"and after"
    silent.close()
    echo.close()


def test_without_wsproto_a_ws_address_names_the_extra(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "wsproto", None)
    with pytest.raises(ImportError, match=r"libp2p_stream_sync\[ws\]"):
        Node(listen=[WS])
    with Node(listen=[]) as node:
        with pytest.raises(ImportError, match=r"libp2p_stream_sync\[ws\]"):
            node.dial("/ip4/127.0.0.1/tcp/1/ws", timeout=1)


def test_without_pyopenssl_a_tls_preference_names_the_extra(monkeypatch):
    monkeypatch.setattr(tls_engine, "SSL", None)
    with pytest.raises(ImportError, match=r"libp2p_stream_sync\[tls\]"):
        Node(listen=[], security=["noise", "tls"])
    with Node(listen=[]) as node:  # the default then offers Noise alone
        assert node.security == (NOISE_ID,)


def raw_tls_client(server: Node) -> tuple[socket.socket, object]:
    """A bare socket that completes the upgrade to ``server`` over TCP + TLS (yamux by
    ALPN) with the engines, and does nothing more; returns it and its TLS transport."""
    port = int(addr_of(server, "tcp").split("/")[4])
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    upgrade = Upgrade(Keypair.generate(), initiator=True, expected_peer=server.peer_id,
                      security=[TLS], muxers=["/yamux/1.0.0"])
    while True:
        for chunk in upgrade.data_to_send():
            sock.sendall(chunk)
        if upgrade.complete:
            return sock, upgrade.transport
        data = sock.recv(65536)
        assert data, "the server closed during the upgrade"
        if upgrade.transport is None:
            upgrade.receive_data(data)
        else:
            upgrade.receive_plain(upgrade.transport.receive_data(data))


def test_a_tls_close_notify_from_the_peer_ends_the_connection(make_node):
    server = make_node(security=["tls"])
    sock, transport = raw_tls_client(server)
    assert wait_until(lambda: len(server.connections()) == 1)
    sock.sendall(transport.close())  # close_notify; the TCP connection stays open
    assert wait_until(lambda: not server.connections())
    sock.settimeout(5)
    while sock.recv(65536):  # then the server's FIN
        pass
    sock.close()


def test_closing_a_node_sends_tls_close_notify_before_the_fin(make_node):
    server = make_node(security=["tls"])
    sock, transport = raw_tls_client(server)
    assert wait_until(lambda: len(server.connections()) == 1)
    server.close()
    sock.settimeout(5)
    while not transport.peer_closed:
        data = sock.recv(65536)
        assert data, "FIN without close_notify"
        transport.receive_data(data)
    sock.close()
