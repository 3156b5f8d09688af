"""The sans-IO WebSocket engine: upgrade, byte stream over messages, control frames, bounds.

Peers are our own engines or wsproto used directly (so fragmented and text messages, pings
and bad frames can be made as another implementation would send them).
"""

import pytest

wsproto = pytest.importorskip("wsproto")
from wsproto.events import (AcceptConnection, BytesMessage, CloseConnection,  # noqa: E402
                            Ping, Pong, RejectConnection, Request, TextMessage)

from libp2p_stream_sync.engines.websocket import (  # noqa: E402
    MAX_HEAD_SIZE, WebSocketEngine, WebSocketError)


def pipe(src: WebSocketEngine, dst: WebSocketEngine, step: int = 0) -> bytes:
    """Move ``src``'s output into ``dst`` (``step`` bytes at a time; 0 = all at once)."""
    data = src.data_to_send()
    if not step:
        return dst.receive_data(data)
    return b"".join(dst.receive_data(data[i:i + step]) for i in range(0, len(data), step))


def open_pair(step: int = 0) -> tuple[WebSocketEngine, WebSocketEngine]:
    client = WebSocketEngine(client=True, host="127.0.0.1:4001")
    server = WebSocketEngine(client=False)
    assert pipe(client, server, step) == b""
    assert pipe(server, client, step) == b""
    assert client.is_open and server.is_open
    return client, server


def wsproto_client_on(server: WebSocketEngine) -> "wsproto.WSConnection":
    """A wsproto client that completed the upgrade with ``server``."""
    peer = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
    server.receive_data(peer.send(Request(host="localhost", target="/any/path")))
    peer.receive_data(server.data_to_send())
    assert isinstance(next(peer.events()), AcceptConnection)
    return peer


def events_of(peer: "wsproto.WSConnection", data: bytes) -> list:
    peer.receive_data(data)
    return list(peer.events())


def test_upgrade_and_bytes_both_ways_byte_at_a_time():
    client = WebSocketEngine(client=True, host="[::1]:4001")
    server = WebSocketEngine(client=False)
    client.send(b"sent before the upgrade")   # the libp2p upgrade writes at once
    request = client.data_to_send()
    assert request.startswith(b"GET / HTTP/1.1\r\n") and b"Host: [::1]:4001\r\n" in request
    assert b"before" not in request
    assert b"".join(server.receive_data(request[i:i + 1]) for i in range(len(request))) == b""
    assert server.is_open and not client.is_open
    response = server.data_to_send()
    assert response.startswith(b"HTTP/1.1 101 ")
    assert b"".join(client.receive_data(response[i:i + 1])
                    for i in range(len(response))) == b""
    assert client.is_open
    assert pipe(client, server, step=1) == b"sent before the upgrade"
    payload = bytes(range(256)) * 600  # several frames (64 KiB each)
    server.send(payload)
    assert pipe(server, client, step=1) == payload
    client.send(payload)
    assert pipe(client, server, step=7) == payload


def test_upgrade_response_and_first_frames_in_one_read():
    client = WebSocketEngine(client=True, host="h:1")
    server = WebSocketEngine(client=False)
    server.receive_data(client.data_to_send())
    server.send(b"hello")
    assert client.receive_data(server.data_to_send()) == b"hello"


def test_fragmented_binary_messages_are_bytes_of_the_stream():
    server = WebSocketEngine(client=False)
    peer = wsproto_client_on(server)
    wire = (peer.send(BytesMessage(data=b"frag1-", message_finished=False))
            + peer.send(BytesMessage(data=b"frag2-", message_finished=False))
            + peer.send(BytesMessage(data=b"end|", message_finished=True))
            + peer.send(BytesMessage(data=b"next", message_finished=True)))
    got = b"".join(server.receive_data(wire[i:i + 1]) for i in range(len(wire)))
    assert got == b"frag1-frag2-end|next"


def test_a_text_message_is_refused_with_close_code_1003():
    server = WebSocketEngine(client=False)
    peer = wsproto_client_on(server)
    with pytest.raises(WebSocketError, match="text"):
        server.receive_data(peer.send(TextMessage(data="h\u00e9llo")))
    assert [e.code for e in events_of(peer, server.data_to_send())] == [1003]


def test_ping_is_answered_with_a_pong_and_unanswered_pings_coalesce():
    server = WebSocketEngine(client=False)
    peer = wsproto_client_on(server)
    assert server.receive_data(peer.send(Ping(payload=b"are you there"))) == b""
    assert server.has_output
    assert events_of(peer, server.data_to_send()) == [Pong(payload=b"are you there")]
    # three pings before our output is taken: one pong, for the latest (RFC 6455 5.5.3)
    server.receive_data(b"".join(peer.send(Ping(payload=b"p%d" % i)) for i in range(3)))
    assert events_of(peer, server.data_to_send()) == [Pong(payload=b"p2")]


def test_close_handshake_started_by_the_client():
    client, server = open_pair()
    client.send(b"last words")
    client.close()
    assert not client.writable
    assert pipe(client, server) == b"last words"
    assert server.eof and server.close_code == 1000 and not server.writable
    assert server.closed  # answered at once
    assert pipe(server, client) == b""
    assert client.eof and client.closed
    with pytest.raises(ValueError):
        client.send(b"more")


def test_close_handshake_started_by_the_server_one_byte_at_a_time():
    client, server = open_pair()
    server.close()
    assert pipe(server, client, step=1) == b""
    assert client.eof and client.close_code == 1000 and client.closed
    assert pipe(client, server, step=1) == b""
    assert server.closed


