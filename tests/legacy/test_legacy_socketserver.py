"""StreamServer: stock socketserver request handlers served over libp2p streams (#8)."""

from __future__ import annotations

import socket
import socketserver
import threading
import time

import pytest

from libp2p_stream_sync import AlreadyRegistered, Stream
from libp2p_stream_sync.server import StreamServer, StreamSocket

from legacy_support import no_thread_left, p2p_addr, pair, run_threads, serving, wait_for  # noqa: F401

PROTO = "/legacy/echo/1.0.0"


class UpperEcho(socketserver.StreamRequestHandler):
    """A plain socketserver handler, written for TCP: nothing libp2p-specific in it."""

    def handle(self):
        self.server.seen.append((self.client_address, self.request, self.server))
        for line in self.rfile:
            self.wfile.write(line.upper())


class RecordingServer(StreamServer):
    def __init__(self, *args, **kwargs):
        self.seen = []
        self.errors = []
        super().__init__(*args, **kwargs)

    def handle_error(self, request, client_address):
        import sys
        self.errors.append((client_address, sys.exc_info()[1]))


def talk(control, peer, lines: list[bytes], timeout: float = 10.0) -> bytes:
    stream = control.open_stream(peer, PROTO, timeout=timeout)
    stream.settimeout(timeout)
    for line in lines:
        stream.write(line)
    stream.close_write()
    data = stream.readall()
    stream.close()
    return data


def test_unmodified_stream_request_handler_with_16_concurrent_clients(pair):
    server_node, client_node, control = pair
    with RecordingServer(server_node, PROTO, UpperEcho, max_workers=16) as server, \
            serving(server):
        def client(i):
            lines = [f"client {i} line {j}\n".encode() for j in range(20)]
            return talk(control, server_node.peer_id, lines), b"".join(lines).upper()

        for got, want in run_threads(client, 16):
            assert got == want
        assert len(server.seen) == 16
        for client_address, request, srv in server.seen:
            assert client_address == (str(client_node.peer_id), 0)
            assert isinstance(request, StreamSocket)
            assert isinstance(request.stream, Stream)
            assert request.peer_id == client_node.peer_id
            assert request.protocol == PROTO
            assert request.getpeername() == client_address
            assert srv is server
        assert server.errors == []
        assert server.dropped == 0


def test_buffered_wfile_nagle_and_timeout_settings(pair):
    """disable_nagle_algorithm (setsockopt), timeout (settimeout), wbufsize != 0."""
    server_node, _client_node, control = pair
    timeouts = []

    class Buffered(socketserver.StreamRequestHandler):
        disable_nagle_algorithm = True
        wbufsize = 1 << 16
        timeout = 0.3

        def handle(self):
            timeouts.append(self.connection.gettimeout())
            line = self.rfile.readline()
            self.wfile.write(b"got " + line)
            self.wfile.flush()
            self.rfile.readline()  # the client stays silent: times out

    with RecordingServer(server_node, PROTO, Buffered) as server, serving(server):
        stream = control.open_stream(server_node.peer_id, PROTO)
        stream.settimeout(5)
        stream.write(b"ping\n")
        assert stream.read_exactly(9) == b"got ping\n"
        # The handler's read times out; socketserver's handle_error path runs and the
        # stream is shut down (EOF for us).
        assert stream.read() == b""
        assert wait_for(lambda: len(server.errors) == 1)
        assert isinstance(server.errors[0][1], TimeoutError)
        stream.close()
    assert timeouts == [0.3]


def test_worker_bound_holds_and_excess_streams_wait(pair):
    server_node, _client_node, control = pair
    lock = threading.Lock()
    running = [0]
    peak = [0]

    class Slow(socketserver.StreamRequestHandler):
        def handle(self):
            with lock:
                running[0] += 1
                peak[0] = max(peak[0], running[0])
            try:
                data = self.rfile.readline()
                time.sleep(0.05)
                self.wfile.write(data)
            finally:
                with lock:
                    running[0] -= 1

    samples = []
    with RecordingServer(server_node, PROTO, Slow, max_workers=3) as server, serving(server):
        stop = threading.Event()

        def sampler():
            while not stop.is_set():
                samples.append(server.active_workers)
                time.sleep(0.005)

        sampling = threading.Thread(target=sampler)
        sampling.start()
        try:
            results = run_threads(
                lambda i: talk(control, server_node.peer_id, [b"n%d\n" % i]), 12)
        finally:
            stop.set()
            sampling.join()
        assert results == [b"n%d\n" % i for i in range(12)]
        assert server.dropped == 0  # the 9 excess streams waited in the queue
    assert peak[0] == 3
    assert max(samples) <= 3


