"""Streams between two real nodes over loopback TCP (issue #3)."""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time

import pytest

from libp2p_stream_sync import (AlreadyRegistered, IncompleteReadError, OpenStreamError,
                                PeerId, UnsupportedProtocol)
from libp2p_stream_sync.muxed import MuxedSession

from conftest import EchoServer, connect, p2p_addr, wait_until

MUXERS = ["yamux", "mplex"]


def echo_once(control, peer, payload: bytes, timeout: float = 10) -> bytes:
    stream = control.open_stream(peer, "/echo/1.0.0", timeout=timeout)
    stream.settimeout(timeout)
    stream.write(payload)
    stream.close_write()
    return stream.readall()


@pytest.mark.parametrize("echo_pair", MUXERS, indirect=True)
def test_echo_round_trip(echo_pair):
    client, server, _ = echo_pair
    control = client.new_control()
    assert echo_once(control, server.peer_id, b"hello libp2p") == b"hello libp2p"
    conn_muxers = {c.muxer_protocol for c in client.connections()}
    assert conn_muxers == {client.muxers[0]}


@pytest.mark.parametrize("echo_pair", MUXERS, indirect=True)
def test_64_mib_transfer_with_checksum(echo_pair):
    client, server, echo = echo_pair
    stream = client.new_control().open_stream(server.peer_id, "/echo/1.0.0")
    stream.settimeout(60)
    total = 64 << 20
    sent_hash = hashlib.sha256()
    chunk_source = os.urandom(1 << 20)

    def writer():
        for i in range(total >> 20):
            chunk = chunk_source[i:] + chunk_source[:i]
            sent_hash.update(chunk)
            stream.write(chunk)
        stream.close_write()

    thread = threading.Thread(target=writer)
    thread.start()
    got_hash = hashlib.sha256()
    received = 0
    buf = bytearray(256 * 1024)
    while True:
        n = stream.readinto(buf)
        if not n:
            break
        got_hash.update(memoryview(buf)[:n])
        received += n
    thread.join(30)
    assert received == total
    assert got_hash.digest() == sent_hash.digest()
    assert not echo.errors


@pytest.mark.parametrize("echo_pair", MUXERS, indirect=True)
def test_1000_concurrent_streams_on_one_connection(echo_pair):
    client, server, echo = echo_pair
    control = client.new_control()
    streams = [control.open_stream(server.peer_id, "/echo/1.0.0", timeout=30)
               for _ in range(1000)]
    assert len(client.connections(server.peer_id)) == 1
    for i, stream in enumerate(streams):
        stream.write(i.to_bytes(4, "big") * 16)
        stream.close_write()
    for i, stream in enumerate(streams):
        stream.settimeout(30)
        assert stream.readall() == i.to_bytes(4, "big") * 16
    assert not echo.errors


