#!/usr/bin/env python3
"""Two libp2p nodes in one process: one serves /echo/1.0.0, the other talks to it.

Run it as is::

    python3 examples/echo.py

The server side uses only the public API: ``control.accept`` hands us
``(peer, stream)`` pairs and we echo each stream on its own thread. The client opens
streams with ``control.open_stream`` and also pings the server and asks who it is.
"""

from __future__ import annotations

import threading

from libp2p_stream_sync import Node, Stream

PROTOCOL = "/echo/1.0.0"


def echo(stream: Stream) -> None:
    """Send back everything the peer sends, until it closes its side."""
    with stream:
        stream.settimeout(10)
        while data := stream.read(65536):
            stream.write(data)


def serve(node: Node, ready: threading.Event) -> None:
    """Accept echo streams until the node closes."""
    control = node.new_control()
    with control.accept(PROTOCOL) as incoming:
        ready.set()
        for peer, stream in incoming:
            print(f"server: stream from {peer}")
            threading.Thread(target=echo, args=(stream,), daemon=True).start()


def main() -> None:
    with Node(listen=["/ip4/127.0.0.1/tcp/0"]) as server, Node() as client:
        ready = threading.Event()
        threading.Thread(target=serve, args=(server, ready), daemon=True).start()
        ready.wait(5)
        address = f"{server.listen_addrs[0]}/p2p/{server.peer_id}"
        print(f"server: listening on {address}")

        control = client.new_control()
        for message in (b"hello, libp2p", b"a second stream, same connection"):
            with control.open_stream(address, PROTOCOL, timeout=10) as stream:
                stream.settimeout(10)
                stream.write(message)
                stream.close_write()
                reply = stream.readall()
            print(f"client: sent {message!r}, got back {reply!r}")
            assert reply == message

        rtts = client.ping(server.peer_id, count=3, timeout=10)
        print("client: ping round trips " + ", ".join(f"{r * 1000:.2f} ms" for r in rtts))
        info = client.wait_identified(server.peer_id, timeout=10)
        print(f"client: the server runs {info.agent_version} and speaks "
              f"{', '.join(info.protocols)}")


if __name__ == "__main__":
    main()
