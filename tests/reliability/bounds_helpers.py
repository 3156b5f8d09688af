"""Helpers for the resource-bound tests: what a node's connections hold, a raw mplex
client, honest rounds (echo + ping) timed, and a sink protocol nobody reads."""

from __future__ import annotations

import collections
import os
import threading
import time
from concurrent.futures import Future

from libp2p_stream_sync import Node
from libp2p_stream_sync.engines.mplex import MplexSession

from reliability_helpers import MPLEX, SecureClient, p2p_addr

#: A protocol the server accepts into a queue that nobody takes from: its streams
#: are never read (a handler that never reads, or streams waiting for a worker).
SINK = "/sink/1.0.0"


def held_by(node: Node) -> dict[str, int]:
    """``Connection.buffer_usage()`` summed over the node's open connections, read on
    its reactor thread (so the figures are consistent)."""
    done: Future = Future()

    def probe() -> None:
        total: collections.Counter = collections.Counter()
        for conn in node.connections():
            total.update(conn.buffer_usage())
        done.set_result(dict(total))

    node.reactor.call_soon(probe)
    return done.result(5)


class PeakSampler:
    """Samples ``held_by(node)`` every ``interval`` seconds in a thread; keeps maxima."""

    def __init__(self, node: Node, interval: float = 0.02) -> None:
        self.peak: collections.Counter = collections.Counter()
        self.peak_total = 0
        self._node = node
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            held = held_by(self._node)
            for key, value in held.items():
                self.peak[key] = max(self.peak[key], value)
            self.peak_total = max(self.peak_total, sum(held.values()))
            self._stop.wait(self._interval)

    def stop(self) -> dict[str, int]:
        self._stop.set()
        self._thread.join(5)
        return dict(self.peak)


def honest_round(g, size: int = 4096) -> float:
    """An echo and a ping from the good node over its own connection; seconds taken."""
    start = time.monotonic()
    g.check(size)
    g.good.ping(p2p_addr(g.server), timeout=10)
    return time.monotonic() - start


class HonestLoop:
    """Runs honest rounds in a thread until stopped; records each round's duration
    and any failure."""

    def __init__(self, g) -> None:
        self.times: list[float] = []
        self.errors: list[BaseException] = []
        self._g = g
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.times.append(honest_round(self._g))
            except Exception as exc:
                self.errors.append(exc)
                return

    def stop(self) -> list[float]:
        self._stop.set()
        self._thread.join(30)
        assert not self.errors, self.errors
        assert self.times, "no honest round completed"
        return self.times


class MplexClient(SecureClient):
    """A SecureClient with an mplex session (mplex has no flow control: a peer may
    send as much as it likes)."""

    def __init__(self, node: Node, **kw) -> None:
        super().__init__(node, muxer=MPLEX, **kw)
        assert self.muxer_protocol == MPLEX, self.muxer_protocol
        self.session = MplexSession(True)

    def flush(self) -> bool:
        out = self.session.data_to_send()
        return self.send_plain(bytes(out)) if out else True


def drain_socket(sock, stop: threading.Event) -> threading.Thread:
    """Read (and discard) everything the node sends on ``sock`` until ``stop``."""
    def run() -> None:
        sock.settimeout(0.2)
        while not stop.is_set():
            try:
                if not sock.recv(1 << 20):
                    return
            except TimeoutError:
                continue
            except OSError:
                return
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def payload(n: int) -> bytes:
    return os.urandom(n)
