"""Shared fixtures and helpers for the legacy-adapter tests (imported by the test files)."""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Iterator

import pytest

from libp2p_stream_sync import Node

LOOPBACK = "/ip4/127.0.0.1/tcp/0"


def p2p_addr(node: Node) -> str:
    return f"{node.listen_addrs[0]}/p2p/{node.peer_id}"


def wait_for(predicate, timeout: float = 5.0, interval: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


@pytest.fixture
def no_thread_left():
    """Fail the test if threads started during it are still alive after teardown."""
    before = set(threading.enumerate())
    yield
    def extra():
        return [t for t in threading.enumerate() if t not in before and t.is_alive()]
    wait_for(lambda: not extra(), timeout=5.0)
    assert not extra(), f"threads left behind: {extra()}"


@pytest.fixture
def pair(no_thread_left):
    """(server node, client node, client Control); the client knows the server's address."""
    server = Node(listen=[LOOPBACK])
    client = Node(listen=[])
    client.add_address(server.peer_id, server.listen_addrs[0])
    try:
        yield server, client, client.new_control()
    finally:
        client.close()
        server.close()


@contextlib.contextmanager
def serving(server, poll_interval: float = 0.02) -> Iterator[threading.Thread]:
    """Run ``server.serve_forever`` on a thread; shut down and close on exit."""
    thread = threading.Thread(target=server.serve_forever, args=(poll_interval,),
                              name="test-serve-forever")
    thread.start()
    try:
        yield thread
    finally:
        server.shutdown()
        thread.join(5)
        server.server_close()
        assert not thread.is_alive()


def run_threads(target, n: int, timeout: float = 30.0) -> list:
    """Run ``target(i)`` on ``n`` threads at once; return results, re-raise the first error."""
    results: list = [None] * n
    errors: list[BaseException] = []
    barrier = threading.Barrier(n)

    def runner(i: int) -> None:
        try:
            barrier.wait(10)
            results[i] = target(i)
        except BaseException as exc:  # noqa: BLE001 - reported to the test below
            errors.append(exc)

    threads = [threading.Thread(target=runner, args=(i,), name=f"client-{i}")
               for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    assert not any(t.is_alive() for t in threads), "client threads hung"
    if errors:
        raise errors[0]
    return results
