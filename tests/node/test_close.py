"""Closing keeps the promises made about data already written or received."""

from __future__ import annotations

import threading
import time

import pytest

from libp2p_stream_sync import Limits

from conftest import p2p_addr

PAYLOAD = bytes(range(256)) * 800  # 200 KiB


@pytest.mark.parametrize("muxer", ["yamux", "mplex"])
def test_node_close_delivers_what_was_written(make_node, muxer):
    server = make_node(muxers=[muxer])
    client = make_node(listen=[], muxers=[muxer])
    incoming = server.new_control().accept("/t/1.0.0")

    def serve():
        _, stream = incoming.get(timeout=5)
        stream.read_exactly(5)
        stream.write(PAYLOAD)  # still queued in the stream when the node closes
        stream.close()
        server.close()

    thread = threading.Thread(target=serve)
    thread.start()
    stream = client.new_control().open_stream(p2p_addr(server), "/t/1.0.0", timeout=5)
    stream.settimeout(5)
    stream.write(b"hello")
    assert stream.readall() == PAYLOAD
    thread.join(5)


@pytest.mark.parametrize("muxer", ["yamux", "mplex"])
def test_data_and_end_of_stream_survive_the_connection(make_node, muxer):
    server = make_node(muxers=[muxer])
    client = make_node(listen=[], muxers=[muxer])
    incoming = server.new_control().accept("/t/1.0.0")
    stream = client.new_control().open_stream(p2p_addr(server), "/t/1.0.0", timeout=5)
    _, accepted = incoming.get(timeout=5)
    accepted.write(b"the reply")
    accepted.close()
    time.sleep(0.3)  # reply and FIN have arrived; now the connection goes away
    server.close()
    time.sleep(0.3)
    stream.settimeout(5)
    assert stream.read() == b"the reply"
    assert stream.read() == b""
    with pytest.raises(ConnectionError):
        stream.write(b"too late")


def test_mplex_small_stream_buffer_pushes_back_instead_of_resetting(make_node):
    limits = Limits(max_stream_buffer=256 * 1024)
    server = make_node(muxers=["mplex"], limits=limits)
    client = make_node(listen=[], muxers=["mplex"], limits=limits)
    incoming = server.new_control().accept("/t/1.0.0")
    stream = client.new_control().open_stream(p2p_addr(server), "/t/1.0.0", timeout=5)
    _, accepted = incoming.get(timeout=5)
    writer = threading.Thread(target=lambda: (stream.write(PAYLOAD * 10), stream.close_write()))
    writer.start()
    time.sleep(0.5)  # the reader starts late: the sender must wait, not be reset
    accepted.settimeout(10)
    assert accepted.readall() == PAYLOAD * 10
    writer.join(5)


def test_each_raise_is_a_fresh_exception(make_node):
    server = make_node()
    client = make_node(listen=[])
    incoming = server.new_control().accept("/t/1.0.0")
    stream = client.new_control().open_stream(p2p_addr(server), "/t/1.0.0", timeout=5)
    incoming.get(timeout=5)[1].reset()
    stream.settimeout(5)
    raised = []
    for _ in range(3):
        with pytest.raises(ConnectionResetError) as info:
            stream.read()
        raised.append(info.value)
    assert len({id(e) for e in raised}) == 3


def test_a_closed_stream_the_remote_never_finishes_is_reset(make_node):
    client = make_node(listen=[], limits=Limits(stream_close_timeout=0.3))
    server = make_node()
    incoming = server.new_control().accept("/t/1.0.0")
    stream = client.new_control().open_stream(p2p_addr(server), "/t/1.0.0", timeout=5)
    _, accepted = incoming.get(timeout=5)
    stream.close()  # the server never closes its side
    conn = client.connections(server.peer_id)[0]
    deadline = time.monotonic() + 3
    while conn.session.streams and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not conn.session.streams
    time.sleep(0.2)
    with pytest.raises(ConnectionResetError):  # the server saw the reset
        accepted.write(b"late")
