"""Write-through (issue #17): while the reactor sleeps, a thread holding it does the
reactor's work itself, so a small write to an idle connection costs no hand-off."""

from __future__ import annotations

import threading
import time

import pytest

from libp2p_stream_sync.reactor import Reactor

from conftest import wait_until

MUXERS = ["yamux", "mplex"]


@pytest.fixture
def reactor():
    r = Reactor(name="test-write-through")
    r.start()
    yield r
    r.stop()
    r.join(5)


def _idle(reactor: Reactor) -> None:
    """Give the loop time to reach select (nothing is scheduled)."""
    time.sleep(0.05)


def _count_call_soon(reactor: Reactor) -> list:
    calls: list = []
    original = reactor.call_soon

    def counting(fn, *args):
        calls.append(fn)
        original(fn, *args)

    reactor.call_soon = counting  # type: ignore[method-assign]
    return calls


@pytest.mark.parametrize("echo_pair", MUXERS, indirect=True)
def test_small_write_on_idle_connection_needs_no_reactor_hand_off(echo_pair):
    client, server, _ = echo_pair
    stream = client.new_control().open_stream(server.peer_id, "/echo/1.0.0", timeout=10)
    stream.settimeout(10)
    stream.write(b"warm")
    assert stream.read_exactly(4) == b"warm"
    _idle(client.reactor)
    handed = _count_call_soon(client.reactor)
    for i in range(20):
        payload = bytes([i]) * 16
        stream.write(payload)
        assert stream.read_exactly(16) == payload  # sent, echoed, received
    stream.flush(timeout=5)
    assert handed == []  # each write was framed, encrypted and sent by this thread
    stream.close()


@pytest.mark.parametrize("echo_pair", MUXERS, indirect=True)
def test_write_through_keeps_order_behind_a_large_write(echo_pair):
    client, server, _ = echo_pair
    stream = client.new_control().open_stream(server.peer_id, "/echo/1.0.0", timeout=10)
    stream.settimeout(10)
    big = bytes(range(256)) * 4096  # 1 MiB: framed on the reactor
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(stream.readall()))
    reader.start()
    stream.write(big)
    for i in range(64):  # small writes while the big one may still be queued
        stream.write(bytes([i]) * 8)
    stream.close_write()
    reader.join(20)
    expected = big + b"".join(bytes([i]) * 8 for i in range(64))
    assert got == [expected]
    stream.close()


def test_try_hold_only_while_the_loop_sleeps_with_nothing_queued(reactor):
    _idle(reactor)
    assert reactor.try_hold()
    seen: list = []
    # while we hold it the loop cannot run: a queued call waits for the release
    reactor.call_soon(lambda: seen.append(threading.current_thread()))
    time.sleep(0.05)
    assert seen == []
    reactor.release_hold()
    assert wait_until(lambda: seen == [reactor.thread])
    # in the reactor thread itself, try_hold refuses (the loop already holds it)
    answers: list = []
    reactor.call_soon(lambda: answers.append(reactor.try_hold()))
    assert wait_until(lambda: answers == [False])


def test_try_hold_refuses_while_calls_are_queued(reactor):
    _idle(reactor)
    gate = threading.Event()
    reactor.call_soon(gate.wait, 5)  # the loop is busy in this call
    time.sleep(0.05)
    reactor.call_soon(lambda: None)
    assert not reactor.try_hold()
    gate.set()


def test_holder_marks_are_flushed_by_the_holder_at_release(reactor):
    _idle(reactor)
    flushed: list = []

    class Dirty:
        def flush(self) -> None:
            flushed.append(threading.current_thread())

    ran: list = []
    reactor.call_now_or_soon(lambda: (ran.append(threading.current_thread()),
                                      reactor.mark_dirty(Dirty())))
    assert ran == [threading.current_thread()]
    assert flushed == [threading.current_thread()]


def test_holder_timer_earlier_than_the_loops_wake_up_fires_on_time(reactor):
    _idle(reactor)  # the loop sleeps with nothing scheduled: an hour-long select
    fired = threading.Event()
    t0 = time.monotonic()
    assert reactor.try_hold()
    try:
        reactor.call_later(0.1, fired.set)
    finally:
        reactor.release_hold()
    assert fired.wait(5)
    assert time.monotonic() - t0 < 3
