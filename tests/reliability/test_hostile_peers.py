"""Hostile peers over real loopback sockets against a listening Node (issue #7, item 2).

Every scenario checks three things: the hostile connection is closed (at once, or at
the handshake timeout), an echo over another connection works during and after, and
the node's threads, memory and tables stay bounded.
"""

from __future__ import annotations

import os
import socket
import struct
import threading
import time

import pytest

from libp2p_stream_sync import Keypair
from libp2p_stream_sync.engines import yamux as yx
from libp2p_stream_sync.engines.multistream import MultistreamDialer, encode_message
from libp2p_stream_sync.engines.noise import (SIGNATURE_PREFIX, NoiseHandshake,
                                              encode_handshake_payload)
from libp2p_stream_sync.identity.keys import KeyType, encode_key_message
from libp2p_stream_sync.limits import Limits

from reliability_helpers import guarded, make_node  # noqa: F401 (fixtures)
from reliability_helpers import (ECHO, YamuxClient, closed_by_peer, connect_raw, fd_count,
                                 ms_header_and, node_tables, rss_bytes, send_quietly,
                                 wait_until)

pytestmark = pytest.mark.timeout(60)

HANDSHAKE_TIMEOUT = 0.5
#: A connection closed "at once" closes well within this (seconds).
AT_ONCE = 2.0


def node_threads() -> int:
    """Live threads, without the pools that keep their (bounded) threads: the test's
    echo workers and each node's handler pool (checked apart against its bound)."""
    return sum(1 for t in threading.enumerate()
               if not t.name.startswith(("echo", "libp2p-handler")))


def handler_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name.startswith("libp2p-handler"))


class Budget:
    """Threads, fds and RSS before a scenario; assert they came back afterwards."""

    def __init__(self) -> None:
        self.threads = node_threads()
        self.fds = fd_count()
        self.rss = rss_bytes()

    def check(self, g, *, rss_slack: int = 64 << 20) -> None:
        assert wait_until(lambda: node_threads() <= self.threads + 4, 5), \
            f"threads grew from {self.threads} to {node_threads()}: " \
            f"{[t.name for t in threading.enumerate()]}"
        assert handler_threads() <= sum(n._workers.max_threads for n in (g.server, g.good))
        assert wait_until(lambda: fd_count() <= self.fds + 4, 5), \
            f"fds grew from {self.fds} to {fd_count()}"
        assert rss_bytes() - self.rss < rss_slack, \
            f"RSS grew by {(rss_bytes() - self.rss) >> 20} MiB"
        # only the good client's connection is left on the server
        assert wait_until(lambda: node_tables(g.server)["inbound_count"] == 1
                          and not g.server.counts()["pending"], 5), node_tables(g.server)


def _noise_msg1() -> bytes:
    return NoiseHandshake(Keypair.generate(), initiator=True).data_to_send()


# -- before the handshake completes ---------------------------------------------------------
PRE_HANDSHAKE = {
    "random-garbage": lambda: os.urandom(4096),
    "http-request": lambda: b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    "header-then-garbage": lambda: encode_message("/multistream/1.0.0") + os.urandom(512),
    "unsupported-security": lambda: ms_header_and("/secio/1.0.0") + os.urandom(64),
    "tls-garbage-record": lambda: ms_header_and("/tls/1.0.0") + b"\x16\x03\x01\x00\x40"
    + os.urandom(64),
    "tls-truncated-client-hello": lambda: ms_header_and("/tls/1.0.0")
    + b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
    "oversized-multistream-message": lambda: encode_message("/multistream/1.0.0")
    + b"\x80\x80\x40" + b"a" * 2000,
    "noise-garbage-message": lambda: ms_header_and("/noise") + b"\x00\x20" + os.urandom(32)
    + b"\xff\xff" + os.urandom(65535),
    "noise-message-1-too-short": lambda: ms_header_and("/noise") + b"\x00\x05hello",
}


