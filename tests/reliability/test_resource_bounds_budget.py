"""Unread stream data is bounded per peer across its connections, and node-wide across
peers (issue #12: "a bound per connection and per peer, and a node-wide bound").

Each attacking connection stays under its own bound (``max_connection_buffer``); only
the peer's share (``max_peer_buffer``) or the node's (``max_node_buffer``) stops it.
"""

from __future__ import annotations

import time

import pytest

from libp2p_stream_sync import Keypair, read_pressure
from libp2p_stream_sync.engines.multistream import MultistreamDialer
from libp2p_stream_sync.limits import Limits

from bounds_helpers import SINK, HonestLoop, PeakSampler, held_by, honest_round, payload
from reliability_helpers import guarded, make_node  # noqa: F401 (fixtures)
from reliability_helpers import YamuxClient, wait_until

pytestmark = pytest.mark.timeout(60)

MIB = 1 << 20
#: What one connection may still add after the bound was crossed: the read in
#: progress (the node reads at most 256 KiB at a time) and frames in flight.
OVERSHOOT = MIB // 2
LIMITS = Limits(handshake_timeout=0.5, max_stream_buffer=MIB, max_connection_buffer=4 * MIB,
                max_peer_buffer=5 * MIB, max_node_buffer=8 * MIB)


def _flood(c: YamuxClient, streams: int, size: int) -> None:
    """Open ``streams`` streams to the sink, each sending ``size`` bytes nobody reads,
    until the node stops reading this connection."""
    proposal = MultistreamDialer([SINK], lazy=True).data_to_send()
    data = payload(size)
    c.sock.settimeout(0.3)
    for _ in range(streams):
        sid = c.session.open_stream()
        c.session.send_data(sid, proposal + data)
        try:
            if not c.flush():
                return
        except (TimeoutError, OSError):
            return  # the node stopped reading us


def _recovered(g) -> None:
    assert wait_until(lambda: sum(held_by(g.server).values()) < 64 * 1024, 10), \
        held_by(g.server)
    assert honest_round(g) < 2.0


def test_one_peer_is_bounded_across_its_connections(guarded, monkeypatch):
    """Three connections of one identity, each 3 MiB (under its own 4 MiB bound):
    the peer's share (5 MiB) stops them; another peer keeps echoing meanwhile."""
    monkeypatch.setattr(read_pressure, "CONGESTION_TIMEOUT", 1.0)
    g = guarded(LIMITS)
    g.sink = g.server.new_control().accept(SINK, capacity=1024)
    identity = Keypair.generate()
    honest = HonestLoop(g)
    sampler = PeakSampler(g.server)
    clients = [YamuxClient(g.server, keypair=identity) for _ in range(3)]
    for c in clients:
        _flood(c, 12, 250 * 1024)  # 3 MB per connection
    time.sleep(0.3)
    peak = sampler.stop()
    times = honest.stop()
    assert peak["unread"] <= LIMITS.max_peer_buffer + 3 * OVERSHOOT, \
        f"{peak['unread'] >> 10} KiB unread held for one peer"
    assert max(times) < 2.0, times
    for c in clients:
        c.close()
    _recovered(g)


def test_many_peers_are_bounded_node_wide(guarded, monkeypatch):
    """Six peers, one connection each, 3 MiB each (under their own 5 MiB share): the
    node's bound (8 MiB) stops them; once they are stuck, their largest holders are
    reset and reading goes on."""
    monkeypatch.setattr(read_pressure, "CONGESTION_TIMEOUT", 1.0)
    g = guarded(LIMITS)
    g.sink = g.server.new_control().accept(SINK, capacity=1024)
    sampler = PeakSampler(g.server)
    clients = [YamuxClient(g.server) for _ in range(6)]
    for c in clients:
        _flood(c, 12, 250 * 1024)
    time.sleep(0.3)
    peak = sampler.stop()
    assert peak["unread"] <= LIMITS.max_node_buffer + 6 * OVERSHOOT, \
        f"{peak['unread'] >> 10} KiB unread held node-wide"
    # An honest round may wait for the stuck attackers' largest holders to be reset
    # (the shortened congestion timeout), but it gets through.
    assert honest_round(g) < 1.0 + 3.0
    for c in clients:
        c.close()
    _recovered(g)


STREAM_LIMITS = Limits(handshake_timeout=0.5, max_inbound_streams_per_peer=40,
                       max_inbound_streams=100)


def _negotiating(node) -> int:
    return sum(c.stream_counts()["negotiating"] for c in node.connections())


def test_inbound_streams_are_bounded_per_peer_across_connections(guarded):
    """One identity opens 60 silent streams on each of two connections: the node holds
    at most 40 for it (not 2 x 60); another peer's echoes go on; all is released when
    the attacker leaves."""
    g = guarded(STREAM_LIMITS)
    identity = Keypair.generate()
    clients = [YamuxClient(g.server, keypair=identity) for _ in range(2)]
    for c in clients:
        for _ in range(60):
            c.session.open_stream()  # a SYN, then nothing: no protocol proposed
        assert c.flush()
    assert wait_until(lambda: _negotiating(g.server) >= 40, 5)
    time.sleep(0.3)
    # (+1 per connection: the node's own identify request, which the attacker ignores)
    assert _negotiating(g.server) <= STREAM_LIMITS.max_inbound_streams_per_peer + 2
    assert honest_round(g) < 2.0
    for c in clients:
        c.close()
    assert wait_until(lambda: _negotiating(g.server) == 0, 5)
    assert honest_round(g) < 2.0