def test_32_threads_open_streams_through_clones_of_one_control(echo_pair):
    client, server, _ = echo_pair
    control = client.new_control()
    failures = []

    def worker(clone, index):
        try:
            for round_ in range(10):
                payload = f"{index}:{round_}".encode() * 10
                if echo_once(clone, server.peer_id, payload) != payload:
                    failures.append((index, round_))
        except Exception as exc:
            failures.append(exc)

    threads = [threading.Thread(target=worker, args=(control.clone(), i)) for i in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert failures == []
    assert len(client.connections(server.peer_id)) == 1


def test_accept_twice_raises_already_registered(make_node):
    node = make_node()
    control = node.new_control()
    with control.accept("/x/1.0.0"):
        with pytest.raises(AlreadyRegistered):
            control.clone().accept("/x/1.0.0")
    with control.accept("/x/1.0.0"):  # closed registrations can be taken again
        pass


def test_protocol_ids_are_validated(make_node):
    control = make_node().new_control()
    with pytest.raises(ValueError):
        control.accept("no-slash")
    with pytest.raises(ValueError):
        control.open_stream(PeerId.from_string(str(make_node().peer_id)), "bad", timeout=1)


@pytest.mark.parametrize("echo_pair", MUXERS, indirect=True)
def test_unsupported_protocol(echo_pair):
    client, server, _ = echo_pair
    with pytest.raises(UnsupportedProtocol) as info:
        client.new_control().open_stream(server.peer_id, "/nope/1.0.0", timeout=5)
    assert info.value.protocol == "/nope/1.0.0"
    assert isinstance(info.value, OpenStreamError)
    # The connection survives the refusal.
    assert echo_once(client.new_control(), server.peer_id, b"still here") == b"still here"


def test_closing_incoming_deregisters_at_once(make_node):
    server = make_node()
    client = make_node(listen=[])
    incoming = server.new_control().accept("/svc/1.0.0")
    control = client.new_control()
    stream = control.open_stream(p2p_addr(server), "/svc/1.0.0", timeout=5)
    peer, accepted = incoming.get(timeout=5)
    assert peer == client.peer_id
    assert accepted.protocol == "/svc/1.0.0"
    stream.close()
    accepted.close()
    queued = control.open_stream(server.peer_id, "/svc/1.0.0", timeout=5)
    deadline = time.monotonic() + 5
    while incoming._queue.qsize() == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    incoming.close()
    with pytest.raises(UnsupportedProtocol):
        control.open_stream(server.peer_id, "/svc/1.0.0", timeout=5)
    queued.settimeout(5)
    with pytest.raises(ConnectionResetError):  # streams still queued were reset
        queued.read()
    assert list(incoming) == []


def test_full_accept_queue_drops_and_resets(make_node):
    server = make_node()
    client = make_node(listen=[])
    incoming = server.new_control().accept("/slow/1.0.0", capacity=2)
    control = client.new_control()
    streams = [control.open_stream(p2p_addr(server), "/slow/1.0.0", timeout=5)
               for _ in range(5)]
    reset = 0
    for stream in streams:
        stream.settimeout(1)
        try:
            stream.read()
        except ConnectionResetError:
            reset += 1
        except TimeoutError:
            pass
    assert reset == 3
    assert incoming.dropped == 3
    assert incoming._queue.qsize() == 2


def test_incoming_get_times_out_and_iteration_ends_on_node_close(make_node):
    node = make_node()
    incoming = node.new_control().accept("/idle/1.0.0")
    start = time.monotonic()
    with pytest.raises(TimeoutError):
        incoming.get(timeout=0.2)
    assert 0.15 < time.monotonic() - start < 2
    results = []
    thread = threading.Thread(target=lambda: results.append(list(incoming)))
    thread.start()
    time.sleep(0.1)
    node.close()
    thread.join(5)
    assert results == [[]]


def test_open_times_out_against_silent_listener(make_node):
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)
    try:
        client = make_node(listen=[])
        fake_peer = make_node(listen=[]).peer_id
        port = silent.getsockname()[1]
        client.add_address(fake_peer, f"/ip4/127.0.0.1/tcp/{port}")
        start = time.monotonic()
        with pytest.raises(OpenStreamError) as info:
            client.new_control().open_stream(fake_peer, "/echo/1.0.0", timeout=0.5)
        elapsed = time.monotonic() - start
        assert info.value.kind == "timeout"
        assert isinstance(info.value.__cause__, OSError)
        assert 0.4 < elapsed < 2.0
    finally:
        silent.close()


def _divert_inbound(monkeypatch, session, handler) -> None:
    """``session`` hands the streams its remote opens to ``handler`` (sessions have
    ``__slots__``: patch the class, for this one instance)."""
    original = MuxedSession.on_inbound_stream

    def on_inbound_stream(self, sid):
        return handler(sid) if self is session else original(self, sid)
    monkeypatch.setattr(MuxedSession, "on_inbound_stream", on_inbound_stream)


def test_open_times_out_when_remote_never_answers_negotiation(make_node, monkeypatch):
    server = make_node()
    client = make_node(listen=[])
    conn = connect(client, server)
    _divert_inbound(monkeypatch, conn.session, lambda sid: None)  # the server ignores them
    start = time.monotonic()
    with pytest.raises(OpenStreamError) as info:
        client.new_control().open_stream(server.peer_id, "/echo/1.0.0", timeout=0.5)
    assert info.value.kind == "timeout"
    assert time.monotonic() - start < 2.0


