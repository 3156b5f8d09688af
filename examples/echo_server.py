#!/usr/bin/env python3
"""The server half of a two-process example: serve /echo/1.0.0 and print our address.

Run it, then give the printed address to ``echo_client.py`` in another terminal::

    python3 examples/echo_server.py                      # /ip4/127.0.0.1/tcp/0
    python3 examples/echo_server.py /ip4/0.0.0.0/tcp/4001 /ip6/::/tcp/4001

It prints one full multiaddr per listen address on stdout, ``/ip4/127.0.0.1/tcp/41023/
p2p/12D3KooW...``: the transport address with the port actually bound, then our peer
id, which the client checks during the handshake. It runs until Ctrl-C or SIGTERM.
Each stream is echoed on its own thread until the client half-closes its side.
"""

from __future__ import annotations

import signal
import sys
import threading

from libp2p_stream_sync import Node, Stream

PROTOCOL = "/echo/1.0.0"


def echo(stream: Stream) -> None:
    """Send back everything the peer sends, until it closes its side."""
    with stream:
        stream.settimeout(30)  # a silent client does not hold the thread forever
        while data := stream.read(65536):
            stream.write(data)


def main(listen: list[str]) -> None:
    # SIGTERM (e.g. from a process manager) leaves through the `with` blocks like Ctrl-C.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    with Node(listen=listen or ["/ip4/127.0.0.1/tcp/0"]) as node:
        with node.new_control().accept(PROTOCOL) as incoming:
            for addr in node.listen_addrs:
                print(f"{addr}/p2p/{node.peer_id}", flush=True)
            print(f"serving {PROTOCOL}; Ctrl-C to stop", file=sys.stderr)
            for peer, stream in incoming:
                print(f"stream from {peer}", file=sys.stderr)
                threading.Thread(target=echo, args=(stream,), daemon=True).start()


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except KeyboardInterrupt:
        pass
