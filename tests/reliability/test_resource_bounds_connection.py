"""One peer, within the protocol rules, must not make a node hold unbounded memory or
reactor time through one connection (issue #12, connection-level scenarios).

Each test attacks a listening node (``serve``-style echo on a pool, plus a protocol
whose streams nobody reads) over raw engine clients, measures what the node's
connections hold (``Connection.buffer_usage()``), and has an honest node echo and
ping over its own connection during the attack and after the attacker left.
"""

from __future__ import annotations

import socket
import threading
import time

import pytest

from libp2p_stream_sync import read_pressure
from libp2p_stream_sync.codec.varint import encode_uvarint
from libp2p_stream_sync.engines import muxer_events as mev
from libp2p_stream_sync.engines import yamux as yx
from libp2p_stream_sync.engines.multistream import (MultistreamDialer, encode_ls_response,
                                                    encode_message)
from libp2p_stream_sync.limits import Limits

from bounds_helpers import (SINK, HonestLoop, MplexClient, PeakSampler, drain_socket,
                            held_by, honest_round, payload)
from reliability_helpers import guarded, make_node  # noqa: F401 (fixtures)
from reliability_helpers import ECHO, YamuxClient, wait_until

pytestmark = pytest.mark.timeout(60)

MIB = 1 << 20
HEADER = encode_message("/multistream/1.0.0")
LS = encode_message("ls")
#: An honest round (echo + ping) during an attack may take at most this long.
SLOWDOWN_BOUND = 2.0


def _sink(g) -> None:
    g.sink = g.server.new_control().accept(SINK, capacity=1024)  # never taken from


def _send_until_stalled(sock: socket.socket, chunks, seconds: float) -> int:
    """Send chunks until the node stops reading (a send times out) or time is up."""
    sock.settimeout(0.3)
    sent = 0
    deadline = time.monotonic() + seconds
    for chunk in chunks:
        if time.monotonic() > deadline:
            break
        try:
            sock.sendall(chunk)
        except (TimeoutError, OSError):
            break
        sent += len(chunk)
    return sent


def _mplex_resets(c: MplexClient, seconds: float) -> int:
    """Read what the node sends for ``seconds``; count the streams it reset."""
    resets = 0
    deadline = time.monotonic() + seconds
    c.sock.settimeout(0.2)
    while time.monotonic() < deadline and not resets:
        try:
            wire = c.sock.recv(1 << 16)
        except TimeoutError:
            continue
        if not wire:
            break
        plain = bytes(c.transport.receive_data(wire))
        resets += sum(1 for e in c.session.receive_data(plain)
                      if isinstance(e, mev.StreamReset))
    return resets


def _closed_refusing_streams(c: YamuxClient, seconds: float) -> float | None:
    """Seconds until the node closes the connection (None: still open after
    ``seconds``); streams the node opens (identify) are reset at once."""
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        try:
            if not c.pump(0.2):
                return time.monotonic() - start
        except TimeoutError:
            continue
        except OSError:
            return time.monotonic() - start
        for event in c.events:
            if isinstance(event, mev.StreamOpened):
                c.session.reset_stream(event.stream_id)
        c.events.clear()
        c.flush()
    return None


def _recovered(g) -> None:
    """The attacker is gone: nothing is held for it and honest rounds are quick."""
    assert wait_until(lambda: sum(held_by(g.server).values()) < 64 * 1024, 5), \
        held_by(g.server)
    assert honest_round(g) < SLOWDOWN_BOUND


# -- 1. output queued for a peer that never reads ------------------------------------------
def test_yamux_ping_flood_without_reading_bounds_queued_output(guarded):
    g = guarded()
    c = YamuxClient(g.server)
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    ping = yx.HEADER.pack(0, yx.TYPE_PING, yx.FLAG_SYN, 0, 1)
    batch = ping * 5000  # 60 KB
    chunks = (bytes(c.transport.encrypt(batch)) for _ in range(250))  # 15 MB, 1.25 M pings
    honest = HonestLoop(g)
    _send_until_stalled(c.sock, chunks, 6)
    time.sleep(0.3)  # let the node handle what it read
    held = held_by(g.server)
    times = honest.stop()
    assert held["output"] <= 4 * MIB, f"{held['output'] >> 10} KiB queued for the peer"
    assert max(times) < SLOWDOWN_BOUND, times
    c.close()
    _recovered(g)