def test_streams_beyond_the_queue_are_reset_and_counted(pair):
    server_node, _client_node, control = pair
    started = threading.Event()
    release = threading.Event()
    order = []

    class Gate(socketserver.StreamRequestHandler):
        def handle(self):
            line = self.rfile.readline()
            order.append(line)
            started.set()
            release.wait(10)
            self.wfile.write(b"done " + line)

    with RecordingServer(server_node, PROTO, Gate, max_workers=1,
                         request_queue_size=2) as server, serving(server):
        first = control.open_stream(server_node.peer_id, PROTO)
        first.write(b"1\n")
        assert started.wait(5)  # the only worker is busy with stream 1
        queued = []
        for i in (2, 3):  # these fit in the accept queue and wait there
            s = control.open_stream(server_node.peer_id, PROTO)
            s.write(b"%d\n" % i)
            queued.append(s)
        excess = control.open_stream(server_node.peer_id, PROTO)
        excess.settimeout(5)
        with pytest.raises(ConnectionResetError):
            excess.write(b"4\n")
            excess.read()
        assert wait_for(lambda: server.dropped == 1)
        assert order == [b"1\n"]  # nothing else started while the worker was busy
        release.set()
        for s, want in zip([first] + queued, [b"done 1\n", b"done 2\n", b"done 3\n"]):
            s.settimeout(5)
            assert s.readall() == want
            s.close()
        assert order == [b"1\n", b"2\n", b"3\n"]  # served in arrival order
        assert server.dropped == 1


def test_server_close_resets_queued_streams(pair):
    server_node, _client_node, control = pair
    started = threading.Event()
    release = threading.Event()

    class Block(socketserver.BaseRequestHandler):
        def handle(self):
            started.set()
            release.wait(10)

    server = RecordingServer(server_node, PROTO, Block, max_workers=1)
    thread = threading.Thread(target=server.serve_forever, args=(0.02,))
    thread.start()
    try:
        busy = control.open_stream(server_node.peer_id, PROTO)
        assert started.wait(5)
        waiting = control.open_stream(server_node.peer_id, PROTO)
        waiting.settimeout(5)
        time.sleep(0.1)  # let it reach the queue
        release.set()
        server.shutdown()
        thread.join(5)
        server.server_close()
        # The handler of `busy` finished normally: FIN. `waiting` was never taken.
        busy.settimeout(5)
        assert busy.read() == b""
        with pytest.raises(ConnectionResetError):
            waiting.read()
    finally:
        release.set()
        server.shutdown()
        thread.join(5)
        server.server_close()


def test_server_close_resets_handlers_that_do_not_finish(pair):
    server_node, _client_node, control = pair
    entered = threading.Event()

    class Stuck(socketserver.StreamRequestHandler):
        def handle(self):
            entered.set()
            self.rfile.read()  # the client never sends EOF

    server = RecordingServer(server_node, PROTO, Stuck)
    server.close_timeout = 0.2
    with serving(server):
        stream = control.open_stream(server_node.peer_id, PROTO)
        stream.settimeout(5)
        assert entered.wait(5)
        server.shutdown()
        began = time.monotonic()
        server.server_close()
        assert time.monotonic() - began < 3
        assert server.active_workers == 0
        with pytest.raises(ConnectionResetError):
            stream.read()
    assert server.errors == []  # the forced reset is not reported as a handler error


def test_verify_request_false_closes_the_stream_without_a_handler(pair):
    server_node, _client_node, control = pair
    handled = []

    class Refusing(RecordingServer):
        def verify_request(self, request, client_address):
            return False

    class H(socketserver.BaseRequestHandler):
        def handle(self):
            handled.append(1)

    with Refusing(server_node, PROTO, H) as server, serving(server):
        stream = control.open_stream(server_node.peer_id, PROTO)
        stream.settimeout(5)
        assert stream.read() == b""
        assert wait_for(lambda: server.active_workers == 0)
    assert handled == []


def test_handler_exception_goes_to_handle_error_and_serving_continues(pair):
    server_node, client_node, control = pair

    class Faulty(socketserver.StreamRequestHandler):
        def handle(self):
            if self.rfile.readline() == b"boom\n":
                raise ValueError("boom")
            self.wfile.write(b"fine\n")

    with RecordingServer(server_node, PROTO, Faulty) as server, serving(server):
        assert talk(control, server_node.peer_id, [b"boom\n"]) == b""
        assert talk(control, server_node.peer_id, [b"ok\n"]) == b"fine\n"
        assert len(server.errors) == 1
        address, exc = server.errors[0]
        assert address == (str(client_node.peer_id), 0)
        assert isinstance(exc, ValueError)


def test_default_handle_error_prints_like_socketserver(pair, capsys):
    server_node, _client_node, control = pair

    class Faulty(socketserver.BaseRequestHandler):
        def handle(self):
            raise RuntimeError("printed")

    with StreamServer(server_node, PROTO, Faulty) as server, serving(server):
        assert talk(control, server_node.peer_id, []) == b""
        assert wait_for(lambda: server.active_workers == 0)
    err = capsys.readouterr().err
    assert "Exception occurred during processing of request from" in err
    assert "RuntimeError: printed" in err


