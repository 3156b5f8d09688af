"""Issue #12, node level: no single peer can exhaust the node's worker pool, its
reactor thread, an accept queue or echo workers, or the address book.

Each scenario runs an attack against a listening node (default ``Limits`` unless
the scenario is scaled down through a bound) while an honest peer pings or echoes
over its own connection, during and after the attack. The attacks are scaled down
to what still shows the problem on the base code (a smaller handler pool, fewer
identities), so each test takes a few seconds.
"""

from __future__ import annotations

import threading
import time

import pytest

from libp2p_stream_sync import Keypair
from libp2p_stream_sync.limits import Limits
from libp2p_stream_sync.protocols import identify, ping
from libp2p_stream_sync.protocols.echo import serve_echo

from node_bounds_helpers import fat_push, open_silent, send_push, timed_echo
from reliability_helpers import make_node  # noqa: F401 (fixture)
from reliability_helpers import p2p_addr, rss_bytes, wait_until

pytestmark = pytest.mark.timeout(60)

#: An honest round trip during an attack may be this much slower than usual (s).
HONEST_DEADLINE = 3.0
#: What the node may grow by while one of these attacks runs (RSS, whole process).
RSS_BOUND = 64 << 20
#: Addresses that fit in one 8 KiB identify push (distinct /ip4 addresses).
FAT_PUSH_ADDRESSES = 1159


def _served(make_node, **kw):
    """A listening node with serve_echo, and an honest client connected to it."""
    server = make_node(**kw)
    echo = serve_echo(server.new_control())
    good = make_node(listen=[])
    good.dial(p2p_addr(server))
    return server, echo, good


# -- 5: the shared worker pool -------------------------------------------------------------
def test_silent_ping_streams_hold_no_handler_thread(make_node):
    """Peers × 2 silent ping streams outnumber the handler threads: an honest ping
    still answers at once (base: the responder held a thread per stream for 60 s)."""
    server, echo, good = _served(make_node, max_handler_threads=8)
    rss = rss_bytes()
    attackers = [make_node(listen=[]) for _ in range(6)]
    held = [s for a in attackers
            for s in open_silent(a, p2p_addr(server), ping.PROTOCOL, ping.MAX_STREAMS_PER_PEER)]
    assert len(held) == 12
    assert max(good.ping(server.peer_id, count=3, timeout=HONEST_DEADLINE)) < 1.0
    timed_echo(good, p2p_addr(server), timeout=HONEST_DEADLINE)
    assert rss_bytes() - rss < RSS_BOUND
    for a in attackers:
        a.close()
    assert good.ping(server.peer_id, timeout=HONEST_DEADLINE)
    echo.close()


def test_silent_identify_pushes_hold_no_handler_thread(make_node):
    """One peer opens many identify-push streams and sends nothing: at most
    identify.MAX_PUSHES_PER_PEER are held (on the reactor); pings go on."""
    server, echo, good = _served(make_node, max_handler_threads=8)
    attacker = make_node(listen=[])
    streams = open_silent(attacker, p2p_addr(server), identify.PUSH_PROTOCOL, 20)
    assert good.ping(server.peer_id, count=2, timeout=HONEST_DEADLINE)
    reset = 0
    for stream in streams:  # all but the admitted ones are reset
        stream.settimeout(0.5)
        try:
            stream.read()
        except ConnectionResetError:
            reset += 1
        except TimeoutError:
            pass
    assert reset >= len(streams) - identify.MAX_PUSHES_PER_PEER
    attacker.close()
    assert good.ping(server.peer_id, timeout=HONEST_DEADLINE)
    echo.close()


def test_one_peer_gets_only_its_share_of_handler_jobs(make_node):
    """Silent perf streams (perf runs on the handler pool): one peer holds at most
    Limits.max_handler_jobs_per_peer jobs; another peer's perf still runs."""
    server, echo, good = _served(make_node, max_handler_threads=16, enable_perf=True)
    attacker = make_node(listen=[])
    held = open_silent(attacker, p2p_addr(server), "/perf/1.0.0", 24)
    assert held
    result = good.perf(server.peer_id, 10_000, 10_000, timeout=HONEST_DEADLINE)
    assert result.download_bytes == 10_000
    assert server._workers.jobs_of(attacker.peer_id) == Limits().max_handler_jobs_per_peer
    attacker.close()
    assert wait_until(lambda: server._workers.jobs == 0, 3)  # the attacker's jobs ended with it
    assert good.perf(server.peer_id, 1000, 1000, timeout=HONEST_DEADLINE)
    echo.close()


