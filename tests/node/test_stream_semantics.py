"""What a socket user expects of a stream (issue #11): a failure fails the calls
blocked on it at once, errors say what happened, non-blocking writes are bounded,
and ``flush`` tells when written bytes have left the node."""

from __future__ import annotations

import errno
import inspect
import io
import math
import threading
import time
from typing import NoReturn

import pytest

from libp2p_stream_sync import Stream
from libp2p_stream_sync.server import StreamSocket
from libp2p_stream_sync.stream import SEND_BUFFER_HIGH_WATER

from conftest import p2p_addr, wait_until

PROTOCOL = "/semantics/1.0.0"
#: Far more than the yamux window, the stream's buffer and loopback TCP buffers hold.
BIG = b"x" * (64 << 20)
#: Under the stream's high-water mark (the write returns at once) but over the
#: yamux window of a peer that never reads (part of it stays in the stream).
PARTLY_SENDABLE = b"y" * (400 * 1024)
#: How soon a blocked call must give up after the event that dooms it. The issue
#: asks for 100 ms; the bound is generous for a loaded test machine.
PROMPT = 1.0


@pytest.fixture
def pair(make_node):
    """``make(muxer)`` -> (client node, server node, client stream, accepted stream);
    the server never reads unless a test does."""

    def make(muxer: str = "yamux", **client_kwargs):
        server = make_node(muxers=[muxer])
        client = make_node(listen=[], muxers=[muxer], **client_kwargs)
        incoming = server.new_control().accept(PROTOCOL)
        stream = client.new_control().open_stream(p2p_addr(server), PROTOCOL, timeout=5)
        _, accepted = incoming.get(timeout=5)
        return client, server, stream, accepted

    return make


class Blocked:
    """Runs ``call`` on a thread; records what it returned or raised, and when."""

    def __init__(self, call) -> None:
        self.result: object = None
        self.error: BaseException | None = None
        self.ended_at: float | None = None
        self._thread = threading.Thread(target=self._run, args=(call,), daemon=True)
        self._thread.start()

    def _run(self, call) -> None:
        try:
            self.result = call()
        except BaseException as exc:  # the tests look at it
            self.error = exc
        self.ended_at = time.monotonic()

    def is_blocked(self) -> bool:
        return self._thread.is_alive()

    def outcome(self, timeout: float = 5.0) -> BaseException | None:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "still blocked"
        return self.error

    def ended_within(self, start: float) -> float:
        assert self.ended_at is not None
        return self.ended_at - start


def blocked_writer(stream: Stream) -> Blocked:
    writer = Blocked(lambda: stream.write(BIG))
    time.sleep(0.3)
    assert writer.is_blocked()  # flow control holds it: the peer does not read
    return writer


def blocked_reader(stream: Stream) -> Blocked:
    reader = Blocked(stream.read)
    time.sleep(0.1)
    assert reader.is_blocked()
    return reader


# -- 1. a blocked write never reports success for bytes that were not sent -------------------
@pytest.mark.parametrize("muxer", ["yamux", "mplex"])
def test_blocked_write_raises_when_the_remote_resets(pair, muxer):
    _, _, stream, accepted = pair(muxer)
    writer = blocked_writer(stream)
    start = time.monotonic()
    accepted.reset()
    assert isinstance(writer.outcome(), ConnectionResetError)
    assert writer.ended_within(start) < PROMPT


def test_local_reset_wakes_blocked_writer_and_reader(pair):
    _, _, stream, _ = pair()
    writer = blocked_writer(stream)
    reader = blocked_reader(stream)
    start = time.monotonic()
    stream.reset()
    assert isinstance(writer.outcome(), ConnectionResetError)
    assert isinstance(reader.outcome(), ConnectionResetError)
    assert writer.ended_within(start) < PROMPT and reader.ended_within(start) < PROMPT


def test_blocked_write_raises_when_the_local_node_closes(pair):
    client, _, stream, _ = pair()
    writer = blocked_writer(stream)
    start = time.monotonic()
    closing = threading.Thread(target=client.close)  # lingers: the peer never reads
    closing.start()
    assert isinstance(writer.outcome(), ConnectionAbortedError)
    assert writer.ended_within(start) < PROMPT
    closing.join(10)
    with pytest.raises(ConnectionAbortedError):
        stream.write(b"after the close")