def test_mplex_ls_flood_without_reading_bounds_queued_output(guarded):
    g = guarded()
    c = MplexClient(g.server)
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    ls_requests = HEADER + LS * 10_000  # 30 KB of requests, ~1 MB of answers

    def chunks():
        while True:
            sid = c.session.open_stream()
            c.session.send_data(sid, ls_requests)
            yield bytes(c.transport.encrypt(bytes(c.session.data_to_send())))

    honest = HonestLoop(g)
    sampler = PeakSampler(g.server)
    _send_until_stalled(c.sock, chunks(), 4)
    time.sleep(0.3)
    peak = sampler.stop()
    times = honest.stop()
    assert peak["output"] <= 4 * MIB, f"{peak['output'] >> 10} KiB queued for the peer"
    assert max(times) < SLOWDOWN_BOUND, times
    c.close()
    _recovered(g)


# -- 2. negotiations: bytes held and time taken -----------------------------------------------
def test_partial_protocol_proposals_are_bounded_per_connection(guarded):
    g = guarded()
    c = YamuxClient(g.server)
    # 64 streams, each holding a 32 KiB piece of a 64 KiB proposal.
    partial = HEADER + encode_uvarint(64 * 1024) + b"a" * (32 * 1024)
    for _ in range(64):
        sid = c.session.open_stream()
        c.session.send_data(sid, partial)
    assert c.flush()
    honest = HonestLoop(g)
    deadline = time.monotonic() + 3
    resets = 0
    while time.monotonic() < deadline and resets < 60:
        try:
            c.pump(0.5)
        except TimeoutError:
            continue
        resets = sum(1 for e in c.events if isinstance(e, mev.StreamReset))
    held = held_by(g.server)
    times = honest.stop()
    bound = Limits().max_negotiation_buffer
    assert held["negotiations"] <= bound, f"{held['negotiations'] >> 10} KiB held"
    assert resets >= 64 - bound // (32 * 1024), resets
    assert max(times) < SLOWDOWN_BOUND, times
    c.close()
    _recovered(g)


def test_stream_that_never_negotiates_is_reset_and_the_connection_closes(guarded):
    g = guarded(Limits(handshake_timeout=0.5, negotiation_timeout=0.5,
                       idle_connection_timeout=0.5))
    c = YamuxClient(g.server)
    sid = c.session.open_stream()
    c.session.send_data(sid, HEADER)  # and never a proposal
    assert c.flush()
    took = _closed_refusing_streams(c, 5)
    c.close()
    # negotiation timeout (stream reset), then idle timeout (connection closed)
    assert took is not None and 0.8 < took < 3.0, took
    _recovered(g)


# -- 3. ls is cheap and cannot monopolise the reactor ------------------------------------------
def test_ls_flood_from_a_reading_peer_does_not_starve_others(guarded):
    g = guarded()
    c = MplexClient(g.server)
    stop = threading.Event()
    reader = drain_socket(c.sock, stop)
    ls_requests = HEADER + LS * 2000
    for _ in range(60):  # 60 streams x 2,000 ls: 120,000 answers
        sid = c.session.open_stream()
        c.session.send_data(sid, ls_requests)
    flood = bytes(c.session.data_to_send())
    honest = HonestLoop(g)
    time.sleep(0.05)
    c.sock.settimeout(10)  # the drain thread shares it
    for i in range(0, len(flood), 60_000):
        c.sock.sendall(bytes(c.transport.encrypt(flood[i:i + 60_000])))
    time.sleep(1.0)
    times = honest.stop()
    stop.set()
    c.sock.shutdown(socket.SHUT_RDWR)  # wakes the drain thread
    reader.join(5)
    c.close()
    assert len(times) >= 3, times
    assert max(times) < 0.5, f"an honest round took {max(times):.2f} s during an ls flood"
    _recovered(g)


# -- 4. and 6. unread data per connection --------------------------------------------------------
SMALL = Limits(handshake_timeout=0.5, max_stream_buffer=MIB, max_connection_buffer=4 * MIB)


def test_mplex_unread_data_is_bounded_per_connection(guarded, monkeypatch):
    """Streams each under their own pause point (256 KiB here) but many of them:
    the connection-wide bound pauses reading, then resets the largest holders."""
    monkeypatch.setattr(read_pressure, "CONGESTION_TIMEOUT", 1.0)
    g = guarded(SMALL)
    _sink(g)
    c = MplexClient(g.server)
    data = payload(200 * 1024)
    proposal = MultistreamDialer([SINK], lazy=True).data_to_send()

    def chunks():
        for _ in range(40):  # 40 x 200 KiB = 8 MB
            sid = c.session.open_stream()
            c.session.send_data(sid, proposal + data)
            yield bytes(c.transport.encrypt(bytes(c.session.data_to_send())))

    honest = HonestLoop(g)
    sampler = PeakSampler(g.server)
    sent = _send_until_stalled(c.sock, chunks(), 3)
    time.sleep(0.3)  # let the node handle what it read
    peak = sampler.stop()
    assert peak["unread"] <= SMALL.max_connection_buffer + MIB, \
        f"{peak['unread'] >> 10} KiB unread held for one connection ({sent} bytes sent)"
    # Stuck beyond the congestion timeout: the largest holders are reset.
    assert _mplex_resets(c, 4) > 0
    times = honest.stop()
    assert max(times) < SLOWDOWN_BOUND, times
    assert held_by(g.server)["unread"] <= SMALL.max_connection_buffer + MIB
    c.close()
    _recovered(g)