def test_dialing_the_wrong_peer_id_fails(make_node):
    server = make_node()
    client = make_node(listen=[])
    impostor = make_node(listen=[]).peer_id
    wrong = f"{server.listen_addrs[0]}/p2p/{impostor}"
    with pytest.raises(OpenStreamError) as info:
        client.new_control().open_stream(wrong, "/echo/1.0.0", timeout=5)
    assert info.value.kind == "wrong-peer"
    assert str(impostor) in str(info.value) and str(server.peer_id) in str(info.value)
    assert client.connected_peers() == []


def test_dial_returns_the_remote_peer_id_and_reuses_the_connection(make_node):
    server = make_node()
    client = make_node(listen=[])
    assert client.dial(p2p_addr(server)) == server.peer_id
    assert client.dial(str(server.listen_addrs[0])) == server.peer_id
    assert client.connected_peers() == [server.peer_id]


def test_no_known_address(make_node):
    client = make_node(listen=[])
    stranger = make_node(listen=[]).peer_id
    with pytest.raises(OpenStreamError) as info:
        client.new_control().open_stream(stranger, "/echo/1.0.0", timeout=1)
    assert info.value.kind == "no-address"


def test_dial_refused(make_node):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    client = make_node(listen=[])
    peer = make_node(listen=[]).peer_id
    with pytest.raises(OpenStreamError) as info:
        client.new_control().open_stream(f"/ip4/127.0.0.1/tcp/{port}/p2p/{peer}",
                                         "/echo/1.0.0", timeout=5)
    assert info.value.kind == "dial"
    assert isinstance(info.value.__cause__, OSError)


def test_stream_semantics(echo_pair):
    client, server, _ = echo_pair
    control = client.new_control()
    stream = control.open_stream(server.peer_id, "/echo/1.0.0")
    assert stream.peer_id == server.peer_id and stream.protocol == "/echo/1.0.0"
    stream.settimeout(0.2)
    with pytest.raises(TimeoutError):
        stream.read()
    stream.settimeout(5)
    stream.sendall(b"abcdef")
    assert stream.read_exactly(6) == b"abcdef"
    stream.send(b"xyz")
    buf = bytearray(10)
    assert stream.recv_into(buf) == 3 and buf[:3] == b"xyz"
    stream.shutdown(socket.SHUT_WR)
    with pytest.raises(BrokenPipeError):
        stream.write(b"late")
    assert stream.recv(10) == b""
    with pytest.raises(IncompleteReadError):
        stream.read_exactly(1)
    stream.close()


def test_makefile_text_round_trip(echo_pair):
    client, server, _ = echo_pair
    stream = client.new_control().open_stream(server.peer_id, "/echo/1.0.0")
    stream.settimeout(5)
    wfile = stream.makefile("w", encoding="utf-8")
    rfile = stream.makefile("r", encoding="utf-8")
    wfile.write("line one\nline two\n")
    wfile.flush()
    assert rfile.readline() == "line one\n"
    assert rfile.readline() == "line two\n"
    stream.close()


def test_remote_reset_raises_connection_reset(make_node):
    server = make_node()
    client = make_node(listen=[])
    incoming = server.new_control().accept("/reset/1.0.0")
    stream = client.new_control().open_stream(p2p_addr(server), "/reset/1.0.0", timeout=5)
    _, accepted = incoming.get(timeout=5)
    accepted.reset()
    stream.settimeout(5)
    with pytest.raises(ConnectionResetError):
        stream.read()
    with pytest.raises(ConnectionResetError):
        stream.write(b"x")


def test_write_blocks_under_back_pressure_then_times_out(make_node):
    server = make_node()
    client = make_node(listen=[])
    incoming = server.new_control().accept("/sink/1.0.0")
    stream = client.new_control().open_stream(p2p_addr(server), "/sink/1.0.0", timeout=5)
    incoming.get(timeout=5)  # accepted, never read
    stream.settimeout(0.5)
    written = 0
    with pytest.raises(TimeoutError):
        for _ in range(64):
            stream.write(b"\0" * (256 * 1024))
            written += 256 * 1024
    # The reader never granted more than its window: the writer stalled early.
    assert written < 8 * 1024 * 1024


