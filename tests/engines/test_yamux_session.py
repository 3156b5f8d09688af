"""Two yamux sessions talking through in-memory pipes."""

import random

import pytest
from hypothesis import given, settings, strategies as st

from libp2p_stream_sync.engines.muxer_events import (
    DataReceived, SendWindowUpdated, StreamEnded, StreamOpened, StreamReset,
)
from libp2p_stream_sync.engines.yamux import YamuxSession

KIB = 1024
MIB = 1024 * KIB


class Peer:
    """One session plus what a connection layer would keep: received bytes, writes
    the window has not taken yet, and every event."""

    def __init__(self, session):
        self.s = session
        self.received = {}       # sid -> bytearray
        self.pending = {}        # sid -> bytes not yet taken by send_data
        self.close_after = set()  # close once pending is flushed
        self.events = []

    def write(self, sid, payload, close=False):
        self.pending[sid] = self.pending.get(sid, b"") + payload
        if close:
            self.close_after.add(sid)
        self.flush(sid)

    def flush(self, sid):
        buf = self.pending.get(sid, b"")
        if buf:
            taken = self.s.send_data(sid, buf)
            buf = buf[taken:]
            self.pending[sid] = buf
        if not buf and sid in self.close_after:
            self.close_after.discard(sid)
            self.pending.pop(sid, None)
            self.s.close_stream(sid)

    def handle(self, events, now, consume=True):
        for e in events:
            self.events.append(e)
            if type(e) is DataReceived:
                self.received.setdefault(e.stream_id, bytearray()).extend(e.data)
                if consume:
                    self.s.consumed(e.stream_id, len(e.data), now)
            elif type(e) is SendWindowUpdated:
                self.flush(e.stream_id)
            elif type(e) is StreamReset:
                self.pending.pop(e.stream_id, None)
                self.close_after.discard(e.stream_id)


def make_pair(**kw):
    kw.setdefault("keepalive_interval", None)
    return Peer(YamuxSession(True, **kw)), Peer(YamuxSession(False, **kw))


def pump(a, b, now=0.0, chunk=None, tick=0.0, max_rounds=100000):
    """Move bytes both ways until both queues are empty. ``chunk`` splits the wire
    into pieces of that size; ``tick`` advances the clock each round."""
    for _ in range(max_rounds):
        moved = False
        for src, dst in ((a, b), (b, a)):
            wire = bytes(src.s.data_to_send())
            if not wire:
                continue
            moved = True
            step = chunk or len(wire)
            for i in range(0, len(wire), step):
                dst.handle(dst.s.receive_data(wire[i:i + step], now), now)
        if not moved:
            return now
        now += tick
    raise AssertionError("pump did not settle")


@pytest.mark.parametrize("opener_is_client", [True, False])
def test_open_exchange_and_half_close_both_ways(opener_is_client):
    client, server = make_pair()
    opener, acceptor = (client, server) if opener_is_client else (server, client)
    pump(client, server)
    sid = opener.s.open_stream()
    assert sid % 2 == (1 if opener_is_client else 0)
    opener.write(sid, b"request", close=True)
    pump(client, server)
    assert acceptor.events == [StreamOpened(sid), DataReceived(sid, b"request"),
                               StreamEnded(sid)]
    assert acceptor.s.stream_count == 1  # only half closed
    acceptor.write(sid, b"response part 1, ")
    pump(client, server)
    acceptor.write(sid, b"part 2", close=True)
    pump(client, server)
    assert bytes(opener.received[sid]) == b"response part 1, part 2"
    assert opener.events[-1] == StreamEnded(sid)
    assert client.s.stream_count == server.s.stream_count == 0


def test_reset_reaches_the_other_side_and_late_frames_are_dropped():
    client, server = make_pair()
    sid = client.s.open_stream()
    client.write(sid, b"x" * 1000)
    pump(client, server)
    server.s.send_data(sid, b"crossing the reset")
    client.s.reset_stream(sid)
    pump(client, server)
    assert server.events[-1] == StreamReset(sid)
    assert StreamReset(sid) not in client.events
    assert sid not in client.received  # late data for the reset stream was dropped
    assert client.s.stream_count == server.s.stream_count == 0
    assert not client.s.is_terminated and not server.s.is_terminated


@pytest.mark.parametrize("chunk", [None, 1000, 65535])
def test_large_transfer_grows_the_window(chunk):
    client, server = make_pair()
    pump(client, server, now=0.0, tick=0.001)  # RTT probes answered
    assert client.s.rtt is not None and server.s.rtt is not None
    rng = random.Random(chunk)
    payload = rng.randbytes(12 * MIB)
    sid = client.s.open_stream()
    client.write(sid, payload, close=True)
    pump(client, server, now=0.01, chunk=chunk, tick=0.0001)
    assert bytes(server.received[sid]) == payload
    assert server.events[-1] == StreamEnded(sid)
    # A fast reader made the receive window grow beyond the 256 KiB default.
    updates = [e for e in client.events if type(e) is SendWindowUpdated]
    assert len(updates) < 12 * MIB // (128 * KIB)
    assert server.s._streams[sid].window > 256 * KIB


