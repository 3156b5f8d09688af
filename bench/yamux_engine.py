"""Micro-benchmark of the yamux engine alone: framing and flow control, no sockets.

Pumps ``--total`` MiB (default 256) from one session to another in memory, in writes
of 64 KiB .. 1 MiB, with the receiver consuming everything at once (so windows grow
to their maximum), and prints the throughput.

    python3 bench/yamux_engine.py [--total MIB] [--streams N]
"""

from __future__ import annotations

import argparse
import pathlib
import random
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from libp2p_stream_sync.engines.muxer_events import DataReceived, StreamOpened
from libp2p_stream_sync.engines.yamux import YamuxSession


def pump(total: int, streams: int, seed: int = 1) -> tuple[float, int]:
    """Send ``total`` bytes spread over ``streams`` streams; return (seconds, received)."""
    rng = random.Random(seed)
    client = YamuxSession(True, keepalive_interval=None)
    server = YamuxSession(False, keepalive_interval=None)
    # Exchange the RTT probes so auto-tuning has a (zero) RTT to work with.
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    client.receive_data(server.data_to_send())
    server.receive_data(client.data_to_send())

    sizes = [rng.randrange(64 * 1024, 1024 * 1024 + 1) for _ in range(64)]
    blobs = [memoryview(bytes(rng.getrandbits(8) for _ in range(256)) * (size // 256 + 1))[:size]
             for size in sizes]
    sids = [client.open_stream() for _ in range(streams)]
    pending = {sid: memoryview(b"") for sid in sids}
    sent = received = 0
    turn = 0
    start = time.perf_counter()
    while received < total:
        for sid in sids:
            chunk = pending[sid]
            if not chunk and sent < total:
                chunk = blobs[turn % len(blobs)][: total - sent]
                turn += 1
                sent += len(chunk)
            if chunk:
                taken = client.send_data(sid, chunk)
                pending[sid] = chunk[taken:]
        wire = client.data_to_send()
        for event in server.receive_data(wire):
            if type(event) is DataReceived:
                n = len(event.data)
                received += n
                server.consumed(event.stream_id, n)
            elif type(event) is not StreamOpened:
                raise RuntimeError(f"unexpected event {event}")
        client.receive_data(server.data_to_send())
    return time.perf_counter() - start, received


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--total", type=int, default=256, help="MiB to transfer")
    parser.add_argument("--streams", type=int, default=1)
    args = parser.parse_args()
    seconds, received = pump(args.total * 1024 * 1024, args.streams)
    print(f"yamux engine: {received / 2**20:.0f} MiB over {args.streams} stream(s) in "
          f"{seconds:.3f} s = {received / seconds / 1e6:.0f} MB/s")


if __name__ == "__main__":
    main()