def test_node_close_wakes_blocked_threads(make_node):
    server = make_node()
    client = make_node(listen=[])
    incoming = server.new_control().accept("/hold/1.0.0")
    stream = client.new_control().open_stream(p2p_addr(server), "/hold/1.0.0", timeout=5)
    incoming.get(timeout=5)
    outcomes = []

    def blocked_read():
        try:
            stream.read()
            outcomes.append("eof")
        except OSError as exc:
            outcomes.append(type(exc).__name__)

    thread = threading.Thread(target=blocked_read)
    thread.start()
    time.sleep(0.1)
    start = time.monotonic()
    client.close()
    thread.join(5)
    assert not thread.is_alive()
    assert time.monotonic() - start < 2
    assert outcomes and outcomes[0] != "eof"


def test_mplex_unread_stream_is_reset_after_stalling_the_connection(make_node, monkeypatch):
    from libp2p_stream_sync import read_pressure
    monkeypatch.setattr(read_pressure, "CONGESTION_TIMEOUT", 0.5)
    server = make_node(muxers=["mplex"])
    client = make_node(listen=[], muxers=["mplex"])
    echo = EchoServer(server)
    control = client.new_control()
    ignored = control.open_stream(p2p_addr(server), "/echo/1.0.0", timeout=5)
    ignored.write(b"\0" * (3 << 20))  # its echo piles up unread on the client
    time.sleep(0.2)
    # Meanwhile another stream of the same connection still works once the stuck
    # stream has been reset.
    assert echo_once(control, server.peer_id, b"other stream", timeout=10) == b"other stream"
    ignored.settimeout(5)
    with pytest.raises(ConnectionResetError):
        while ignored.read(1 << 20):
            pass
    echo.close()


def test_opens_beyond_the_yamux_ack_backlog_wait_for_acks(make_node, monkeypatch):
    from concurrent.futures import Future
    server = make_node()
    client = make_node(listen=[])
    server_conn = connect(client, server)
    client.wait_identified(server.peer_id)  # its identify stream must not count below
    ignored = []
    _divert_inbound(monkeypatch, server_conn.session, ignored.append)  # never ACKs: backlog fills
    control = client.new_control()
    errors = []

    def opener():
        try:
            control.open_stream(server.peer_id, "/many/1.0.0", timeout=4.0)
        except OpenStreamError as exc:
            errors.append(exc.kind)

    conn = client.connections(server.peer_id)[0]

    def probe_backlog() -> tuple[int, int]:
        probe: Future = Future()
        client.reactor.call_soon(
            lambda: probe.set_result((conn._muxer.outbound_unacked,
                                      len(conn.session.negotiations.deferred))))
        return probe.result(5)

    threads = [threading.Thread(target=opener) for _ in range(300)]
    for t in threads:
        t.start()
    # Under load the 300 threads take a while to reach the reactor: wait for all.
    wait_until(lambda: sum(probe_backlog()) >= 300, timeout=3.5)
    unacked, deferred = probe_backlog()
    for t in threads:
        t.join(10)
    assert (unacked, deferred) == (256, 44)
    assert len(ignored) >= 256  # deferred opens start as timed-out ones are reset
    assert errors == ["timeout"] * 300


@pytest.mark.parametrize("echo_pair", MUXERS, indirect=True)
def test_lazy_open_sends_data_with_the_request(echo_pair):
    client, server, _ = echo_pair
    control = client.new_control()
    for i in range(20):
        stream = control.open_stream(server.peer_id, "/echo/1.0.0", timeout=5, lazy=True)
        stream.settimeout(5)
        stream.write(b"lazy %d" % i)
        stream.close_write()
        assert stream.readall() == b"lazy %d" % i


@pytest.mark.parametrize("echo_pair", MUXERS, indirect=True)
def test_lazy_open_refusal_surfaces_on_the_stream(echo_pair):
    client, server, _ = echo_pair
    stream = client.new_control().open_stream(server.peer_id, "/nope/1.0.0", timeout=5,
                                              lazy=True)
    stream.settimeout(5)
    try:
        stream.write(b"sent before the answer")  # usually accepted: no answer yet
    except UnsupportedProtocol:
        pass  # the refusal was quicker
    with pytest.raises(UnsupportedProtocol) as info:
        stream.read()
    assert info.value.protocol == "/nope/1.0.0"
    with pytest.raises(UnsupportedProtocol):
        stream.write(b"again")