def test_slow_reader_keeps_back_pressure():
    client, server = make_pair()
    sid = client.s.open_stream()
    client.write(sid, bytes(5 * MIB))
    # The server reads nothing: only the default window crosses the wire.
    for _ in range(3):
        wire = client.s.data_to_send()
        server.handle(server.s.receive_data(wire), 0.0, consume=False)
        client.handle(client.s.receive_data(server.s.data_to_send()), 0.0)
    assert len(server.received[sid]) == 256 * KIB
    assert client.s.send_window(sid) == 0
    assert len(client.pending[sid]) == 5 * MIB - 256 * KIB


def test_thousands_of_streams_leave_no_state_behind():
    client, server = make_pair()
    rng = random.Random(7)
    expected = {}
    for batch in range(15):  # batches of 200 keep the ACK backlog under 256
        sids = []
        for i in range(200):
            opener, other = (client, server) if i % 2 else (server, client)
            sid = opener.s.open_stream()
            sids.append((opener, other, sid))
            expected[sid] = rng.randbytes(rng.randrange(0, 300))
            opener.write(sid, expected[sid], close=True)
        pump(client, server)
        for opener, other, sid in sids:
            if sid % 7 == 0:
                other.s.reset_stream(sid)
            else:
                other.write(sid, expected[sid][::-1], close=True)
        pump(client, server)
        for opener, other, sid in sids:
            assert bytes(other.received.get(sid, b"")) == expected[sid]
            if sid % 7:
                assert bytes(opener.received.get(sid, b"")) == expected[sid][::-1]
                assert opener.events.count(StreamEnded(sid)) == 1
            else:
                assert StreamReset(sid) in opener.events
    assert len(expected) == 3000
    for peer in (client, server):
        s = peer.s
        assert s._streams == {} and s.stream_count == 0
        assert s._pending_inbound == 0 and s._outbound_unacked == 0
        assert not s.is_terminated


def test_more_than_256_unacknowledged_streams_are_reset():
    client, server = make_pair()
    sids = [client.s.open_stream() for _ in range(300)]
    pump(client, server)
    opened = [e.stream_id for e in server.events if type(e) is StreamOpened]
    assert opened == sids[:256]
    resets = [e.stream_id for e in client.events if type(e) is StreamReset]
    assert resets == sids[256:]
    assert client.s.stream_count == server.s.stream_count == 256


def test_ping_between_sessions():
    client, server = make_pair()
    client.s.ping(99)
    pump(client, server)
    assert client.events[-1].opaque == 99


# ------------------------------------------------------------------ property

_ops = st.lists(
    st.one_of(
        st.tuples(st.just("open"), st.booleans()),
        st.tuples(st.just("write"), st.booleans(), st.integers(0, 20),
                  st.integers(0, 70000)),
        st.tuples(st.just("close"), st.booleans(), st.integers(0, 20)),
        st.tuples(st.just("deliver"), st.booleans(), st.integers(1, 100000)),
    ),
    max_size=40)


@settings(max_examples=60, deadline=None)
@given(_ops, st.integers(0, 2**32 - 1))
def test_random_operations_deliver_every_byte_in_order(ops, seed):
    client, server = make_pair()
    rng = random.Random(seed)
    peers = {True: client, False: server}
    wires = {True: bytearray(), False: bytearray()}  # bytes in flight from that side
    opened = []       # (opener side, sid)
    sent = {}         # (side, sid) -> bytes written
    closed = set()    # (side, sid)
    now = 0.0

    def deliver(side, n):
        wires[side] += peers[side].s.data_to_send()
        piece, wires[side][:] = bytes(wires[side][:n]), wires[side][n:]
        if piece:
            dst = peers[not side]
            dst.handle(dst.s.receive_data(piece, now), now)

    for op in ops:
        now += 0.001
        kind, side = op[0], op[1]
        peer = peers[side]
        if kind == "open" and len(opened) < 20:
            opened.append((side, peer.s.open_stream()))
        elif kind in ("write", "close") and opened:
            _, sid = opened[op[2] % len(opened)]
            if (side, sid) in closed or sid not in peer.s._streams:
                continue  # the other side may not have seen the SYN yet
            if kind == "write":
                body = rng.randbytes(op[3])
                sent[(side, sid)] = sent.get((side, sid), b"") + body
                peer.write(sid, body)
            else:
                closed.add((side, sid))
                peer.write(sid, b"", close=True)
        elif kind == "deliver":
            deliver(side, op[2])
    for side in (True, False):
        deliver(side, len(wires[side]) + (1 << 40))
    pump(client, server, now=now)
    for (side, sid), body in sent.items():
        assert bytes(peers[not side].received.get(sid, b"")) == body
    for side, sid in closed:
        assert StreamEnded(sid) in peers[not side].events
    assert not client.s.is_terminated and not server.s.is_terminated
