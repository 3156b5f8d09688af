"""Micro-benchmark: Noise transport encrypt + decrypt throughput vs raw ChaCha20-Poly1305.

Run: python3 bench/noise_transport.py [seconds-per-case]

For each write size it prints MB/s of ``NoiseTransport.encrypt`` alone, and of
decryption two ways: ``receive_data`` fed 64 KiB chunks (as ``sock.recv`` would
deliver them, so frames straddle chunk boundaries) and the zero-copy
``get_buffer``/``buffer_updated`` path with 256 KiB reads (the copy into the
buffer stands in for ``sock.recv_into``). The raw ``ChaCha20Poly1305`` speed on
full 65519-byte frames is printed first for reference.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305  # noqa: E402

from libp2p_stream_sync.engines.noise import MAX_FRAME_PLAINTEXT, NoiseTransport  # noqa: E402

RECV_CHUNK = 64 * 1024
RECV_INTO_SIZE = 256 * 1024


def _rate(nbytes: int, seconds: float) -> str:
    return f"{nbytes / seconds / 1e6:8.0f} MB/s"


def _timed(fn, budget: float) -> tuple[int, float]:
    """Call ``fn`` repeatedly for about ``budget`` seconds; returns (calls, elapsed)."""
    calls, start = 0, time.perf_counter()
    while True:
        fn()
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= budget:
            return calls, elapsed


def bench_size(size: int, budget: float) -> None:
    key_a, key_b = os.urandom(32), os.urandom(32)
    sender, receiver = NoiseTransport(key_a, key_b), NoiseTransport(key_b, key_a)
    data = os.urandom(size)

    calls, elapsed = _timed(lambda: sender.encrypt(data), budget)
    encrypt_rate = _rate(calls * size, elapsed)

    # Pre-encrypt a stream for the receiver, then time decrypting it chunk by chunk.
    sender = NoiseTransport(key_a, key_b)
    writes = max(1, (32 << 20) // size)
    wire = memoryview(b"".join(bytes(sender.encrypt(data)) for _ in range(writes)))
    expected = writes * size

    receiver = NoiseTransport(key_b, key_a)
    start = time.perf_counter()
    got = 0
    for pos in range(0, len(wire), RECV_CHUNK):
        got += len(receiver.receive_data(wire[pos:pos + RECV_CHUNK]))
    receive_rate = _rate(got, time.perf_counter() - start)
    assert got == expected

    receiver = NoiseTransport(key_b, key_a)
    start = time.perf_counter()
    got = pos = 0
    while pos < len(wire):
        view = receiver.get_buffer(RECV_INTO_SIZE)
        n = min(RECV_INTO_SIZE, len(wire) - pos)
        view[:n] = wire[pos:pos + n]
        del view
        got += len(receiver.buffer_updated(n))
        pos += n
    buffer_rate = _rate(got, time.perf_counter() - start)
    assert got == expected
    print(f"{size >> 10:5d} KiB writes: encrypt {encrypt_rate}   decrypt: receive_data "
          f"{receive_rate}, get_buffer {buffer_rate}")


def bench_raw(budget: float) -> None:
    aead = ChaCha20Poly1305(os.urandom(32))
    data = os.urandom(MAX_FRAME_PLAINTEXT)
    out = bytearray(MAX_FRAME_PLAINTEXT + 16)
    nonce = bytes(12)
    calls, elapsed = _timed(lambda: aead.encrypt_into(nonce, data, None, out), budget)
    encrypt_rate = _rate(calls * len(data), elapsed)
    sealed = aead.encrypt(nonce, data, None)
    calls, elapsed = _timed(lambda: aead.decrypt_into(nonce, sealed, None, out[:-16]), budget)
    print(f"raw ChaCha20-Poly1305, 65519-byte frames: encrypt_into {encrypt_rate}, "
          f"decrypt_into {_rate(calls * len(data), elapsed)}")


def main() -> None:
    budget = float(sys.argv[1]) if len(sys.argv) > 1 else 1.0
    bench_raw(budget)
    for size in (64 * 1024, 1024 * 1024):
        bench_size(size, budget)


if __name__ == "__main__":
    main()
