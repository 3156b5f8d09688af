"""Faults (issue #7, item 3): a peer killed mid-transfer, a peer frozen, and
Node.close() while other threads are blocked in every blocking call."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from libp2p_stream_sync import OpenStreamError
from libp2p_stream_sync.limits import Limits

from reliability_helpers import make_node  # noqa: F401 (fixture)
from reliability_helpers import PoolEchoServer, p2p_addr, wait_until

pytestmark = pytest.mark.timeout(60)
HERE = os.path.dirname(os.path.abspath(__file__))


class PeerProcess:
    def __init__(self, muxer: str = "yamux") -> None:
        env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(HERE)))
        self.proc = subprocess.Popen([sys.executable, os.path.join(HERE, "peer_process.py"),
                                      muxer], stdout=subprocess.PIPE, text=True, env=env)
        line = self.proc.stdout.readline()
        assert line.startswith("LISTEN "), line
        self.addr = line.split()[1]

    def signal(self, sig: int) -> None:
        os.kill(self.proc.pid, sig)

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
            self.proc.kill()
        self.proc.wait(10)


@pytest.fixture
def peer_process():
    made = []

    def make(muxer="yamux"):
        p = PeerProcess(muxer)
        made.append(p)
        return p
    yield make
    for p in made:
        p.close()


def _blocked(fn) -> tuple[threading.Thread, list]:
    """Run ``fn`` in a thread; the list gets ("ok", value) or ("error", exc, seconds)."""
    out: list = []
    start = time.monotonic()

    def run():
        try:
            out.append(("ok", fn(), time.monotonic() - start))
        except BaseException as exc:  # noqa: BLE001 - the test looks at it
            out.append(("error", exc, time.monotonic() - start))
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, out


def _reader_and_writer(control, addr):
    """A reader blocked on an echo stream that never answers (nothing written), and a
    writer blocked on /hold (the peer never reads: the window fills up)."""
    reader_stream = control.open_stream(addr, "/echo/1.0.0", timeout=10)
    reader_stream.settimeout(None)  # only the fault may wake it
    writer_stream = control.open_stream(addr, "/hold/1.0.0", timeout=10)
    writer_stream.settimeout(None)
    chunk = b"w" * (1 << 20)

    def write_forever():
        while True:
            writer_stream.write(chunk)
    r = _blocked(reader_stream.read)
    w = _blocked(write_forever)
    time.sleep(0.5)  # both are blocked now: nothing arrives, the window is full
    assert not r[1] and not w[1], (r[1], w[1])
    return r, w


@pytest.mark.parametrize("muxer", ["yamux", "mplex"])
def test_peer_killed_mid_transfer(make_node, peer_process, muxer):
    peer = peer_process(muxer)
    client = make_node(listen=[], muxers=[muxer])
    control = client.new_control()
    # the /echo protocol is not served by the peer process: use a transfer on /hold
    reader_stream = control.open_stream(peer.addr, "/hold/1.0.0", timeout=10)
    reader_stream.settimeout(None)
    assert reader_stream.read_exactly(1000) == b"h" * 1000  # mid-transfer
    writer_stream = control.open_stream(peer.addr, "/hold/1.0.0", timeout=10)
    writer_stream.settimeout(None)

    def read_forever():
        while reader_stream.read(65536):
            time.sleep(0.01)  # slow reader: the peer's 1 MiB is still flowing

    def write_forever():
        while True:
            writer_stream.write(b"w" * (1 << 20))
    r = _blocked(read_forever)
    w = _blocked(write_forever)
    time.sleep(0.3)
    assert not r[1] and not w[1]
    killed = time.monotonic()
    peer.signal(signal.SIGKILL)
    r[0].join(5)
    w[0].join(5)
    assert r[1] and w[1], "a blocked call did not return after the peer died"
    for result in (r[1][0], w[1][0]):
        assert result[0] == "error" and isinstance(result[1], OSError), result
    took = max(time.monotonic() - killed, 0)
    assert took < 2.0, f"detected after {took:.2f} s"
    assert wait_until(lambda: client.connected_peers() == [], 2)


def test_frozen_peer_is_detected_by_keepalive(make_node, peer_process):
    interval, timeout = 0.3, 0.5
    peer = peer_process()
    client = make_node(listen=[], limits=Limits(keepalive_interval=interval,
                                                keepalive_timeout=timeout))
    control = client.new_control()
    stream = control.open_stream(peer.addr, "/hold/1.0.0", timeout=10)
    stream.settimeout(None)
    stream.read_exactly(1 << 20)  # the peer's whole write: now it stays silent
    r = _blocked(stream.read)
    peer.signal(signal.SIGSTOP)
    frozen = time.monotonic()
    r[0].join(interval + timeout + 3)
    assert r[1], "a reader on a frozen peer never woke up"
    kind, exc, _ = r[1][0]
    assert kind == "error" and isinstance(exc, OSError), r[1]
    took = time.monotonic() - frozen
    # at most one interval of idleness, then one keepalive timeout (+ timer slack)
    assert took < interval + timeout + 1.0, f"detected after {took:.2f} s"
    assert client.connected_peers() == []
    print(f"frozen peer detected after {took:.2f} s "
          f"(keepalive_interval={interval}, keepalive_timeout={timeout})")


def test_close_wakes_every_blocked_call(make_node):
    server = make_node()
    echo = PoolEchoServer(server)
    hold = server.new_control().accept("/hold/1.0.0")  # accepted, never read
    client = make_node()
    control = client.new_control()
    addr = p2p_addr(server)
    r, w = _reader_and_writer(control, addr)
    # open_stream blocked on a dial that never completes its handshake
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    from libp2p_stream_sync import Keypair
    ghost = Keypair.generate().peer_id
    o = _blocked(lambda: control.open_stream(
        f"/ip4/127.0.0.1/tcp/{silent.getsockname()[1]}/p2p/{ghost}", "/x/1.0.0",
        timeout=30))
    incoming = client.new_control().accept("/never/1.0.0")
    a = _blocked(lambda: incoming.get(timeout=30))
    it = _blocked(lambda: list(client.new_control().accept("/iter/1.0.0")))
    time.sleep(0.5)
    assert not any(out for _, out in (r, w, o, a, it))
    start = time.monotonic()
    client.close()
    closed_in = time.monotonic() - start
    for t, out in (r, w, o, a, it):
        t.join(5)
        assert out, "a blocked call did not return after Node.close()"
    took = time.monotonic() - start
    assert closed_in < 5 and took < 5, (closed_in, took)
    assert r[1][0][0] == "error" and isinstance(r[1][0][1], OSError), r[1]
    assert w[1][0][0] == "error" and isinstance(w[1][0][1], OSError), w[1]
    assert o[1][0][0] == "error" and isinstance(o[1][0][1], (OpenStreamError, OSError)), o[1]
    assert a[1][0][0] == "error" and isinstance(a[1][0][1], EOFError), a[1]
    assert it[1][0] == ("ok", [], it[1][0][2])
    silent.close()
    hold.close()
    echo.close()
