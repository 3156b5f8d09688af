"""A peer in its own process, for fault tests: echo and /hold/1.0.0 (accepts streams,
writes 1 MiB on each, never reads). Prints ``LISTEN <multiaddr>/p2p/<id>``."""

import sys
import threading
import time

from libp2p_stream_sync import Node

with Node(listen=["/ip4/127.0.0.1/tcp/0"], muxers=[sys.argv[1] if len(sys.argv) > 1
                                                   else "yamux"]) as node:
    held = []
    hold = node.new_control().accept("/hold/1.0.0")

    def serve_hold():
        for _peer, stream in hold:
            held.append(stream)
            threading.Thread(target=stream.write, args=(b"h" * (1 << 20),),
                             daemon=True).start()

    threading.Thread(target=serve_hold, daemon=True).start()
    print(f"LISTEN {node.listen_addrs[0]}/p2p/{node.peer_id}", flush=True)
    while True:
        time.sleep(1)