@pytest.mark.parametrize("name", sorted(PRE_HANDSHAKE))
def test_bad_bytes_before_the_handshake_close_the_connection(guarded, name):
    g = guarded()
    budget = Budget()
    sock = connect_raw(g.server)
    send_quietly(sock, PRE_HANDSHAKE[name]())
    g.check()  # during
    took = closed_by_peer(sock, AT_ONCE + HANDSHAKE_TIMEOUT)
    sock.close()
    assert took is not None, "the hostile connection was not closed"
    g.check()  # after
    budget.check(g)


def test_slowloris_is_closed_at_the_handshake_timeout(guarded):
    """Many silent connections (and ones that stall mid-handshake) are closed at
    Limits.handshake_timeout; the node serves others meanwhile."""
    g = guarded()
    budget = Budget()
    socks = [connect_raw(g.server) for _ in range(40)]
    stalled = [connect_raw(g.server) for _ in range(10)]
    for s in stalled:  # a valid start, then a truncated first Noise message
        s.sendall(ms_header_and("/noise") + _noise_msg1()[:20])
    start = time.monotonic()
    g.check()
    assert wait_until(lambda: node_tables(g.server)["pending"] >= 1, 2)
    times = []
    for s in socks + stalled:
        took = closed_by_peer(s, HANDSHAKE_TIMEOUT + AT_ONCE)
        assert took is not None, "a silent connection outlived the handshake timeout"
        times.append(time.monotonic() - start)
        s.close()
    assert max(times) < HANDSHAKE_TIMEOUT + 1.0, times
    assert min(times) >= HANDSHAKE_TIMEOUT * 0.8, times
    g.check()
    budget.check(g)


def test_half_open_connections(guarded):
    """A client that half-closes (SHUT_WR) before or after the handshake is dropped."""
    g = guarded()
    budget = Budget()
    early = connect_raw(g.server)
    early.shutdown(socket.SHUT_WR)
    late = YamuxClient(g.server)
    assert late.echo(b"ping") == b"ping"
    late.sock.shutdown(socket.SHUT_WR)
    for s in (early, late.sock):
        assert closed_by_peer(s, AT_ONCE) is not None
        s.close()
    g.check()
    budget.check(g)


def test_peer_that_never_reads_cannot_grow_node_memory(guarded):
    """A peer writes to an echo stream but never reads the echoes: yamux windows and
    the wire high-water mark bound what the node buffers for it."""
    g = guarded()
    budget = Budget()
    c = YamuxClient(g.server)
    sid = c.session.open_stream()
    c.session.send_data(sid, MultistreamDialer([ECHO], lazy=True).data_to_send())
    c.flush()
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    chunk = os.urandom(64 * 1024)
    sent = 0
    c.sock.settimeout(0.5)
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:  # write until the node stops granting window
        window = c.session.send_window(sid)
        if window <= 0:
            break
        c.session.send_data(sid, chunk[:window])
        try:
            c.sock.sendall(bytes(c.transport.encrypt(c.session.data_to_send())))
        except (socket.timeout, OSError):
            break
        sent += min(window, len(chunk))
    g.check()  # the node still serves others while this peer hogs its stream
    assert sent <= 32 << 20, f"the node let a non-reading peer push {sent} bytes"
    c.close()
    g.check()
    budget.check(g)


# -- during the handshake: bad identities ------------------------------------------------------
def _hostile_handshake(payload_for) -> NoiseHandshake:
    kp = Keypair.generate()
    hs = NoiseHandshake(kp, initiator=True, muxers=["/yamux/1.0.0"])
    hs._payload = payload_for(kp, hs._static_public)
    return hs


BAD_IDENTITIES = {
    "invalid-signature": lambda kp, static: encode_handshake_payload(
        kp.public_key.to_protobuf(), kp.sign(SIGNATURE_PREFIX + b"\x00" * 32)),
    "signature-by-another-key": lambda kp, static: encode_handshake_payload(
        kp.public_key.to_protobuf(), Keypair.generate().sign(SIGNATURE_PREFIX + static)),
    "unsupported-key-type": lambda kp, static: encode_handshake_payload(
        encode_key_message(9, b"\x01" * 32), b"\x02" * 64),
    "malformed-ed25519-key": lambda kp, static: encode_handshake_payload(
        encode_key_message(KeyType.ED25519, b"\x01" * 31), b"\x02" * 64),
    "missing-signature": lambda kp, static: encode_handshake_payload(
        kp.public_key.to_protobuf(), b""),
    "garbage-payload": lambda kp, static: os.urandom(200),
}


