"""Micro-benchmark: the /tls/1.0.0 engine's handshake CPU and record throughput.

Run: python3 bench/tls_engine.py [handshakes]

Both engines run in this process, talking through memory (no sockets). Prints the
CPU time (``time.process_time``) each side spends per handshake, with cached
per-node identities (one certificate per node, as the node will use them), then the
MB/s of ``TlsTransport.encrypt`` and ``receive_data`` for 64 KiB writes, and the
Noise handshake for comparison.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from libp2p_stream_sync.engines.noise import NoiseHandshake, NoiseIdentity  # noqa: E402
from libp2p_stream_sync.engines.tls import TlsHandshake, TlsIdentity  # noqa: E402
from libp2p_stream_sync.identity import Keypair  # noqa: E402

MUXERS = ["/yamux/1.0.0"]
WRITE = bytes(64 * 1024)


class Clock:
    """Adds up the CPU time of calls made on one side's behalf."""

    def __init__(self) -> None:
        self.total = 0.0

    def __call__(self, func: Callable, *args):
        start = time.process_time()
        result = func(*args)
        self.total += time.process_time() - start
        return result


def tls_handshake(client_id: TlsIdentity, server_id: TlsIdentity, cc: Clock, sc: Clock):
    client = cc(lambda: TlsHandshake(client_id.keypair, initiator=True, identity=client_id,
                                     expected_peer=server_id.keypair.peer_id, muxers=MUXERS))
    server = sc(lambda: TlsHandshake(server_id.keypair, initiator=False, identity=server_id,
                                     muxers=MUXERS))
    sc(server.receive_data, cc(client.data_to_send))
    cc(client.receive_data, sc(server.data_to_send))
    sc(server.receive_data, cc(client.data_to_send))
    client_transport, _ = cc(client.to_transport)
    server_transport, _ = sc(server.to_transport)
    cc(client_transport.receive_data, sc(server.data_to_send))  # session tickets
    return client_transport, server_transport


def noise_handshake_ms(count: int) -> float:
    a, b = Keypair.generate(), Keypair.generate()
    ia, ib = NoiseIdentity(a), NoiseIdentity(b)
    start = time.process_time()
    for _ in range(count):
        i = NoiseHandshake(a, initiator=True, identity=ia, muxers=MUXERS)
        r = NoiseHandshake(b, initiator=False, identity=ib, muxers=MUXERS)
        r.receive_data(i.data_to_send())
        i.receive_data(r.data_to_send())
        r.receive_data(i.data_to_send())
        i.to_transport()
        r.to_transport()
    return (time.process_time() - start) / count * 1e3


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    client_id, server_id = TlsIdentity(Keypair.generate()), TlsIdentity(Keypair.generate())
    cc, sc = Clock(), Clock()
    for _ in range(count):
        client_transport, server_transport = tls_handshake(client_id, server_id, cc, sc)
    print(f"TLS handshake CPU over {count}: client {cc.total / count * 1e3:.2f} ms, "
          f"server {sc.total / count * 1e3:.2f} ms per handshake")
    print(f"Noise handshake CPU, both sides together: {noise_handshake_ms(count):.2f} ms")
    writes = 400
    enc, dec = Clock(), Clock()
    wires = [enc(client_transport.encrypt, WRITE) for _ in range(writes)]
    for wire in wires:
        dec(server_transport.receive_data, wire)
    mb = writes * len(WRITE) / 1e6
    print(f"64 KiB writes: encrypt {mb / enc.total:.0f} MB/s, "
          f"receive_data {mb / dec.total:.0f} MB/s (CPU time; "
          f"{client_transport.cipher_name()})")


if __name__ == "__main__":
    main()
