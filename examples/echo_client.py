#!/usr/bin/env python3
"""The client half of a two-process example: talk to ``echo_server.py`` by its address.

::

    python3 examples/echo_client.py /ip4/127.0.0.1/tcp/41023/p2p/12D3KooW... hello world

Opens one /echo/1.0.0 stream per message (all on one connection), prints what comes
back, then pings the server. The address must end in ``/p2p/<peer id>``: the
handshake proves that the peer we reached holds that id. Exits 1 with the reason if
the server cannot be reached or refuses the protocol.
"""

from __future__ import annotations

import sys

from libp2p_stream_sync import Node, OpenStreamError

PROTOCOL = "/echo/1.0.0"


def main(address: str, messages: list[str]) -> int:
    with Node() as node:
        control = node.new_control()
        try:
            for message in messages or ["hello, libp2p"]:
                with control.open_stream(address, PROTOCOL, timeout=10) as stream:
                    stream.settimeout(10)
                    stream.write(message.encode())
                    stream.close_write()  # half-close: the server sees the end
                    print(f"echoed: {stream.readall().decode()}")
        except OpenStreamError as exc:  # unreachable, wrong peer id, protocol refused...
            print(f"cannot talk to {address}: {exc}", file=sys.stderr)
            return 1
        # The connection is open now, so the server is known by its peer id alone.
        server = stream.peer_id
        rtt = node.ping(server, count=1, timeout=10)[0]
        print(f"ping {server}: {rtt * 1000:.2f} ms")
    return 0


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(f"usage: {sys.argv[0]} MULTIADDR [MESSAGE ...]")
    sys.exit(main(sys.argv[1], sys.argv[2:]))
