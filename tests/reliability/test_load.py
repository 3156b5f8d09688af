"""Load (issue #7, item 4): 500 concurrent connections to one node, 10,000 streams over
a node's lifetime without leaks, 64 threads sharing one Control; checksums throughout.

RELIABILITY_LONG=1 raises the figures (2000 connections, 50,000 streams)."""

from __future__ import annotations

import hashlib
import os
import resource
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from libp2p_stream_sync.limits import Limits

from reliability_helpers import LONG, make_node  # noqa: F401 (fixture)
from reliability_helpers import (ECHO, PoolEchoServer, YamuxClient, echo_once, fd_count,
                                 node_tables, p2p_addr, wait_until)

pytestmark = pytest.mark.timeout(300 if LONG else 90)

CONNECTIONS = 2000 if LONG else 500
STREAMS = 50_000 if LONG else 10_000


def _raise_fd_limit(need: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        if hard != resource.RLIM_INFINITY and hard < need:
            pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < {need}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))


def _threads() -> int:
    return sum(1 for t in threading.enumerate()
               if not t.name.startswith(("echo", "libp2p-handler")))


def test_500_concurrent_connections(make_node):
    _raise_fd_limit(3 * CONNECTIONS + 256)
    server = make_node(limits=Limits(max_inbound_connections=CONNECTIONS + 10,
                                     handshake_timeout=30))
    echo = PoolEchoServer(server, workers=16)
    fds, threads = fd_count(), _threads()
    clients: list[YamuxClient] = []
    lock = threading.Lock()

    def connect(n: int) -> None:
        for _ in range(n):
            c = YamuxClient(server, timeout=30)
            with lock:
                clients.append(c)

    start = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        for f in [pool.submit(connect, CONNECTIONS // 8 + (k < CONNECTIONS % 8))
                      for k in range(8)]:
            f.result()
    took = time.monotonic() - start
    assert len(clients) == CONNECTIONS
    assert wait_until(lambda: node_tables(server)["connections"] == CONNECTIONS, 10), \
        node_tables(server)
    assert len(server.connected_peers()) == CONNECTIONS

    # every connection is live at once: one echo on each, checksummed
    def echo_on(c: YamuxClient) -> None:
        payload = os.urandom(2048)
        back = c.echo(payload, timeout=30)
        assert hashlib.sha256(back).digest() == hashlib.sha256(payload).digest()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(echo_on, clients))
    print(f"{CONNECTIONS} connections held; established in {took:.1f} s")
    for c in clients:
        c.close()
    assert wait_until(lambda: node_tables(server)["inbound_count"] == 0, 15), \
        node_tables(server)
    assert wait_until(lambda: fd_count() <= fds + 4, 5), (fds, fd_count())
    assert wait_until(lambda: _threads() <= threads + 2, 5)
    assert server.connected_peers() == []
    echo.close()


def test_10000_streams_without_leaks(make_node):
    server = make_node()
    echo = PoolEchoServer(server, workers=16)
    client = make_node(listen=[])
    control = client.new_control()
    addr = p2p_addr(server)
    echo_once(control, addr, b"warm-up")
    fds, threads = fd_count(), _threads()
    per_thread = STREAMS // 16
    start = time.monotonic()

    def run(k: int) -> int:
        done = 0
        for i in range(per_thread):
            payload = f"{k}:{i}:".encode() + os.urandom(32)
            with control.open_stream(server.peer_id, ECHO, timeout=20) as stream:
                stream.settimeout(20)
                stream.write(payload)
                stream.close_write()
                assert stream.readall() == payload
            done += 1
        return done
    with ThreadPoolExecutor(16) as pool:
        total = sum(pool.map(run, range(16)))
    took = time.monotonic() - start
    assert total == STREAMS
    print(f"{STREAMS} streams in {took:.1f} s ({STREAMS / took:.0f}/s)")
    # nothing left behind: streams, negotiations, per-peer counters, fds, threads
    for node in (server, client):
        assert wait_until(lambda: node_tables(node)["streams"] == 0
                          and node_tables(node)["negotiating"] == 0
                          and node_tables(node)["inbound_streams"] == 0, 5), \
            node_tables(node)
        assert node_tables(node)["connections"] == 1
    conn = server.connections(client.peer_id)[0]
    assert conn._muxer.stream_count <= 1, conn._muxer.stream_count
    assert not conn.session.to_flush and not conn.session.window_blocked \
        and not conn.session.streams
    assert wait_until(lambda: fd_count() <= fds + 2, 5)
    assert wait_until(lambda: _threads() <= threads + 2, 5)
    assert echo.served >= STREAMS
    echo.close()


def test_64_threads_share_one_control(make_node):
    server = make_node()
    echo = PoolEchoServer(server, workers=64)
    client = make_node(listen=[])
    control = client.new_control()
    addr = p2p_addr(server)
    barrier = threading.Barrier(64)
    errors: list[BaseException] = []
    moved = [0]
    lock = threading.Lock()

    def worker(k: int) -> None:
        try:
            barrier.wait(10)
            for i in range(4):
                size = (k * 7919 + i * 104729) % (512 * 1024) + 1
                payload = os.urandom(size)
                digest = hashlib.sha256(payload).digest()
                with control.open_stream(addr, ECHO, timeout=30) as stream:
                    stream.settimeout(30)
                    sender = threading.Thread(target=lambda: (stream.write(payload),
                                                              stream.close_write()))
                    sender.start()  # full duplex: write while reading the echo
                    back = stream.readall()
                    sender.join(30)
                assert hashlib.sha256(back).digest() == digest, (k, i, size, len(back))
                with lock:
                    moved[0] += 2 * size
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(64)]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors[:3]
    assert not any(t.is_alive() for t in threads)
    print(f"64 threads, 256 streams, {moved[0] >> 20} MiB checksummed in "
          f"{time.monotonic() - start:.1f} s")
    assert len(client.connected_peers()) == 1  # one shared connection
    echo.close()
