"""A stock socketserver.StreamRequestHandler served over libp2p (two nodes, one process).

Run:  python examples/socketserver_echo.py
"""

import socketserver
import threading

try:
    import libp2p_stream_sync  # noqa: F401
except ImportError:  # running from a checkout without installing
    import pathlib
    import sys
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from libp2p_stream_sync import Node
from libp2p_stream_sync.server import StreamServer

PROTOCOL = "/example/echo/1.0.0"


class EchoHandler(socketserver.StreamRequestHandler):
    """Exactly what one would write for socketserver.ThreadingTCPServer."""

    timeout = 10

    def handle(self):
        peer, _port = self.client_address  # (str(peer_id), 0)
        for line in self.rfile:
            self.wfile.write(b"echo from server to " + peer[-6:].encode() + b": " + line)


def main() -> None:
    with Node(listen=["/ip4/127.0.0.1/tcp/0"]) as server_node, Node() as client_node:
        with StreamServer(server_node, PROTOCOL, EchoHandler, max_workers=4) as server:
            thread = threading.Thread(target=server.serve_forever, args=(0.1,))
            thread.start()
            try:
                addr = f"{server_node.listen_addrs[0]}/p2p/{server_node.peer_id}"
                control = client_node.new_control()
                for i in range(3):
                    with control.open_stream(addr, PROTOCOL, timeout=10) as stream:
                        stream.settimeout(10)
                        f = stream.makefile("rwb")
                        f.write(b"hello %d\n" % i)
                        f.flush()
                        print(f.readline().decode().rstrip())
            finally:
                server.shutdown()
                thread.join()
    print("done")


if __name__ == "__main__":
    main()
