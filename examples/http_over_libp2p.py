"""HTTP/1.1 over libp2p: the stock SimpleHTTPRequestHandler served on "/http/1.1",
fetched with http.client through HTTPStreamConnection (two nodes, one process).

Run:  python examples/http_over_libp2p.py
"""

import pathlib
import tempfile
import threading

try:
    import libp2p_stream_sync  # noqa: F401
except ImportError:  # running from a checkout without installing
    import sys
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from libp2p_stream_sync import Node
from libp2p_stream_sync.p2phttp import (HTTPStreamConnection, HTTPStreamServer,
                                        directory_handler, request)


def main() -> None:
    with tempfile.TemporaryDirectory() as root:
        pathlib.Path(root, "hello.txt").write_text("Hello from a libp2p peer!\n")
        with Node(listen=["/ip4/127.0.0.1/tcp/0"]) as server_node, Node() as client_node:
            with HTTPStreamServer(server_node, directory_handler(root)) as server:
                thread = threading.Thread(target=server.serve_forever, args=(0.1,))
                thread.start()
                try:
                    addr = f"{server_node.listen_addrs[0]}/p2p/{server_node.peer_id}"
                    control = client_node.new_control()

                    # http.client, unchanged: request() / getresponse().
                    conn = HTTPStreamConnection(control, addr)
                    conn.request("GET", "/hello.txt")
                    response = conn.getresponse()
                    print(response.status, response.reason, response.getheader("Content-Type"))
                    print(response.read().decode().rstrip())
                    conn.close()

                    # The one-shot helper: one stream per request, as the spec asks.
                    status, headers, body = request(control, server_node.peer_id, "GET", "/")
                    print(status, headers["Content-Type"], f"{len(body)} bytes of listing")
                finally:
                    server.shutdown()
                    thread.join()
    print("done")


if __name__ == "__main__":
    main()