def test_handler_may_call_shutdown(pair):
    server_node, _client_node, control = pair

    class Stopper(socketserver.StreamRequestHandler):
        def handle(self):
            self.wfile.write(b"bye\n")
            self.server.shutdown()

    server = StreamServer(server_node, PROTO, Stopper)
    thread = threading.Thread(target=server.serve_forever, args=(0.02,))
    thread.start()
    try:
        assert talk(control, server_node.peer_id, []) == b"bye\n"
        thread.join(5)
        assert not thread.is_alive()
    finally:
        server.shutdown()
        thread.join(5)
        server.server_close()


def test_handle_request_and_handle_timeout(pair):
    server_node, _client_node, control = pair
    timeouts = []

    class Timed(RecordingServer):
        timeout = 0.05

        def handle_timeout(self):
            timeouts.append(1)

    with Timed(server_node, PROTO, UpperEcho) as server:
        server.handle_request()
        assert timeouts == [1]
        stream = control.open_stream(server_node.peer_id, PROTO)
        stream.settimeout(5)
        server.timeout = 5
        server.handle_request()
        stream.write(b"abc\n")
        stream.close_write()
        assert stream.readall() == b"ABC\n"
        assert timeouts == [1]


def test_serve_forever_returns_on_server_close_and_protocol_is_released(pair):
    server_node, _client_node, control = pair
    server = RecordingServer(server_node, PROTO, UpperEcho)
    with pytest.raises(AlreadyRegistered):
        RecordingServer(server_node, PROTO, UpperEcho)
    thread = threading.Thread(target=server.serve_forever, args=(10,))  # long poll
    thread.start()
    began = time.monotonic()
    server.server_close()
    thread.join(5)
    assert not thread.is_alive()
    assert time.monotonic() - began < 3
    server.shutdown()  # not serving any more: returns at once
    server.server_close()  # idempotent
    # The protocol is free again, and a new server serves it.
    with RecordingServer(server_node, PROTO, UpperEcho) as again, serving(again):
        assert talk(control, server_node.peer_id, [b"x\n"]) == b"X\n"


def test_shutdown_without_serve_forever_returns():
    class FakeNode:
        peer_id = "fake"

        def new_control(self):
            return None

    server = StreamServer(FakeNode(), PROTO, UpperEcho, bind_and_activate=False)
    server.shutdown()
    server.server_close()
    with pytest.raises(ValueError):
        StreamServer(FakeNode(), PROTO, UpperEcho, bind_and_activate=False, max_workers=0)


def test_stream_socket_close_waits_for_makefile_files(pair):
    """As with a socket, close() leaves the stream open while a makefile() file is."""
    server_node, _client_node, control = pair
    with server_node.new_control().accept(PROTO) as incoming:
        stream = control.open_stream(server_node.peer_id, PROTO)
        _peer, remote = incoming.get(5)
        remote.settimeout(5)
        sock = StreamSocket(stream)
        sock.settimeout(5)
        rfile = sock.makefile("rb")
        sock.close()
        assert sock.closed and not stream.closed
        remote.write(b"still readable\n")
        assert rfile.readline() == b"still readable\n"
        sock.sendall(b"and writable")  # the stream is open until rfile closes
        rfile.close()
        # Now the stream is closed: the remote sees our data, then EOF.
        assert remote.readall() == b"and writable"
        with pytest.raises(OSError):
            sock.makefile("rb")
        assert sock.getpeername() == (str(stream.peer_id), 0)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with pytest.raises(OSError):
            sock.fileno()
        remote.close()


def test_shutdown_and_close_are_prompt_while_all_workers_are_busy(pair):
    """The serve loop waiting for a free worker wakes for shutdown/server_close."""
    server_node, _client_node, control = pair
    entered = threading.Event()
    release = threading.Event()

    class Busy(socketserver.BaseRequestHandler):
        def handle(self):
            entered.set()
            release.wait(10)

    server = RecordingServer(server_node, PROTO, Busy, max_workers=1)
    thread = threading.Thread(target=server.serve_forever, args=(30,))  # very long poll
    thread.start()
    try:
        stream = control.open_stream(server_node.peer_id, PROTO)
        assert entered.wait(5)
        began = time.monotonic()
        server.shutdown()
        assert time.monotonic() - began < 2
        thread.join(5)
        assert not thread.is_alive()
        release.set()
        server.server_close()
        stream.settimeout(5)
        assert stream.read() == b""
    finally:
        release.set()
        server.shutdown()
        thread.join(5)
        server.server_close()


def test_shutdown_before_serve_forever_starts_is_not_lost(pair):
    server_node, _client_node, _control = pair
    with RecordingServer(server_node, PROTO, UpperEcho) as server:
        server.shutdown()
        began = time.monotonic()
        server.serve_forever(poll_interval=30)
        assert time.monotonic() - began < 2
