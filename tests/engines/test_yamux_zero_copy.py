"""yamux zero-copy receive: large payloads are views, small ones copies."""

import struct

from libp2p_stream_sync.engines.muxer_events import DataReceived
from libp2p_stream_sync.engines.yamux import YamuxSession


def frame(ftype, flags, sid, length, payload=b""):
    return struct.pack(">BBHII", 0, ftype, flags, sid, length) + payload


def received(session, wire):
    return [e for e in session.receive_data(wire) if isinstance(e, DataReceived)]


def test_large_payloads_are_views_and_small_ones_copies():
    server = YamuxSession(False, zero_copy=True, keepalive_interval=None)
    server.receive_data(frame(1, 1, 1, 0))  # SYN for stream 1
    big = b"B" * 60_000
    wire = frame(0, 0, 1, len(big), big) + frame(0, 0, 1, 10, b"s" * 10)
    events = received(server, wire)
    assert [bytes(e.data) for e in events] == [big, b"s" * 10]
    assert isinstance(events[0].data, memoryview)
    assert type(events[1].data) is bytes  # 10 bytes must not pin a 60 KB buffer


def test_without_zero_copy_everything_is_copied():
    server = YamuxSession(False, keepalive_interval=None)
    server.receive_data(frame(1, 1, 1, 0))
    wire = bytearray(frame(0, 0, 1, 50_000, b"x" * 50_000))
    events = received(server, wire)
    wire[:] = b"\0" * len(wire)  # the caller reuses its buffer
    assert type(events[0].data) is bytes and events[0].data == b"x" * 50_000
