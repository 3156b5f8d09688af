"""The transport seam: the node picks a transport by multiaddr, and a byte-stream
transport's channel need not be a socket (a WebSocket channel will not be one)."""

from __future__ import annotations

import socket

from multiaddr import Multiaddr

from libp2p_stream_sync.transport import tcp

from conftest import p2p_addr

ECHO = "/echo/1.0.0"


class WrappedChannel:
    """A socket-like channel around a TCP socket that holds output of its own (one
    byte of "framing" queued at connect, sent by flush), as a WebSocket channel does."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.family = sock.family
        self.flushes = 0

    def fileno(self) -> int:
        return self._sock.fileno()

    def recv_into(self, buffer, nbytes=0) -> int:
        return self._sock.recv_into(buffer, nbytes)

    def sendmsg(self, buffers) -> int:
        return self._sock.sendmsg(buffers)

    @property
    def wants_write(self) -> bool:
        return False

    def flush(self) -> None:
        self.flushes += 1

    def shutdown(self, how: int) -> None:
        self._sock.shutdown(how)

    def close(self) -> None:
        self._sock.close()

    def getsockopt(self, *args):
        return self._sock.getsockopt(*args)


class SuffixTransport(tcp.TcpTransport):
    """TCP addresses with a trailing ``/ws`` (only to prove the seam: no WebSocket)."""

    name = "test-ws"

    def __init__(self) -> None:
        self.channels: list[WrappedChannel] = []

    def handles(self, ma: Multiaddr) -> bool:
        return "/ws" in str(ma)

    def parse(self, ma: Multiaddr) -> tcp.TcpTarget:
        return super().parse(Multiaddr(str(ma).replace("/ws", "")))

    def connect(self, family: int, sockaddr: tuple) -> WrappedChannel:
        channel = WrappedChannel(super().connect(family, sockaddr))
        self.channels.append(channel)
        return channel


def test_a_registered_transport_dials_its_multiaddrs_through_its_channel(make_node):
    server, client = make_node(), make_node(listen=[])
    incoming = server.new_control().accept(ECHO)
    seam = SuffixTransport()
    client.transports.register(seam)  # the one registration a new transport needs
    port = server.listen_addrs[0].value_for_protocol("tcp")
    ws_addr = f"/ip4/127.0.0.1/tcp/{port}/ws/p2p/{server.peer_id}"
    stream = client.new_control().open_stream(ws_addr, ECHO, timeout=5)
    stream.write(b"over the seam")
    stream.close_write()
    _, accepted = incoming.get(timeout=5)
    assert accepted.readall() == b"over the seam"
    accepted.close()
    assert len(seam.channels) == 1 and seam.channels[0].flushes >= 1
    # A plain TCP address still goes through TCP, not through the new transport.
    assert client.dial(p2p_addr(server), timeout=5) == server.peer_id
    assert len(seam.channels) == 1