# -- 7: identify parsing on the reactor's path -----------------------------------------------
def test_fat_identify_pushes_do_not_stall_the_node(make_node):
    """Pushes packed with ~1,160 distinct addresses each, from 8 streams at a time:
    parsing is capped and linear and takes no lock the reactor waits on, so fresh
    honest connections are served promptly (base: 85 ms of quadratic parsing per
    push under the identify lock, which the reactor needs for every new peer)."""
    server, echo, good = _served(make_node)
    attacker = make_node(listen=[])
    message = fat_push(attacker.keypair, FAT_PUSH_ADDRESSES)
    stop = threading.Event()
    sent = [0]

    def flood() -> None:
        while not stop.is_set():
            if send_push(attacker, p2p_addr(server), message):
                sent[0] += 1

    threads = [threading.Thread(target=flood, daemon=True) for _ in range(8)]
    for t in threads:
        t.start()
    try:
        worst = 0.0
        for _ in range(4):  # fresh honest peers: dial, identify, echo
            fresh = make_node(listen=[])
            start = time.monotonic()
            fresh.dial(p2p_addr(server), timeout=HONEST_DEADLINE)
            fresh.wait_identified(server.peer_id, timeout=HONEST_DEADLINE)
            timed_echo(fresh, p2p_addr(server), timeout=HONEST_DEADLINE)
            worst = max(worst, time.monotonic() - start)
            fresh.close()
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    print(f"{sent[0]} fat pushes sent; slowest fresh honest peer {worst:.3f} s")
    assert sent[0] > 0
    assert worst < 1.5, f"a fresh honest peer took {worst:.2f} s"
    info = server.wait_identified(attacker.peer_id, timeout=5)
    assert len(info.listen_addrs) <= identify.MAX_LISTEN_ADDRS
    timed_echo(good, p2p_addr(server), timeout=HONEST_DEADLINE)
    echo.close()


# -- 8: one peer against a protocol's shared capacity -----------------------------------------
def test_silent_echo_streams_of_one_peer_do_not_deny_echo_to_others(make_node):
    """One connection opens 336 negotiated /echo streams and sends nothing: it fills
    its share of the accept queue and of serve_echo's workers, not everyone's (base:
    every honest echo was reset or timed out until the attacker left)."""
    server, echo, good = _served(make_node)
    rss = rss_bytes()
    attacker = make_node(listen=[])
    held = open_silent(attacker, p2p_addr(server), "/echo/1.0.0", 336)
    assert held
    for _ in range(5):
        assert timed_echo(good, p2p_addr(server), timeout=HONEST_DEADLINE) < HONEST_DEADLINE
    assert rss_bytes() - rss < RSS_BOUND
    attacker.close()
    assert timed_echo(good, p2p_addr(server), timeout=HONEST_DEADLINE) < HONEST_DEADLINE
    echo.close()


# -- connections per peer ------------------------------------------------------------------------
def test_one_identity_cannot_hold_every_connection(make_node):
    """One peer id dials again and again: the node keeps at most
    Limits.max_connections_per_peer connections with it and closes the rest."""
    server, echo, good = _served(make_node)
    keypair = Keypair.generate()
    clones = [make_node(listen=[], keypair=keypair) for _ in range(12)]
    for clone in clones:
        try:
            clone.dial(p2p_addr(server), timeout=HONEST_DEADLINE)
        except OSError:
            pass  # refused at once: what we want
    limit = 8  # Limits().max_connections_per_peer
    assert wait_until(lambda: len(server.connections(keypair.peer_id)) <= limit, 3)
    assert wait_until(lambda: server.counts()["inbound"] <= limit + 1, 3)
    timed_echo(good, p2p_addr(server), timeout=HONEST_DEADLINE)
    for clone in clones:
        clone.close()
    fresh = make_node(listen=[])
    timed_echo(fresh, p2p_addr(server), timeout=HONEST_DEADLINE)
    echo.close()


# -- 9: cheap identities against the address book ------------------------------------------------
def test_fresh_identities_do_not_evict_configured_addresses(make_node):
    """More fresh identities connect and identify (advertising listen addresses)
    than the address book holds: the address the application added, and the
    addresses of a peer we stay connected to, survive; learned strangers go first."""
    book = 12
    server = make_node(limits=Limits(max_address_book_peers=book))
    configured_peer = Keypair.generate().peer_id
    server.add_address(configured_peer, "/ip4/127.0.0.1/tcp/4001")
    friend = make_node()
    friend.dial(p2p_addr(server))
    assert wait_until(lambda: server.addresses_of(friend.peer_id), 5)
    for _ in range(book + 6):
        stranger = make_node()
        stranger.dial(p2p_addr(server))
        assert wait_until(lambda: server.addresses_of(stranger.peer_id), 5)
        stranger.close()
    assert [str(a) for a in server.addresses_of(configured_peer)] == \
        ["/ip4/127.0.0.1/tcp/4001"]
    assert server.addresses_of(friend.peer_id) == friend.listen_addrs
    assert len(server._addresses) <= book + 1
