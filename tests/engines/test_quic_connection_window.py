"""The QUIC engine's connection-wide receive window (MAX_DATA) and its sent-payload
count, sans-IO. aioquic doubles MAX_DATA whenever half of it is used, so a peer could
make us buffer up to ``stream_window`` x streams; ours grants MAX_DATA only as the
application reads (``connection_window``)."""

from __future__ import annotations

import pytest

pytest.importorskip("aioquic")  # the optional extra; tests/engines/test_quic_extra.py

from libp2p_stream_sync.engines.muxer_events import DataReceived  # noqa: E402

from quic_pair import Pair  # noqa: E402

WINDOW = 256 * 1024


def unread(pair: Pair) -> dict[int, int]:
    per_stream: dict[int, int] = {}
    for event in pair.server_events:
        if isinstance(event, DataReceived):
            per_stream[event.stream_id] = per_stream.get(event.stream_id, 0) + len(event.data)
    return per_stream


def test_max_data_grows_only_as_the_application_reads():
    pair = Pair(server_kwargs={"stream_window": WINDOW, "connection_window": WINDOW},
                client_kwargs={"send_buffer": 4 * WINDOW})
    pair.handshake()
    sids = [pair.client.open_stream() for _ in range(8)]
    for _ in range(4):  # 8 streams x 1 MiB offered: 32 x the connection window
        for sid in sids:
            pair.client.send_data(sid, b"q" * (WINDOW // 2))
        pair.run()
    held = unread(pair)
    # Nothing was read: the peer could send one connection window, not 8 stream ones.
    assert sum(held.values()) <= WINDOW
    assert pair.server.max_data_granted <= WINDOW
    for sid, n in held.items():  # the application reads everything
        pair.server.consumed(sid, n)
    pair.server_events.clear()
    pair.run()
    more = sum(unread(pair).values())
    assert 0 < more <= WINDOW
    assert pair.server.max_data_granted <= sum(held.values()) + more + WINDOW


def test_payload_sent_catches_up_with_payload_queued():
    pair = Pair()
    pair.handshake()
    sid = pair.client.open_stream()
    assert pair.client.send_data(sid, b"p" * 100_000) == 100_000
    assert pair.client.payload_queued == 100_000
    assert pair.client.payload_sent == 0  # in aioquic's buffer, not in a packet yet
    pair.run()
    assert pair.client.payload_sent == 100_000
    other = pair.client.open_stream()
    pair.client.send_data(other, b"r" * 5000)
    pair.client.reset_stream(other)  # never sent: counted as done, nobody waits on it
    pair.run()
    assert pair.client.payload_sent == pair.client.payload_queued
