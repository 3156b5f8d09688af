"""The WebSocket byte channel over real non-blocking loopback TCP sockets.

Besides channel <-> channel, a minimal RFC 6455 endpoint written here on the standard library
only (no wsproto) talks to our server and client channels, so the channel is not only
tested against the library it is built on.
"""

import base64
import errno
import hashlib
import os
import select
import socket
import struct
import threading

import pytest

pytest.importorskip("wsproto")

from libp2p_stream_sync.transport.websocket import (  # noqa: E402
    MAX_PENDING, WebSocketChannel)

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
FRAME = 64 * 1024


def tcp_pair() -> tuple[socket.socket, socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
    return client, server


#: The TCP socket under each channel made by channel_pair (to look at the wire).
TCP_OF: dict = {}


def channel_pair() -> tuple[WebSocketChannel, WebSocketChannel]:
    client, server = tcp_pair()
    for sock in (client, server):
        sock.setblocking(False)
    channels = (WebSocketChannel(client, "client", host="127.0.0.1:4001"),
                WebSocketChannel(server, "server"))
    TCP_OF.update(zip(channels, (client, server)))
    return channels


# -- a minimal RFC 6455 endpoint on the standard library (blocking socket) ---------------
def accept_token(key: bytes) -> bytes:
    return base64.b64encode(hashlib.sha1(key + GUID).digest())


def read_head(sock: socket.socket) -> bytes:
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)
        if not chunk:
            raise EOFError(head)
        head += chunk
    return head


def xor_mask(data: bytes, key: bytes) -> bytes:
    n = len(data)
    stream = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "big") ^ int.from_bytes(stream, "big")).to_bytes(n, "big")