@pytest.mark.parametrize("name", sorted(BAD_IDENTITIES))
def test_bad_identity_in_the_handshake_closes_the_connection(guarded, name):
    g = guarded()
    budget = Budget()
    hs = _hostile_handshake(BAD_IDENTITIES[name])
    sock = connect_raw(g.server)
    sock.sendall(ms_header_and("/noise") + hs.data_to_send())
    # read the node's multistream answer and Noise message 2, then send message 3
    buf = b""
    sock.settimeout(5)
    start = time.monotonic()
    while not hs.complete:
        data = sock.recv(65536)
        assert data, "closed before message 2"
        buf += data
        idx = buf.find(b"/noise\n")
        if idx < 0:
            continue
        hs.receive_data(buf[idx + 7:])
        buf = b""
    send_quietly(sock, hs.data_to_send())
    took = closed_by_peer(sock, AT_ONCE)
    sock.close()
    assert took is not None, "the node kept a connection with a bad identity"
    assert time.monotonic() - start < HANDSHAKE_TIMEOUT + 0.2 or took < 0.3
    g.check()
    assert hs.remote_peer_id == g.server.peer_id
    assert g.server.connected_peers() == [g.good.peer_id]
    budget.check(g)


# -- after the handshake: muxer-level abuse ------------------------------------------------------
def _yamux_frame(ftype, flags, sid, length, payload=b""):
    return yx.HEADER.pack(0, ftype, flags, sid, length) + payload


def test_noise_frame_that_fails_authentication(guarded):
    g = guarded()
    budget = Budget()
    c = YamuxClient(g.server)
    send_quietly(c.sock, b"\xff\xff" + os.urandom(65535))  # oversized garbage frame
    assert closed_by_peer(c.sock, AT_ONCE) is not None
    c.close()
    g.check()
    budget.check(g)


def test_yamux_data_beyond_the_window(guarded):
    g = guarded()
    budget = Budget()
    c = YamuxClient(g.server)
    payload = os.urandom(yx.DEFAULT_WINDOW + 1)
    c.send_plain(_yamux_frame(yx.TYPE_DATA, yx.FLAG_SYN, 1, len(payload), payload))
    assert closed_by_peer(c.sock, AT_ONCE) is not None
    c.close()
    g.check()
    budget.check(g)


def test_yamux_oversized_frame_header_and_bad_version(guarded):
    g = guarded()
    budget = Budget()
    for frame in (_yamux_frame(yx.TYPE_DATA, yx.FLAG_SYN, 1, 0xFFFFFFFF),
                  yx.HEADER.pack(7, 0, 0, 1, 0),
                  _yamux_frame(9, 0, 1, 0),
                  _yamux_frame(yx.TYPE_WINDOW_UPDATE, yx.FLAG_SYN, 2, 0)):  # wrong parity
        c = YamuxClient(g.server)
        c.send_plain(frame)
        c.flush()
        took = closed_by_peer(c.sock, AT_ONCE)
        c.close()
        assert took is not None, frame.hex()
    g.check()
    budget.check(g)


@pytest.mark.parametrize("negotiate", [False, True])
def test_yamux_syn_flood_beyond_the_limits(guarded, negotiate):
    """Thousands of SYNs (never negotiated, or negotiated and left open): the node
    holds at most max_streams_per_connection of them and keeps serving others."""
    limit = 64
    g = guarded(Limits(handshake_timeout=HANDSHAKE_TIMEOUT, max_streams_per_connection=limit,
                       yamux_backlog=16, max_inbound_streams_per_protocol_per_peer=32))
    budget = Budget()
    c = YamuxClient(g.server)
    proposal = MultistreamDialer([ECHO], lazy=True).data_to_send()
    flood = bytearray()
    n = 5000
    for i in range(n):
        sid = 2 * i + 1
        flood += _yamux_frame(yx.TYPE_WINDOW_UPDATE, yx.FLAG_SYN, sid, 0)
        if negotiate:
            flood += _yamux_frame(yx.TYPE_DATA, 0, sid, len(proposal), proposal)
    sent = c.send_plain(bytes(flood))
    peak = 0
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        t = node_tables(g.server)
        peak = max(peak, t["streams"] + t["negotiating"])
        time.sleep(0.01)
    g.check()  # during
    assert peak <= limit + 2, f"{peak} streams held for one connection (limit {limit})"
    assert g.server._registry.inbound_counts().get((c.keypair.peer_id, ECHO), 0) <= 32
    c.close()
    assert sent
    g.check()
    assert wait_until(lambda: node_tables(g.server)["streams"] <= 1, 5)
    budget.check(g)