def test_close_before_the_upgrade_is_sent_after_the_held_bytes():
    client = WebSocketEngine(client=True, host="h:1")
    server = WebSocketEngine(client=False)
    client.send(b"held")
    client.close()
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    assert pipe(client, server) == b"held"
    assert server.eof


def test_close_code_and_reason_are_reported():
    server = WebSocketEngine(client=False)
    peer = wsproto_client_on(server)
    server.receive_data(peer.send(CloseConnection(code=4001, reason="bye now")))
    assert server.eof and (server.close_code, server.close_reason) == (4001, "bye now")
    assert events_of(peer, server.data_to_send())[0].code == 4001  # echoed


def test_oversized_message_is_refused_with_close_code_1009():
    server = WebSocketEngine(client=False)
    peer = wsproto_client_on(server)
    wire = peer.send(BytesMessage(data=b"x" * (1024 * 1024 + 1)))
    with pytest.raises(WebSocketError, match="larger than"):
        for i in range(0, len(wire), 65536):
            server.receive_data(wire[i:i + 65536])
    assert [e.code for e in events_of(peer, server.data_to_send())] == [1009]
    assert server.receive_data(b"\x82\x81abcd\x00") == b""  # input after an error: ignored


def test_a_message_of_exactly_the_bound_in_fragments_is_accepted():
    server = WebSocketEngine(client=False, max_message_size=1000)
    peer = wsproto_client_on(server)
    wire = b"".join(peer.send(BytesMessage(data=b"y" * 100, message_finished=i == 9))
                    for i in range(10))
    wire += peer.send(BytesMessage(data=b"z" * 1000))
    assert server.receive_data(wire) == b"y" * 1000 + b"z" * 1000


def test_unmasked_frame_from_a_client_is_a_protocol_error():
    server = WebSocketEngine(client=False)
    wsproto_client_on(server)
    with pytest.raises(WebSocketError, match="unmasked"):
        server.receive_data(b"\x82\x05hello")
    assert server.data_to_send().startswith(b"\x88")  # a close frame (1002)


@pytest.mark.parametrize("request_bytes", [
    b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n",                  # plain HTTP
    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",           # TLS, not HTTP
    b"GET / HTTP/1.1\r\nHost: \xff\xfe\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
])
def test_a_request_that_is_not_an_upgrade_gets_400(request_bytes):
    server = WebSocketEngine(client=False)
    with pytest.raises(WebSocketError):
        server.receive_data(request_bytes)
    assert server.data_to_send().startswith(b"HTTP/1.1 400 ")
    assert not server.is_open
    assert server.receive_data(b"more") == b""


def test_a_request_larger_than_the_bound_gets_431():
    server = WebSocketEngine(client=False)
    big = (b"GET / HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * MAX_HEAD_SIZE + b"\r\n\r\n")
    with pytest.raises(WebSocketError, match="larger than 8192"):
        for i in range(0, len(big), 1000):
            server.receive_data(big[i:i + 1000])
    assert server.data_to_send().startswith(b"HTTP/1.1 431 ")


def test_an_endless_head_without_line_end_is_refused_at_the_bound():
    server = WebSocketEngine(client=False)
    server.receive_data(b"GET /" + b"a" * (MAX_HEAD_SIZE - 5))   # exactly at the bound
    with pytest.raises(WebSocketError):
        server.receive_data(b"a")


def test_a_client_rejects_a_refusal_and_a_bad_accept_token():
    client = WebSocketEngine(client=True, host="h:1")
    client.data_to_send()
    with pytest.raises(WebSocketError, match="HTTP 404"):
        client.receive_data(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
    client = WebSocketEngine(client=True, host="h:1")
    client.data_to_send()
    with pytest.raises(WebSocketError):
        client.receive_data(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                            b"Connection: Upgrade\r\nSec-WebSocket-Accept: bogus\r\n\r\n")
    assert client.data_to_send() == b""


def test_the_server_accepts_any_path_and_a_wsproto_client():
    server = WebSocketEngine(client=False)
    peer = wsproto_client_on(server)  # target "/any/path"
    server.send(b"to wsproto")
    assert events_of(peer, server.data_to_send()) == [
        BytesMessage(data=b"to wsproto", frame_finished=True, message_finished=True)]


def test_server_refusal_reaches_a_wsproto_client_as_a_rejection():
    server = WebSocketEngine(client=False)
    peer = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
    good = peer.send(Request(host="h", target="/"))
    bad = good.replace(b"Sec-WebSocket-Version: 13", b"Sec-WebSocket-Version: 8")
    with pytest.raises(WebSocketError):
        server.receive_data(bad)
    assert isinstance(events_of(peer, server.data_to_send())[0], RejectConnection)


def test_a_client_needs_a_host():
    with pytest.raises(ValueError):
        WebSocketEngine(client=True)


def test_frames_sent_right_after_the_request_are_not_lost():
    """A client that does not wait for the 101 (RFC 6455 says it should): its frames
    arrive with the request and are delivered, not dropped with the HTTP head."""
    client = WebSocketEngine(client=True, host="h:1")
    server = WebSocketEngine(client=False)
    request = client.data_to_send()
    key = b"\x01\x02\x03\x04"
    masked = bytes(b ^ key[i % 4] for i, b in enumerate(b"pipelined"))
    frame = b"\x82" + bytes([0x80 | len(masked)]) + key + masked
    assert server.receive_data(request + frame) == b"pipelined"
