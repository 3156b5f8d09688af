"""Arguments as Python users pass them: timeouts (None, 0, inf, nan, negative), peers
(PeerId, peer id strings, multiaddrs with and without /p2p/), and what a call that
fails leaves behind (issue #11, item 2)."""

from __future__ import annotations

import errno
import socket
import threading
import time

import pytest

from libp2p_stream_sync import DialError, Keypair, Limits, Node, OpenStreamError
from libp2p_stream_sync.timeouts import check_timeout

from conftest import LOOPBACK, p2p_addr, wait_until

ECHO = "/echo/1.0.0"
INF = float("inf")
NAN = float("nan")


def echo_once(stream, payload: bytes = b"hello") -> bytes:
    stream.settimeout(5)
    stream.write(payload)
    stream.close_write()
    data = stream.read_exactly(len(payload))
    stream.close()
    return data


# -- the shared helper ------------------------------------------------------------------
@pytest.mark.parametrize("value, expected", [
    (None, None), (0, 0.0), (2, 2.0), (0.5, 0.5), (INF, None), (1e300, None)])
def test_check_timeout_accepts_what_socket_and_queue_users_pass(value, expected):
    assert check_timeout(value) == expected


@pytest.mark.parametrize("value, error", [
    (-1, ValueError), (-INF, ValueError), (NAN, ValueError), ("1", TypeError)])
def test_check_timeout_rejects_the_rest(value, error):
    with pytest.raises(error):
        check_timeout(value)


# -- open_stream timeouts ---------------------------------------------------------------
def test_open_stream_timeout_none_has_no_deadline_but_works(echo_pair):
    client, server, _ = echo_pair
    stream = client.new_control().open_stream(server.peer_id, ECHO, timeout=None)
    assert echo_once(stream) == b"hello"


def test_open_stream_timeout_inf_means_none_on_a_live_connection(echo_pair):
    client, server, _ = echo_pair
    control = client.new_control()
    assert echo_once(control.open_stream(server.peer_id, ECHO, timeout=5)) == b"hello"
    stream = control.open_stream(server.peer_id, ECHO, timeout=INF)  # was OverflowError
    assert echo_once(stream) == b"hello"


def test_open_stream_timeout_none_is_still_bounded_by_the_handshake_timeout(make_node):
    silent = socket.create_server(("127.0.0.1", 0))  # accepts TCP, never speaks
    try:
        port = silent.getsockname()[1]
        client = make_node(listen=[], limits=Limits(handshake_timeout=0.5))
        addr = f"/ip4/127.0.0.1/tcp/{port}/p2p/{Keypair.generate().peer_id}"
        start = time.monotonic()
        with pytest.raises(OpenStreamError):
            client.new_control().open_stream(addr, ECHO, timeout=None)
        assert time.monotonic() - start < 5  # 0.5 s handshake bound, generous margin
    finally:
        silent.close()


@pytest.mark.parametrize("bad", [-1, -0.5, NAN])
def test_open_stream_negative_or_nan_timeout_is_a_value_error(echo_pair, bad):
    client, server, _ = echo_pair
    with pytest.raises(ValueError):
        client.new_control().open_stream(server.peer_id, ECHO, timeout=bad)


def test_open_stream_timeout_zero_says_it_timed_out_at_once(make_node):
    server = make_node()
    incoming = server.new_control().accept(ECHO)
    client = make_node(listen=[])
    client.dial(p2p_addr(server))
    with pytest.raises(OpenStreamError) as info:
        client.new_control().open_stream(server.peer_id, ECHO, timeout=0)
    assert info.value.kind == "timeout" and "at once" in str(info.value)
    with pytest.raises(TimeoutError):
        incoming.get(timeout=0.3)  # nothing was started on the wire


# -- other public calls that take a timeout ---------------------------------------------
def test_dial_ping_perf_and_wait_identified_accept_none_and_inf(make_node):
    server = make_node(enable_perf=True)
    client = make_node(listen=[])
    assert client.dial(p2p_addr(server), timeout=None) == server.peer_id
    assert client.wait_identified(server.peer_id, timeout=None).protocols
    assert client.wait_identified(server.peer_id, timeout=INF).protocols
    assert len(client.ping(server.peer_id, count=2, timeout=None)) == 2
    assert len(client.ping(server.peer_id, timeout=INF)) == 1
    assert client.perf(server.peer_id, 1000, 2000, timeout=None).download_bytes == 2000


def test_dial_timeout_zero_and_bad_timeouts(make_node):
    server = make_node()
    client = make_node(listen=[])
    with pytest.raises(TimeoutError, match="at once"):
        client.dial(p2p_addr(server), timeout=0)
    for bad in (-1, NAN):
        with pytest.raises(ValueError):
            client.dial(p2p_addr(server), timeout=bad)
        with pytest.raises(ValueError):
            client.ping(server.peer_id, timeout=bad)
        with pytest.raises(ValueError):
            client.wait_identified(server.peer_id, timeout=bad)


@pytest.mark.timeout(10)
def test_incoming_get_rejects_nan_instead_of_hanging(make_node):
    incoming = make_node().new_control().accept(ECHO)
    with pytest.raises(ValueError):
        incoming.get(timeout=NAN)  # queue.get(timeout=nan) would block forever
    with pytest.raises(TimeoutError):
        incoming.get(timeout=0)