def test_blocked_write_raises_when_the_remote_node_closes(pair):
    _, server, stream, _ = pair()
    writer = blocked_writer(stream)
    start = time.monotonic()
    server.close()
    assert isinstance(writer.outcome(), ConnectionResetError)
    assert writer.ended_within(start) < PROMPT + 0.5  # server.close() itself takes a bit


def test_close_from_another_thread_wakes_blocked_writer_and_reader(pair):
    _, _, stream, _ = pair()
    writer = blocked_writer(stream)
    reader = blocked_reader(stream)
    start = time.monotonic()
    stream.close()
    assert isinstance(writer.outcome(), BrokenPipeError)
    error = reader.outcome()
    assert isinstance(error, OSError) and error.errno == errno.EBADF
    assert writer.ended_within(start) < PROMPT and reader.ended_within(start) < PROMPT


def test_close_write_from_another_thread_wakes_a_blocked_writer(pair):
    _, _, stream, _ = pair()
    writer = blocked_writer(stream)
    start = time.monotonic()
    stream.close_write()
    assert isinstance(writer.outcome(), BrokenPipeError)
    assert writer.ended_within(start) < PROMPT


@pytest.mark.parametrize("closing", ["close_write", "close"])
def test_closing_after_a_failure_that_lost_written_bytes_raises(pair, closing):
    _, _, stream, accepted = pair()
    assert stream.write(PARTLY_SENDABLE) == len(PARTLY_SENDABLE)  # in the node's hands
    time.sleep(0.2)  # the window's worth left; the rest waits for a window update
    accepted.reset()
    time.sleep(0.2)
    with pytest.raises(ConnectionResetError):
        getattr(stream, closing)()
    stream.close()  # reported once; closing again is quiet, as for a socket


def test_closing_after_a_failure_that_lost_nothing_is_quiet(pair):
    _, _, stream, accepted = pair()
    stream.write(b"small")
    time.sleep(0.2)
    accepted.reset()
    time.sleep(0.2)
    stream.close_write()
    stream.close()


def test_flush_waits_until_written_bytes_left_the_node(pair):
    client, server, stream, accepted = pair()
    stream.flush(1)  # nothing written: nothing to wait for
    stream.write(PARTLY_SENDABLE)
    start = time.monotonic()
    with pytest.raises(TimeoutError):  # the peer holds back its window
        stream.flush(0.3)
    assert time.monotonic() - start >= 0.25
    with pytest.raises(BlockingIOError):
        stream.flush(0)
    accepted.settimeout(5)
    reader = Blocked(lambda: accepted.read_exactly(len(PARTLY_SENDABLE)))
    stream.flush(5)
    conn = client.connections(server.peer_id)[0]
    assert conn.bytes_sent >= stream.wire_mark > len(PARTLY_SENDABLE)
    assert reader.outcome() is None and reader.result == PARTLY_SENDABLE


def test_flush_raises_when_the_stream_fails_first(pair):
    _, _, stream, accepted = pair()
    stream.write(PARTLY_SENDABLE)
    flusher = Blocked(lambda: stream.flush(10))
    time.sleep(0.2)
    assert flusher.is_blocked()
    accepted.reset()
    assert isinstance(flusher.outcome(), ConnectionResetError)


def test_bytes_written_before_the_node_closes_still_go_out_and_flush_waits(pair):
    client, _, stream, accepted = pair()
    stream.write(PARTLY_SENDABLE)
    stream.close_write()
    flusher = Blocked(lambda: stream.flush(10))
    closing = threading.Thread(target=client.close)  # lingers while data is queued
    closing.start()
    time.sleep(0.2)
    assert flusher.is_blocked()
    with pytest.raises(ConnectionAbortedError):  # no new writes once closing
        stream.write(b"more")
    accepted.settimeout(5)
    assert accepted.readall() == PARTLY_SENDABLE
    assert flusher.outcome() is None
    closing.join(10)