class StdlibWebSocket:
    """Blocking RFC 6455 endpoint: the client masks its frames, the server does not."""

    def __init__(self, sock: socket.socket, client: bool) -> None:
        self.sock, self.client = sock, client

    def client_handshake(self) -> None:
        key = base64.b64encode(os.urandom(16))
        self.sock.sendall(b"GET /p2p HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
                          b"Connection: Upgrade\r\nSec-WebSocket-Key: " + key +
                          b"\r\nSec-WebSocket-Version: 13\r\n\r\n")
        head = read_head(self.sock)
        assert head.startswith(b"HTTP/1.1 101 "), head
        assert b"Sec-WebSocket-Accept: " + accept_token(key) + b"\r\n" in head, head

    def server_handshake(self) -> bytes:
        head = read_head(self.sock)
        key = [line.split(b":", 1)[1].strip() for line in head.split(b"\r\n")
               if line.lower().startswith(b"sec-websocket-key:")][0]
        self.sock.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                          b"Connection: Upgrade\r\nSec-WebSocket-Accept: " +
                          accept_token(key) + b"\r\n\r\n")
        return head

    def send_frame(self, opcode: int, payload: bytes, fin: bool = True) -> None:
        n = len(payload)
        length = (bytes([n]) if n < 126 else b"\x7e" + struct.pack("!H", n) if n < 65536
                  else b"\x7f" + struct.pack("!Q", n))
        header = bytes([(0x80 if fin else 0) | opcode])
        if self.client:
            key = os.urandom(4)
            frame = header + bytes([length[0] | 0x80]) + length[1:] + key + \
                xor_mask(payload, key)
        else:
            frame = header + length + payload
        self.sock.sendall(frame)

    def recv_exactly(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise EOFError(data)
            data += chunk
        return data

    def recv_frame(self) -> tuple[int, bool, bytes]:
        """(opcode, fin, payload); asserts the peer masks exactly when it must."""
        b0, b1 = self.recv_exactly(2)
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack("!H", self.recv_exactly(2))[0]
        elif n == 127:
            n = struct.unpack("!Q", self.recv_exactly(8))[0]
        masked = bool(b1 & 0x80)
        assert masked != self.client, "clients mask, servers do not"
        key = self.recv_exactly(4) if masked else b""
        payload = self.recv_exactly(n)
        return b0 & 0x0F, bool(b0 & 0x80), xor_mask(payload, key) if masked else payload


def drive(channels, until, timeout: float = 10.0) -> None:
    """Call ``until()`` after each select round over ``channels`` until it is true."""
    for _ in range(int(timeout / 0.01)):
        if until():
            return
        wants = [c for c in channels if c.wants_write]
        readable, writable, _ = select.select(channels, wants, [], 0.01)
        for chan in writable:
            chan.flush()
    raise AssertionError("timed out")


def upgrade(client: WebSocketChannel, server: WebSocketChannel) -> None:
    """Both sides read until the HTTP upgrade is complete."""
    def step():
        assert read_some(server) is None and read_some(client) is None
        return client.upgraded and server.upgraded
    drive([client, server], step)


def read_some(chan: WebSocketChannel, size: int = 65536) -> bytes | None:
    """Application bytes now (b"" = end of stream), None when there are none yet."""
    buf = bytearray(size)
    try:
        n = chan.recv_into(buf, size)
    except BlockingIOError:
        return None
    return bytes(buf[:n])


def echo_until_end(chan: WebSocketChannel, timeout: float = 10.0) -> None:
    """Our server channel echoes what it reads until the peer's close frame."""
    held = b""
    done = []

    def step():
        nonlocal held
        data = read_some(chan)
        if data == b"":
            done.append(True)
        elif data:
            held += data
        while held:
            try:
                held = held[chan.sendmsg([held]):]
            except BlockingIOError:
                break
        return bool(done) and not held and not chan.wants_write

    drive([chan], step, timeout)


# -- channel <-> channel ------------------------------------------------------------------
def test_16_mib_each_way_at_once_arrives_intact():
    client, server = channel_pair()
    size = 16 * 1024 * 1024
    payloads = {client: os.urandom(size), server: os.urandom(size)}
    offsets = {client: 0, server: 0}
    received = {client: hashlib.sha256(), server: hashlib.sha256()}
    counts = {client: 0, server: 0}
    peer = {client: server, server: client}
    buf = bytearray(256 * 1024)

    def step():
        for chan in (client, server):
            while offsets[chan] < size:
                piece = memoryview(payloads[chan])[offsets[chan]:offsets[chan] + 100_000]
                try:
                    offsets[chan] += chan.sendmsg([piece[:30_000], piece[30_000:]])
                except BlockingIOError:
                    break
                assert chan.pending <= MAX_PENDING + FRAME + 64
            try:
                n = chan.recv_into(buf, len(buf))
            except BlockingIOError:
                continue
            assert n > 0
            received[chan].update(memoryview(buf)[:n])
            counts[chan] += n
        return counts[client] == size and counts[server] == size

    drive([client, server], step, timeout=40)
    for chan in (client, server):
        assert received[chan].digest() == hashlib.sha256(payloads[peer[chan]]).digest()
    client.close()
    server.close()


def test_a_read_fills_the_buffer_across_frames_when_the_socket_has_them():
    """So a caller that grows its reads when they come back full (the connection does)
    sees full reads: framing must not make every read look short."""
    client, server = channel_pair()
    upgrade(client, server)
    for _ in range(10):
        client.sendmsg([bytes(1000)])
    select.select([server], [], [], 1.0)
    for _ in range(100):  # until all 10 frames (10 x 1008 bytes) are in the socket
        if len(TCP_OF[server].recv(20000, socket.MSG_PEEK)) >= 10080:
            break
        select.select([], [], [], 0.01)
    buf = bytearray(5000)
    assert server.recv_into(buf, 5000) == 5000
    assert server.recv_into(buf, 5000) == 5000
    with pytest.raises(BlockingIOError):
        server.recv_into(buf, 5000)
    client.close()
    server.close()


def test_close_frame_each_way_ends_the_stream_and_the_tcp_connection():
    client, server = channel_pair()
    upgrade(client, server)
    client.sendmsg([b"hello"])
    drive([client, server], lambda: read_some(server) == b"hello")
    client.shutdown(socket.SHUT_WR)
    with pytest.raises(BrokenPipeError):
        client.sendmsg([b"late"])
    drive([client, server], lambda: read_some(server) == b"")
    with pytest.raises(BrokenPipeError):  # the close frame was answered at once
        server.sendmsg([b"late"])
    drive([client, server], lambda: read_some(client) == b"")
    assert not client.wants_write and not server.wants_write
    # both close frames exchanged: each side also sent its TCP FIN
    assert TCP_OF[server].recv(10) == b"" and TCP_OF[client].recv(10) == b""
    client.close()
    server.close()


def test_close_frame_after_data_in_one_read_still_reports_the_end():
    client, server = channel_pair()
    upgrade(client, server)
    client.sendmsg([b"last"])
    client.shutdown(socket.SHUT_WR)  # data and close frame leave together
    for _ in range(100):  # until both are in the server's socket
        if len(TCP_OF[server].recv(100, socket.MSG_PEEK)) >= 10 + 8:  # frame + close
            break
        select.select([], [], [], 0.01)
    assert read_some(server) == b"last"
    # A selector must report the end although the client keeps its TCP connection open
    # (it waits for the server to close first, as RFC 6455 has clients do).
    assert select.select([server], [], [], 2.0)[0] == [server]
    assert read_some(server) == b""
    client.close()
    server.close()


def test_a_peer_that_does_not_read_gets_blocking_io_error_and_memory_stays_bounded():
    client, server = channel_pair()
    upgrade(client, server)
    piece = memoryview(bytes(1024 * 1024))
    accepted = 0
    with pytest.raises(BlockingIOError):
        for _ in range(1000):  # 1 GiB if nothing pushed back
            accepted += server.sendmsg([piece])
            assert server.pending <= MAX_PENDING + FRAME + 64
    for _ in range(5):  # stays blocked
        with pytest.raises(BlockingIOError):
            server.sendmsg([piece])
    assert accepted < 64 * 1024 * 1024  # kernel buffers plus our bound
    assert server.wants_write
    client.close()
    server.close()


def test_ping_flood_from_a_peer_that_does_not_read_stays_bounded():
    client_sock, server_sock = tcp_pair()
    server_sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    peer = StdlibWebSocket(client_sock, client=True)
    server_sock.setblocking(False)
    server = WebSocketChannel(server_sock, "server")
    threading.Thread(target=peer.client_handshake, daemon=True).start()
    drive([server], lambda: read_some(server) is not None or server.upgraded)
    count = 40000
    pings = b"".join(bytes([0x89, 0x80 | 125]) + b"\0\0\0\0" + bytes([i % 256]) * 125
                     for i in range(count))  # 5.2 MB of pings, not reading the pongs
    flood = threading.Thread(target=client_sock.sendall, args=(pings,), daemon=True)
    flood.start()

    def step():
        assert read_some(server) is None  # pings carry no application bytes
        assert server.pending <= 256
        drained = not select.select([server], [], [], 0.05)[0]
        return not flood.is_alive() and drained and not server.wants_write

    drive([server], step)
    pongs = []
    client_sock.settimeout(0.5)
    try:
        while True:
            pongs.append(peer.recv_frame())
    except socket.timeout:
        pass
    assert all(opcode == 0xA for opcode, _, _ in pongs)
    assert 0 < len(pongs) < count            # one pong per read, for its latest ping
    assert pongs[-1][2] == bytes([(count - 1) % 256]) * 125
    client_sock.close()
    server.close()


# -- the upgrade never completes --------------------------------------------------------
def test_server_delivers_nothing_while_the_upgrade_is_incomplete():
    raw, server_sock = tcp_pair()
    server_sock.setblocking(False)
    server = WebSocketChannel(server_sock, "server")
    raw.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n")  # and no more
    select.select([server], [], [], 1.0)
    with pytest.raises(BlockingIOError):
        server.recv_into(bytearray(100), 100)
    assert server.sendmsg([b"/multistream/1.0.0\n"]) == 19   # held, not sent
    raw.settimeout(0.3)
    with pytest.raises(socket.timeout):
        raw.recv(100)
    raw.close()
    server.close()


def test_client_holds_its_bytes_until_the_server_answers_the_upgrade():
    client_sock, raw = tcp_pair()
    client_sock.setblocking(False)
    client = WebSocketChannel(client_sock, "client", host="127.0.0.1:9")
    accepted = 0
    with pytest.raises(BlockingIOError):
        for _ in range(100):
            accepted += client.sendmsg([bytes(64 * 1024)])
    assert accepted <= MAX_PENDING + FRAME  # held bytes are bounded too
    raw.settimeout(0.3)
    head = read_head(raw)
    assert head.startswith(b"GET / HTTP/1.1\r\n") and b"Host: 127.0.0.1:9\r\n" in head
    with pytest.raises(socket.timeout):
        raw.recv(1)   # nothing but the request
    raw.sendall(b"HTTP/1.1 101 Switching Protocols\r\n")  # half an answer
    select.select([client], [], [], 1.0)
    with pytest.raises(BlockingIOError):
        client.recv_into(bytearray(100), 100)
    raw.close()
    client.close()


def test_a_non_upgrade_request_gets_400_and_the_channel_fails():
    raw, server_sock = tcp_pair()
    server_sock.setblocking(False)
    server = WebSocketChannel(server_sock, "server")
    raw.sendall(b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n")
    select.select([server], [], [], 1.0)
    with pytest.raises(ConnectionAbortedError, match="websocket") as info:
        server.recv_into(bytearray(100), 100)
    assert info.value.errno == errno.ECONNABORTED
    raw.settimeout(2)
    assert raw.recv(100).startswith(b"HTTP/1.1 400 ")
    raw.close()
    server.close()


# -- cross-checks with the standard-library endpoint ---------------------------------------
def test_stdlib_client_against_our_server_channel():
    client_sock, server_sock = tcp_pair()
    server_sock.setblocking(False)
    server = WebSocketChannel(server_sock, "server")
    peer = StdlibWebSocket(client_sock, client=True)
    client_sock.settimeout(10)
    result: dict = {}

    def client_side():
        peer.client_handshake()
        peer.send_frame(0x2, b"fragmented ", fin=False)   # binary, continued
        peer.send_frame(0x9, b"ping!")                     # a ping between fragments
        peer.send_frame(0x0, b"message " + bytes(70000))   # continuation, 8-byte length
        echoed, pong = b"", None
        while len(echoed) < 11 + 8 + 70000:
            opcode, fin, payload = peer.recv_frame()
            if opcode == 0xA:
                pong = payload
            else:
                assert opcode == 0x2 and fin
                echoed += payload
        peer.send_frame(0x8, struct.pack("!H", 1000) + b"done")
        opcode, _, payload = peer.recv_frame()
        result.update(echoed=echoed, pong=pong, close=(opcode, payload),
                      eof=client_sock.recv(1))

    thread = threading.Thread(target=client_side, daemon=True)
    thread.start()
    echo_until_end(server)
    thread.join(10)
    assert result["echoed"] == b"fragmented message " + bytes(70000)
    assert result["pong"] == b"ping!"
    assert result["close"] == (0x8, struct.pack("!H", 1000) + b"done")
    assert result["eof"] == b""  # the server ends TCP after the close handshake
    server.close()
    client_sock.close()


def test_our_client_channel_against_a_stdlib_server():
    client_sock, server_sock = tcp_pair()
    client_sock.setblocking(False)
    client = WebSocketChannel(client_sock, "client", host="[::1]:4001")
    peer = StdlibWebSocket(server_sock, client=False)
    server_sock.settimeout(10)
    result: dict = {}

    def server_side():
        result["head"] = peer.server_handshake()
        got = b""
        while True:
            opcode, fin, payload = peer.recv_frame()   # asserts the frames are masked
            if opcode == 0x8:
                result["close"] = payload
                peer.send_frame(0x8, payload)
                break
            assert opcode == 0x2
            got += payload
            peer.send_frame(0x2, payload[::-1])
        result["got"] = got
        server_sock.shutdown(socket.SHUT_WR)

    thread = threading.Thread(target=server_side, daemon=True)
    thread.start()
    message = os.urandom(200_000)
    assert client.sendmsg([message]) == 200_000  # held until the 101 arrives
    answers = []
    drive([client], lambda: answers.append(read_some(client) or b"")
          or sum(map(len, answers)) >= 200_000)
    client.shutdown(socket.SHUT_WR)
    drive([client], lambda: read_some(client) == b"")
    thread.join(10)
    assert result["head"].startswith(b"GET / HTTP/1.1\r\n")
    assert b"Host: [::1]:4001\r\n" in result["head"]
    assert result["got"] == message
    # each sendmsg chunk went as its own messages; each was reversed by the server
    reversed_chunks = b"".join(answers)
    assert len(reversed_chunks) == 200_000
    assert result["close"] == struct.pack("!H", 1000)
    client.close()
    server_sock.close()


def test_an_abnormal_close_code_is_a_connection_reset():
    client_sock, server_sock = tcp_pair()
    server_sock.setblocking(False)
    server = WebSocketChannel(server_sock, "server")
    peer = StdlibWebSocket(client_sock, client=True)
    client_sock.settimeout(10)

    def client_side():
        peer.client_handshake()
        peer.send_frame(0x8, struct.pack("!H", 4000) + b"going")
    threading.Thread(target=client_side, daemon=True).start()
    errors = []

    def step():
        try:
            read_some(server)
        except ConnectionResetError as exc:
            errors.append(exc)
        return bool(errors)

    drive([server], step)
    assert "4000" in str(errors[0]) and "going" in str(errors[0])
    server.close()
    client_sock.close()
