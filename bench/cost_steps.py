#!/usr/bin/env python3
"""Single-process micro-benchmarks of the steps inside one operation (issue #17).

    python3 bench/cost_steps.py [--n 20000]

Prints the CPU time (``time.process_time``) per step, to set beside bench/run.py's
CPU per operation of whole processes:

* engines only, both sides in memory: yamux + multistream-select + Noise transport
  for one stream open (SYN, header + proposal, answer, 1 byte each way, FIN each way)
  and for one 16-byte round trip on an open stream;
* one Noise transport frame (encrypt, then get_buffer / buffer_updated / trim) against
  the bare ChaCha20-Poly1305 calls;
* one thread hand-off pair as the blocking facade makes it: an app thread's
  ``Reactor.call_soon`` wakes the reactor, whose callback notifies a ``Condition`` the
  app thread waits on; beside a bare two-thread ``Condition`` ping-pong;
* the Noise XX responder's engine work per handshake, and the crypto primitives in it.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import resource
import sys
import threading
import time
import timeit

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from libp2p_stream_sync import Keypair  # noqa: E402
from libp2p_stream_sync.engines.multistream import (  # noqa: E402
    Agreed, MultistreamDialer, MultistreamListener,
)
from libp2p_stream_sync.engines.muxer_events import DataReceived  # noqa: E402
from libp2p_stream_sync.engines.noise import NoiseHandshake, NoiseIdentity  # noqa: E402
from libp2p_stream_sync.engines.noise_transport import NoiseTransport  # noqa: E402
from libp2p_stream_sync.engines.yamux import YamuxSession  # noqa: E402
from libp2p_stream_sync.reactor import Reactor  # noqa: E402

ECHO = "/echo/1.0.0"


def per_call(fn, n: int) -> float:
    """CPU µs per call of ``fn`` (after a short warm-up)."""
    for _ in range(min(200, n)):
        fn()
    t0 = time.process_time()
    for _ in range(n):
        fn()
    return (time.process_time() - t0) / n * 1e6


class EnginePair:
    """Client and server yamux sessions over a pair of Noise transports, in memory."""

    def __init__(self) -> None:
        k1, k2 = os.urandom(32), os.urandom(32)
        self.nc, self.ns = NoiseTransport(k1, k2), NoiseTransport(k2, k1)
        self.yc = YamuxSession(True, keepalive_interval=None)
        self.ys = YamuxSession(False, keepalive_interval=None)
        for _ in range(2):  # the sessions' opening pings
            self.to_server()
            self.to_client()

    @staticmethod
    def _wire(src_y, src_n, dst_n, dst_y) -> list:
        out = src_y.data_to_send()
        if not out:
            return []
        frame = src_n.encrypt(out)
        buf = dst_n.get_buffer(8192)
        buf[:len(frame)] = frame
        buf.release()
        plain = dst_n.buffer_updated(len(frame))
        dst_n.trim(8192)
        return dst_y.receive_data(plain)

    def to_server(self) -> list:
        return self._wire(self.yc, self.nc, self.ns, self.ys)

    def to_client(self) -> list:
        return self._wire(self.ys, self.ns, self.nc, self.yc)

    def open_echo_close(self) -> None:
        yc, ys = self.yc, self.ys
        sid = yc.open_stream()
        dialer = MultistreamDialer([ECHO])
        yc.send_data(sid, dialer.data_to_send())
        listener = MultistreamListener(lambda p: p == ECHO)
        for ev in self.to_server():
            if isinstance(ev, DataReceived):
                listener.receive_data(ev.data)
        ys.send_data(sid, listener.data_to_send())
        agreed = None
        for ev in self.to_client():
            if isinstance(ev, DataReceived):
                agreed = dialer.receive_data(ev.data)
        assert isinstance(agreed, Agreed)
        yc.send_data(sid, b"x")
        self.to_server()
        ys.send_data(sid, b"x")
        ys.consumed(sid, 1)
        self.to_client()
        yc.consumed(sid, 1)
        yc.close_stream(sid)
        self.to_server()
        ys.close_stream(sid)
        self.to_client()

    def round_trip_fn(self, size: int = 16):
        sid = self.yc.open_stream()
        self.to_server()
        self.to_client()
        msg = b"x" * size

        def rt() -> None:
            self.yc.send_data(sid, msg)
            self.to_server()
            self.ys.consumed(sid, size)
            self.ys.send_data(sid, msg)
            self.to_client()
            self.yc.consumed(sid, size)
        return rt


def noise_frame_fn():
    k1, k2 = os.urandom(32), os.urandom(32)
    a, b = NoiseTransport(k1, k2), NoiseTransport(k2, k1)
    msg = b"x" * 28  # 16 bytes of data + a 12-byte yamux header

    def frame() -> None:
        wire = a.encrypt(msg)
        buf = b.get_buffer(8192)
        buf[:len(wire)] = wire
        buf.release()
        b.buffer_updated(len(wire))
        b.trim(8192)
    return frame


def bare_aead_fn():
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
    c = ChaCha20Poly1305(os.urandom(32))
    nonce, msg = bytes(12), b"x" * 28
    return lambda: c.decrypt(nonce, c.encrypt(nonce, msg, None), None)


def usage() -> tuple[float, int, int]:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime, ru.ru_nvcsw, ru.ru_nivcsw


def handoff(n: int) -> tuple[float, float, float]:
    """CPU µs and switches per app -> reactor -> app hand-off pair."""
    reactor = Reactor(name="cost-steps")
    reactor.start()
    cond = threading.Condition()
    done = [0]

    def on_reactor() -> None:
        with cond:
            done[0] += 1
            cond.notify()

    u0 = usage()
    for i in range(n):
        reactor.call_soon(on_reactor)
        with cond:
            while done[0] <= i:
                cond.wait(5)
    u1 = usage()
    reactor.stop()
    reactor.join(5)
    return ((u1[0] - u0[0]) / n * 1e6, (u1[1] - u0[1]) / n, (u1[2] - u0[2]) / n)


def condition_pingpong(n: int) -> tuple[float, float, float]:
    cond = threading.Condition()
    turn = [0]

    def pong() -> None:
        for _ in range(n):
            with cond:
                while turn[0] != 1:
                    cond.wait(5)
                turn[0] = 0
                cond.notify()

    t = threading.Thread(target=pong)
    t.start()
    u0 = usage()
    for _ in range(n):
        with cond:
            turn[0] = 1
            cond.notify()
            while turn[0] != 0:
                cond.wait(5)
    u1 = usage()
    t.join(5)
    return ((u1[0] - u0[0]) / n * 1e6, (u1[1] - u0[1]) / n, (u1[2] - u0[2]) / n)


def noise_responder(n: int) -> tuple[float, float]:
    """(both sides, responder only) µs per Noise XX handshake, node identities reused."""
    ki, kr = Keypair.generate(), Keypair.generate()
    idi, idr = NoiseIdentity(ki), NoiseIdentity(kr)
    mux = ["/yamux/1.0.0"]
    spent = [0.0]

    def timed(fn, *args):
        t0 = time.process_time()
        result = fn(*args)
        spent[0] += time.process_time() - t0
        return result

    def once() -> None:
        i = NoiseHandshake(ki, initiator=True, muxers=mux, identity=idi)
        r = timed(lambda: NoiseHandshake(kr, initiator=False, muxers=mux, identity=idr))
        timed(r.receive_data, i.data_to_send())
        i.receive_data(timed(r.data_to_send))
        timed(r.receive_data, i.data_to_send())
        assert i.complete and r.complete
        timed(r.to_transport)
        i.to_transport()

    for _ in range(20):
        once()
    spent[0] = 0.0
    t0 = time.process_time()
    for _ in range(n):
        once()
    return (time.process_time() - t0) / n * 1e6, spent[0] / n * 1e6


def crypto_primitives() -> dict[str, float]:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
    a = X25519PrivateKey.generate()
    b = X25519PrivateKey.generate().public_key()
    s = Ed25519PrivateKey.generate()
    pub, msg = s.public_key(), b"x" * 56
    sig = s.sign(msg)
    fns = {"X25519 key generation + public key": lambda: X25519PrivateKey.generate()
           .public_key().public_bytes_raw(),
           "X25519 exchange": lambda: a.exchange(b),
           "Ed25519 verify": lambda: pub.verify(sig, msg)}
    return {k: min(timeit.repeat(f, number=200, repeat=5)) / 200 * 1e6 for k, f in fns.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=20000, help="repetitions per figure")
    n = p.parse_args().n
    pair = EnginePair()
    print(f"engines, both sides, per stream open + 1-byte echo + close: "
          f"{per_call(pair.open_echo_close, n // 4):.1f} µs")
    print(f"engines, both sides, per 16-byte round trip: "
          f"{per_call(pair.round_trip_fn(), n):.1f} µs")
    print(f"Noise transport, one 28-byte frame out and in: {per_call(noise_frame_fn(), n):.1f} µs"
          f" (bare ChaCha20-Poly1305 encrypt + decrypt {per_call(bare_aead_fn(), n):.1f} µs)")
    cpu, vol, invol = handoff(n)
    print(f"hand-off pair app -> Reactor.call_soon -> Condition -> app: {cpu:.1f} µs, "
          f"{vol:.2f} vol + {invol:.2f} invol switches")
    cpu, vol, invol = condition_pingpong(n)
    print(f"bare Condition ping-pong pair between two threads: {cpu:.1f} µs, "
          f"{vol:.2f} vol + {invol:.2f} invol switches")
    both, responder = noise_responder(max(50, n // 100))
    print(f"Noise XX engine per handshake (node identities reused): both sides {both:.0f} µs, "
          f"responder {responder:.0f} µs")
    for name, us in crypto_primitives().items():
        print(f"  {name}: {us:.0f} µs")


if __name__ == "__main__":
    main()
