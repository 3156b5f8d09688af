"""Relayed vs direct on loopback, in one run: ping round trip, stream open latency and
perf throughput.

    python3 bench/relay.py [--mib 16] [--rounds 3] [--pings 50] [--opens 100]

Three nodes in one process (each with its own reactor thread): a relay without data or
time limits (``RelayLimits(circuit_data=0, circuit_duration=0)``), a target holding a
slot on it (perf, ping and echo served), and two dialers: one reaches the target directly,
the other only through ``/p2p/<relay>/p2p-circuit/p2p/<target>``. Rounds alternate
direct and relayed; each figure is the median of its rounds. A stream open is
``open_stream`` (open + multistream negotiation of ``/echo/1.0.0``), a 1-byte echo and
``close``, one after another on the open connection; opens/s is their count over the
wall time. All three nodes share the
GIL and the machine's two cores, so the relayed figures include the relay's work.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from libp2p_stream_sync import Node, PeerId  # noqa: E402
from libp2p_stream_sync.limits import RelayLimits  # noqa: E402
from libp2p_stream_sync.protocols import echo  # noqa: E402

LOOPBACK = ["/ip4/127.0.0.1/tcp/0"]
MiB = 1 << 20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=16, help="perf bytes each way (MiB)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pings", type=int, default=50)
    parser.add_argument("--opens", type=int, default=100, help="stream opens per round")
    args = parser.parse_args()
    unlimited = RelayLimits(circuit_data=0, circuit_duration=0)
    with Node(listen=LOOPBACK, relay_service=unlimited) as relay, \
            Node(listen=LOOPBACK, enable_perf=True) as target, \
            Node() as direct_dialer, Node() as relayed_dialer:
        relay_addr = f"{relay.listen_addrs[0]}/p2p/{relay.peer_id}"
        target.add_relay(relay_addr)
        echo_server = echo.serve_echo(target.new_control())
        paths = {"direct": (direct_dialer, f"{target.listen_addrs[0]}/p2p/{target.peer_id}"),
                 "relayed": (relayed_dialer,
                             f"{relay_addr}/p2p-circuit/p2p/{target.peer_id}")}
        results: dict[str, dict[str, list[float]]] = {
            name: {"rtt": [], "open": [], "opens": [], "up": [], "down": []}
            for name in paths}
        for name, (dialer, addr) in paths.items():
            dialer.dial(addr)
            (conn,) = dialer.connections(target.peer_id)
            assert conn.relayed == (name == "relayed"), name
        size = args.mib * MiB
        for _ in range(args.rounds):
            for name, (dialer, _addr) in paths.items():
                figures = results[name]
                rtts = dialer.ping(target.peer_id, count=args.pings, timeout=30)
                figures["rtt"].append(statistics.median(rtts) * 1e3)
                latencies, seconds = open_streams(dialer, target.peer_id, args.opens)
                figures["open"].append(statistics.median(latencies) * 1e3)
                figures["opens"].append(args.opens / seconds)
                for way, up, down in (("up", size, 0), ("down", 0, size)):
                    started = time.perf_counter()
                    dialer.perf(target.peer_id, up, down, timeout=120)
                    figures[way].append(size / (time.perf_counter() - started) / 1e6)
        echo_server.close()
    print(f"| path | ping RTT (ms, median of {args.pings}) | stream open + 1-byte echo + "
          f"close (ms, median of {args.opens}) | opens/s | upload MB/s | download MB/s |")
    print("|---|---|---|---|---|---|")
    for name, figures in results.items():
        print(f"| {name} | {statistics.median(figures['rtt']):.3f} | "
              f"{statistics.median(figures['open']):.3f} | "
              f"{statistics.median(figures['opens']):.0f} | "
              f"{statistics.median(figures['up']):.1f} | "
              f"{statistics.median(figures['down']):.1f} |")
    print(f"({args.rounds} rounds, {args.mib} MiB each way per perf run)")


def open_streams(dialer: Node, peer: PeerId, count: int) -> tuple[list[float], float]:
    """``count`` echo streams opened, echoing 1 byte and closed one after another: each
    one's seconds, and the seconds of all."""
    control = dialer.new_control()
    latencies = []
    started = time.perf_counter()
    for _ in range(count):
        begun = time.perf_counter()
        stream = control.open_stream(peer, echo.PROTOCOL, timeout=30)
        stream.write(b"x")
        assert stream.read_exactly(1) == b"x"
        stream.close()
        latencies.append(time.perf_counter() - begun)
    return latencies, time.perf_counter() - started


if __name__ == "__main__":
    main()