# -- peers as users write them ----------------------------------------------------------
def test_bare_peer_id_string_opens_and_dials_via_known_addresses(echo_pair):
    client, server, _ = echo_pair
    text = str(server.peer_id)
    assert echo_once(client.new_control().open_stream(text, ECHO, timeout=5)) == b"hello"
    assert client.dial(text, timeout=5) == server.peer_id


def test_bare_peer_id_string_without_addresses_says_so(make_node):
    client = make_node(listen=[])
    stranger = str(Keypair.generate().peer_id)
    with pytest.raises(OpenStreamError) as info:
        client.new_control().open_stream(stranger, ECHO, timeout=2)
    assert info.value.kind == "no-address"
    assert f"no known address for peer {stranger}" in str(info.value)
    with pytest.raises(DialError, match=f"no known address for peer {stranger}"):
        client.dial(stranger, timeout=2)


def test_add_address_takes_a_peer_id_string(make_node):
    server = make_node()
    client = make_node(listen=[])
    client.add_address(str(server.peer_id), server.listen_addrs[0])
    assert client.dial(server.peer_id, timeout=5) == server.peer_id


@pytest.mark.parametrize("addr", [
    "/ip4/1.2.3/tcp/1",                          # malformed
    "/ip4/127.0.0.1/tcp/99999",                  # malformed
    "/ip4/127.0.0.1/udp/1",                      # unsupported
    "not-a-peer-or-address",                     # neither
])
def test_caller_mistakes_are_value_errors_naming_the_address_once(make_node, addr):
    node = make_node(listen=[])
    calls = [lambda: node.new_control().open_stream(addr, ECHO, timeout=1),
             lambda: node.dial(addr, timeout=1),
             lambda: node.add_address(node.peer_id, addr)]
    for call in calls:
        with pytest.raises(ValueError) as info:
            call()
        assert str(info.value).count(addr) == 1, str(info.value)


def test_open_stream_refuses_an_address_that_names_no_peer_and_dial_accepts_it(echo_pair):
    client, server, _ = echo_pair
    bare = str(server.listen_addrs[0])
    with pytest.raises(ValueError, match="/p2p/"):
        client.new_control().open_stream(bare, ECHO, timeout=2)
    assert client.dial(bare, timeout=5) == server.peer_id  # the proven id comes back


def test_address_in_use_names_the_address(make_node):
    taken = str(make_node().listen_addrs[0])
    with pytest.raises(OSError) as info:
        Node(listen=[LOOPBACK, taken])
    assert taken in str(info.value) and "in use" in str(info.value)
    assert info.value.errno == errno.EADDRINUSE


# -- limits -----------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, error", [
    ({"handshake_timeout": INF}, ValueError),
    ({"handshake_timeout": NAN}, ValueError),
    ({"stream_close_timeout": INF}, ValueError),
    ({"keepalive_timeout": NAN}, ValueError),
    ({"idle_connection_timeout": NAN}, ValueError),
    ({"keepalive_interval": 0}, ValueError),
    ({"max_inbound_connections": 1.5}, TypeError),
    ({"yamux_backlog": True}, TypeError),
    ({"max_stream_buffer": NAN}, TypeError),
])
def test_every_limits_field_is_validated(kwargs, error):
    with pytest.raises(error):
        Limits(**kwargs)


def test_limits_inf_means_never_where_none_is_accepted():
    limits = Limits(idle_connection_timeout=INF, keepalive_interval=INF)
    assert limits.idle_connection_timeout is None and limits.keepalive_interval is None


# -- the reactor survives its own loop's errors ------------------------------------------
def _reactor_runs_calls(node: Node) -> bool:
    ran = threading.Event()
    node.reactor.call_soon(ran.set)
    return ran.wait(3)


def test_reactor_survives_an_error_raised_by_select(make_node):
    node = make_node()
    selector = node.reactor._selector
    real_select = selector.select
    failures = []

    def failing_once(timeout=None):
        if not failures:
            failures.append(timeout)
            raise OSError("select failed")
        return real_select(timeout)

    selector.select = failing_once
    node.reactor.call_soon(lambda: None)  # wake the loop so it selects again
    assert wait_until(lambda: failures)
    assert _reactor_runs_calls(node)  # calls queued after the failure still run
    peer = make_node(listen=[])
    assert peer.dial(p2p_addr(node), timeout=5) == node.peer_id


def test_reactor_survives_a_timer_at_infinity(make_node):
    node = make_node()
    node.reactor.call_soon(lambda: node.reactor.call_later(INF, lambda: None))
    assert _reactor_runs_calls(node)
    assert _reactor_runs_calls(node)  # a select(inf) would have killed the thread
    assert node.reactor.thread.is_alive()


# -- a failed call leaves nothing running --------------------------------------------------
def test_open_stream_interrupted_after_hand_off_resets_the_stream(make_node, monkeypatch):
    import libp2p_stream_sync.dialer as dialer_module

    server = make_node()
    incoming = server.new_control().accept(ECHO)
    client = make_node(listen=[])
    client.dial(p2p_addr(server))

    def interrupted_wait(future, timeout):
        future.result(5)  # the stream is open on both sides...
        raise KeyboardInterrupt  # ... when Ctrl-C reaches the caller

    monkeypatch.setattr(dialer_module, "wait", interrupted_wait)
    with pytest.raises(KeyboardInterrupt):
        client.new_control().open_stream(server.peer_id, ECHO, timeout=5)
    _, remote = incoming.get(timeout=5)
    remote.settimeout(5)
    with pytest.raises(ConnectionResetError):
        remote.read()  # the orphan was reset, not left open and unowned