def test_yamux_ping_flood_is_answered_without_growing(guarded):
    """A peer that pings without reading the pongs: the node's output is bounded."""
    g = guarded()
    budget = Budget()
    c = YamuxClient(g.server)
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    ping = _yamux_frame(yx.TYPE_PING, yx.FLAG_SYN, 0, 1)
    c.sock.settimeout(1)
    deadline = time.monotonic() + 3
    sent = 0
    try:
        while time.monotonic() < deadline and sent < 400_000:
            c.sock.sendall(bytes(c.transport.encrypt(ping * 1000)))
            sent += 1000
    except (socket.timeout, OSError):
        pass  # the node stopped reading from us: TCP back-pressure, as it should
    g.check()
    c.close()
    g.check()
    budget.check(g, rss_slack=96 << 20)


def test_mplex_abuse_closes_or_resets(guarded):
    """mplex: a frame beyond max message size and data for an unknown stream."""
    g = guarded()
    budget = Budget()
    from libp2p_stream_sync.codec.varint import encode_uvarint as v
    from reliability_helpers import SecureClient
    c = SecureClient(g.server, muxer="/mplex/6.7.0")
    assert c.muxer_protocol == "/mplex/6.7.0"
    c.send_plain(v((1 << 3) | 0) + v(0) + v((1 << 3) | 2) + v(1 << 30))
    assert closed_by_peer(c.sock, AT_ONCE) is not None
    c.close()
    g.check()
    budget.check(g)


def test_many_hostile_peers_at_once(guarded):
    """A mix of every abuse above from 8 threads while the good client keeps echoing."""
    g = guarded()
    budget = Budget()
    stop = threading.Event()
    failures: list[BaseException] = []

    def attack(seed: int) -> None:
        i = seed
        while not stop.is_set():
            i += 1
            try:
                kind = i % 4
                if kind == 0:
                    s = connect_raw(g.server)
                    send_quietly(s, os.urandom(300))
                    s.close()
                elif kind == 1:
                    c = YamuxClient(g.server)
                    c.send_plain(os.urandom(100))
                    c.close()
                elif kind == 2:
                    s = connect_raw(g.server)
                    s.close()  # connect and vanish
                else:
                    c = YamuxClient(g.server)
                    c.send_plain(_yamux_frame(yx.TYPE_DATA, yx.FLAG_SYN, 1, 1 << 20))
                    c.close()
            except OSError:
                pass
            except Exception as exc:
                failures.append(exc)
                return

    threads = [threading.Thread(target=attack, args=(k * 1000,)) for k in range(8)]
    for t in threads:
        t.start()
    try:
        for _ in range(20):
            g.check(size=64 * 1024)
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    assert not failures, failures
    g.check()
    budget.check(g, rss_slack=64 << 20)


def test_closed_connections_are_released(guarded):
    """Regression: cancelled timers used to keep closed connections (and their
    256 KiB buffers) alive until the timers' deadlines."""
    import gc

    from libp2p_stream_sync.connection import _CLOSED, Connection
    g = guarded()  # its good connection keeps a live timer at the head of the heap
    for _ in range(60):
        c = YamuxClient(g.server)
        c.close()
    assert wait_until(lambda: node_tables(g.server)["inbound_count"] == 1, 5)

    def alive() -> int:
        gc.collect()
        return sum(1 for o in gc.get_objects() if isinstance(o, Connection)
                   and o.owner is g.server._owner and o._state == _CLOSED)
    assert wait_until(lambda: alive() <= 5, 3, interval=0.2), \
        f"{alive()} closed connections still referenced"