def test_yamux_unread_streams_are_bounded_per_connection(guarded, monkeypatch):
    """Streams nobody has started reading get no window beyond the initial 256 KiB,
    and their total is bounded per connection."""
    # The attacker's data still queued in TCP when it leaves keeps the connection
    # paused until the congestion timeout: shortened here.
    monkeypatch.setattr(read_pressure, "CONGESTION_TIMEOUT", 1.0)
    g = guarded(SMALL)
    _sink(g)
    c = YamuxClient(g.server)
    data = payload(250 * 1024)
    proposal = MultistreamDialer([SINK], lazy=True).data_to_send()
    sids = []
    honest = HonestLoop(g)
    sampler = PeakSampler(g.server)
    c.sock.settimeout(0.3)
    for _ in range(32):  # 32 x 250 KiB = 8 MB
        sid = c.session.open_stream()
        sids.append(sid)
        c.session.send_data(sid, proposal + data)
        try:
            if not c.flush():
                break
        except TimeoutError:
            break  # the node stopped reading us
    time.sleep(0.5)
    peak = sampler.stop()
    times = honest.stop()
    assert peak["unread"] <= SMALL.max_connection_buffer + MIB, \
        f"{peak['unread'] >> 10} KiB unread held for one connection"
    c.sock.settimeout(1)
    try:
        while c.pump(0.2):
            pass
    except (TimeoutError, OSError):
        pass
    # No stream got window beyond its first 256 KiB: nobody read them.
    windows = [c.session.send_window(sid) for sid in sids if sid in c.session._streams]
    assert windows and max(windows) <= yx.DEFAULT_WINDOW - len(data), windows
    assert max(times) < SLOWDOWN_BOUND, times
    c.close()
    _recovered(g)


def test_input_left_for_later_turns_keeps_its_order(guarded):
    """A stream asking ``ls`` 3,000 times, then proposing echo and sending data in the
    same write: the answers span many reactor turns, and the echoed data still comes
    back whole and in order after them."""
    g = guarded()
    c = MplexClient(g.server)
    data = payload(100_000)
    sid = c.session.open_stream()
    c.session.send_data(sid, HEADER + LS * 3000 + encode_message(ECHO) + data)
    c.session.close_stream(sid)
    assert c.flush()
    received = bytearray()
    ended = False
    deadline = time.monotonic() + 10
    c.sock.settimeout(5)
    while not ended and time.monotonic() < deadline:
        wire = c.sock.recv(1 << 16)
        assert wire, "the node closed the connection"
        for event in c.session.receive_data(bytes(c.transport.receive_data(wire))):
            if getattr(event, "stream_id", None) != sid:
                continue
            if isinstance(event, mev.DataReceived):
                received += event.data
                c.session.consumed(sid, len(event.data))
            elif isinstance(event, mev.StreamEnded):
                ended = True
    ls_answer = encode_ls_response(g.server.supported_protocols())
    assert ended
    assert bytes(received) == HEADER + ls_answer * 3000 + encode_message(ECHO) + data
    c.close()
    _recovered(g)


def test_peer_closing_while_paused_still_delivers_what_it_sent(guarded):
    """A peer that sends more than the connection bound, half-closes every stream and
    then its connection: the node, paused, notices the close, reads to the end, and
    every stream's data stays readable."""
    g = guarded(SMALL)
    _sink(g)
    c = YamuxClient(g.server)
    proposal = MultistreamDialer([SINK], lazy=True).data_to_send()
    data = payload(250 * 1024)
    for _ in range(17):  # 4.25 MB: just beyond the 4 MiB bound
        sid = c.session.open_stream()
        c.session.send_data(sid, proposal + data)
        c.session.close_stream(sid)
    c.sock.settimeout(5)
    assert c.flush()
    time.sleep(0.3)
    c.sock.shutdown(socket.SHUT_WR)
    assert wait_until(lambda: not g.server.connections(c.keypair.peer_id), 3)
    for _ in range(17):
        _peer, stream = g.sink.get(timeout=2)
        stream.settimeout(2)
        assert stream.readall() == data
    c.close()
    _recovered(g)
