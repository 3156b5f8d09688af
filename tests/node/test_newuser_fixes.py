"""Problems a new user met when trying the library from its README."""

from __future__ import annotations

import http.server
import logging
import socket
import threading
from pathlib import Path

import pytest

from multiaddr import Multiaddr

from libp2p_stream_sync import DialError, Limits, Node, OpenStreamError, ProtocolError

from conftest import EchoServer, p2p_addr, wait_until

ECHO = "/echo/1.0.0"


@pytest.fixture
def silent_port():
    """A loopback TCP listener that completes the TCP handshake and never writes."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    yield sock.getsockname()[1]
    sock.close()


def echo_once(client, peer, **kwargs) -> bytes:
    stream = client.new_control().open_stream(peer, ECHO, **kwargs)
    try:
        stream.write(b"hi")
        stream.close_write()
        return stream.read_exactly(2)
    finally:
        stream.close()


# -- 1. a failed address does not block the good one ------------------------------------
def test_explicit_address_is_dialed_after_a_silent_one_failed(make_node, silent_port):
    server, client = make_node(), make_node()
    EchoServer(server, ECHO)
    silent = f"/ip4/127.0.0.1/tcp/{silent_port}/p2p/{server.peer_id}"
    with pytest.raises(OpenStreamError):
        client.new_control().open_stream(silent, ECHO, timeout=1)
    assert echo_once(client, p2p_addr(server), timeout=3) == b"hi"


def test_handshake_timeout_of_one_address_does_not_abort_the_others(
        make_node, silent_port):
    server = make_node()
    client = make_node(limits=Limits(handshake_timeout=0.5))
    EchoServer(server, ECHO)
    client.add_address(server.peer_id, f"/ip4/127.0.0.1/tcp/{silent_port}")
    client.add_address(server.peer_id, str(server.listen_addrs[0]))
    assert echo_once(client, server.peer_id, timeout=5) == b"hi"


def test_failed_address_moves_to_the_back(make_node, silent_port):
    server = make_node()
    client = make_node(limits=Limits(handshake_timeout=0.5))
    EchoServer(server, ECHO)
    silent = f"/ip4/127.0.0.1/tcp/{silent_port}"
    client.add_address(server.peer_id, silent)
    client.add_address(server.peer_id, str(server.listen_addrs[0]))
    client.dial(server.peer_id, timeout=5)
    assert [str(a) for a in client.addresses_of(server.peer_id)] == [
        str(server.listen_addrs[0]), silent]


# -- 2. identify calls take a peer id string ----------------------------------------------
def test_identify_calls_take_a_peer_id_string(make_node):
    server, client = make_node(), make_node()
    client.dial(p2p_addr(server))
    pid = str(server.peer_id)
    info = client.wait_identified(pid, timeout=5)
    assert info is not None
    assert client.identify_info(pid) is not None
    assert "/ipfs/id/1.0.0" in client.peer_protocols(pid)
    assert client.addresses_of(pid) == client.addresses_of(server.peer_id) != []


@pytest.mark.parametrize("call", ["identify_info", "peer_protocols", "wait_identified",
                                  "addresses_of"])
def test_identify_calls_reject_a_malformed_peer_id(make_node, call):
    with pytest.raises(ValueError):
        getattr(make_node(), call)("not-a-peer-id")


# -- 3. dial failures are ConnectionErrors ------------------------------------------------
def test_unresolvable_name_raises_dial_error(make_node):
    with pytest.raises(DialError, match="cannot resolve") as caught:
        make_node().dial("/dns4/nonexistent.invalid/tcp/1", timeout=5)
    assert isinstance(caught.value.__cause__, socket.gaierror)


def test_readme_names_the_errors_dial_raises():
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    assert ("failures to reach a peer raise `ConnectionError`s (`DialError`, "
            "`OpenStreamError`) or `TimeoutError` from `dial`") in " ".join(readme.split())


# -- 4. listen takes a list ---------------------------------------------------------------
@pytest.mark.parametrize("listen", ["/ip4/127.0.0.1/tcp/0", Multiaddr("/ip4/127.0.0.1/tcp/0")])
def test_listen_given_a_single_address_raises_type_error(listen):
    expected = "listen takes a list of multiaddrs, not a (str|Multiaddr)$"
    with pytest.raises(TypeError, match=expected):
        Node(listen=listen)


# -- 5. the accept-queue warning names the real cause -------------------------------------
def test_full_accept_queue_warning_says_the_queue_is_full(make_node, caplog):
    server, client = make_node(), make_node(listen=[])
    incoming = server.new_control().accept("/full/1.0.0", capacity=8)  # share: 8
    caplog.set_level(logging.WARNING)
    control = client.new_control()
    streams = [control.open_stream(p2p_addr(server), "/full/1.0.0", timeout=5)
               for _ in range(9)]
    assert wait_until(lambda: incoming.dropped == 1)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING
                and "/full/1.0.0" in r.getMessage()]
    assert len(warnings) == 1 and "the queue is full" in warnings[0], warnings
    for stream in streams:
        stream.reset()


# -- 7. dialing something that is not a libp2p node ---------------------------------------
def test_dialing_an_http_server_says_it_is_not_a_libp2p_node(make_node):
    class Quiet(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        with pytest.raises(DialError, match="not a libp2p node.*multistream-select") as caught:
            make_node(listen=[]).dial(f"/ip4/127.0.0.1/tcp/{httpd.server_address[1]}",
                                      timeout=5)
    finally:
        httpd.shutdown()
        httpd.server_close()
    causes = []
    error: BaseException | None = caught.value
    while error is not None:
        causes.append(error)
        error = error.__cause__
    assert any(isinstance(c, ProtocolError) and not isinstance(c, DialError)
               for c in causes), causes


def test_a_lazy_open_reset_while_negotiating_leaves_no_negotiation(make_node):
    server = make_node()
    client = make_node(listen=[])
    control = client.new_control()
    addr = f"{server.listen_addrs[0]}/p2p/{server.peer_id}"
    client.dial(addr)
    for _ in range(5):
        control.open_stream(addr, "/nobody/1.0.0", lazy=True, timeout=5).reset()
    conn = client.connections(server.peer_id)[0]
    assert wait_until(lambda: conn.stream_counts()["negotiating"] == 0, 5), \
        conn.stream_counts()
