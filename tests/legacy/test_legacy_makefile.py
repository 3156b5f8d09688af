"""Stream.makefile (and StreamSocket.makefile) under io.BufferedReader / io.TextIOWrapper."""

from __future__ import annotations

import io

import pytest

from libp2p_stream_sync.server import StreamSocket

from legacy_support import no_thread_left, pair  # noqa: F401

PROTO = "/legacy/file/1.0.0"


@pytest.fixture
def streams(pair):
    """(local stream, remote stream) connected through two nodes."""
    server_node, _client_node, control = pair
    with server_node.new_control().accept(PROTO) as incoming:
        local = control.open_stream(server_node.peer_id, PROTO)
        _peer, remote = incoming.get(5)
        local.settimeout(5)
        remote.settimeout(5)
        yield local, remote
        local.close()
        remote.close()


MAKERS = {
    "Stream.makefile": lambda stream: stream,
    "StreamSocket.makefile": lambda stream: StreamSocket(stream),
}


@pytest.fixture(params=sorted(MAKERS))
def maker(request):
    return MAKERS[request.param]


def test_buffered_reader_readline_peek_and_read(streams, maker):
    local, remote = streams
    remote.write(b"first line\nsecond")
    remote.write(b" line\nrest of it")
    remote.close_write()
    f = maker(local).makefile("rb")
    assert isinstance(f, io.BufferedReader)
    assert f.readline() == b"first line\n"
    assert f.peek(1)[:1] == b"s"
    assert f.readline() == b"second line\n"
    assert f.read(4) == b"rest"
    assert f.read() == b" of it"
    assert f.read() == b""
    f.close()


def test_raw_file_wrapped_by_hand(streams):
    """makefile('rb', 0) gives a RawIOBase that io.BufferedReader/TextIOWrapper accept."""
    local, remote = streams
    raw = local.makefile("rb", buffering=0)
    assert isinstance(raw, io.RawIOBase) and raw.readable()
    text = io.TextIOWrapper(io.BufferedReader(raw, 16), encoding="utf-8", newline="")
    remote.write("zürich\r\n".encode())
    remote.write("née\n".encode()[:2])  # a UTF-8 sequence split across frames
    remote.write("née\n".encode()[2:])
    remote.close_write()
    assert list(text) == ["zürich\r\n", "née\n"]


def test_text_reader_decodes_split_utf8_and_iterates_lines(streams, maker):
    local, remote = streams
    payload = "αβγ line one\nδ line two\n€ three".encode("utf-8")
    for i in range(len(payload)):  # one byte per write: every sequence split
        remote.write(payload[i:i + 1])
    remote.close_write()
    f = maker(local).makefile("r", encoding="utf-8")
    assert isinstance(f, io.TextIOWrapper)
    assert list(f) == ["αβγ line one\n", "δ line two\n", "€ three"]


def test_text_writer_and_buffered_writer(streams, maker):
    local, remote = streams
    w = maker(local).makefile("w", encoding="utf-8", newline="\r\n")
    w.write("héllo\nworld\n")
    w.flush()
    assert remote.read_exactly(len("héllo\r\nworld\r\n".encode())) == "héllo\r\nworld\r\n".encode()
    bw = maker(local).makefile("wb", buffering=8)
    assert isinstance(bw, io.BufferedWriter)
    bw.write(b"0123456789abcdef")
    bw.flush()
    assert remote.read_exactly(16) == b"0123456789abcdef"
    bw.close()
    w.close()


def test_read_write_pair(streams, maker):
    local, remote = streams
    f = maker(local).makefile("rwb")
    f.write(b"ping\n")
    f.flush()
    assert remote.read_exactly(5) == b"ping\n"
    remote.write(b"pong\n")
    assert f.readline() == b"pong\n"


def test_timeouts_surface_through_the_file_layers(streams, maker):
    local, _remote = streams
    local.settimeout(0.05)
    f = maker(local).makefile("r", encoding="ascii")
    with pytest.raises(TimeoutError):
        f.readline()


def test_reset_surfaces_as_connection_reset(streams, maker):
    local, remote = streams
    f = maker(local).makefile("rb")
    remote.reset()
    with pytest.raises(ConnectionResetError):
        f.read()


def test_bad_modes_are_refused(streams, maker):
    local, _remote = streams
    for mode in ("a", "r+", "x"):
        with pytest.raises(ValueError):
            maker(local).makefile(mode)
    with pytest.raises(ValueError):
        maker(local).makefile("r", buffering=0)