# -- 2. timeouts ----------------------------------------------------------------------------
@pytest.mark.parametrize("timeout", [math.inf, 1e300])
def test_an_infinite_timeout_means_no_limit(pair, timeout):
    _, _, stream, accepted = pair()
    stream.settimeout(timeout)
    assert stream.gettimeout() is None
    threading.Timer(0.2, accepted.write, args=(b"late",)).start()
    assert stream.read() == b"late"


def test_settimeout_rejects_nan_negative_and_non_numbers(pair):
    _, _, stream, _ = pair()
    with pytest.raises(ValueError):
        stream.settimeout(math.nan)
    with pytest.raises(ValueError):
        stream.settimeout(-1)
    with pytest.raises(TypeError):
        stream.settimeout("1")
    stream.settimeout(0.25)
    assert stream.gettimeout() == 0.25


# -- 3. errors and states that tell the truth -----------------------------------------------
def test_a_read_blocked_when_the_local_node_closes_says_closed_locally(pair):
    client, _, stream, _ = pair()
    reader = blocked_reader(stream)
    client.close()
    assert isinstance(reader.outcome(), ConnectionAbortedError)


def test_read_after_close_raises_ebadf(pair):
    _, _, stream, accepted = pair()
    accepted.write(b"unread")
    assert wait_until(lambda: stream.unread_bytes == 6)
    stream.close()
    with pytest.raises(OSError) as info:
        stream.read()
    assert info.value.errno == errno.EBADF
    with pytest.raises(OSError) as info:
        stream.readinto(bytearray(4))
    assert info.value.errno == errno.EBADF


def test_nonblocking_writes_do_not_queue_without_bound(pair):
    _, _, stream, _ = pair()
    stream.settimeout(0)
    chunk = b"\0" * (1 << 20)
    taken = 0
    with pytest.raises(BlockingIOError):
        for _ in range(256):
            taken += stream.write(chunk)
    assert 0 < taken <= SEND_BUFFER_HIGH_WATER + len(chunk)
    with pytest.raises(BlockingIOError):
        stream.send(chunk)
    raw = stream.makefile("wb", buffering=0)
    assert raw.write(chunk) is None  # RawIOBase: would block


def test_nonblocking_send_takes_only_what_fits(pair):
    _, _, stream, _ = pair()
    stream.settimeout(0)
    chunk = b"\0" * (1 << 20)
    first = stream.send(chunk)
    assert 0 < first <= SEND_BUFFER_HIGH_WATER
    taken = first
    with pytest.raises(BlockingIOError):
        for _ in range(64):
            taken += stream.send(chunk)
    assert taken <= 2 * SEND_BUFFER_HIGH_WATER  # the buffer plus the yamux window


def test_a_nonblocking_raw_file_reads_none_when_no_data_is_there(pair):
    # As socket.SocketIO: RawIOBase.readinto returns None for "would block".
    _, _, stream, accepted = pair()
    stream.settimeout(0)
    raw = stream.makefile("rb", buffering=0)
    assert raw.read(10) is None
    accepted.write(b"hello")
    assert wait_until(lambda: raw.read(10) == b"hello" or False, timeout=5)


def test_a_nonblocking_stream_socket_sends_what_fits(pair):
    _, _, stream, _ = pair()
    sock = StreamSocket(stream)
    sock.setblocking(False)
    chunk = b"\0" * (1 << 20)
    assert 0 < sock.send(chunk) <= SEND_BUFFER_HIGH_WATER
    raw = sock.makefile("wb", buffering=0)
    while raw.write(chunk) is not None:  # short counts until the buffer is full
        pass
    with pytest.raises(BlockingIOError):
        sock.sendall(chunk)


def test_fileno_does_what_it_documents():
    assert inspect.signature(Stream.fileno).return_annotation in (NoReturn, "NoReturn")
    assert "io.UnsupportedOperation" in Stream.fileno.__doc__
    with pytest.raises(io.UnsupportedOperation):
        Stream.fileno(object.__new__(Stream))
