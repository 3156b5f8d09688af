"""HTTP/1.1 over libp2p (/http/1.1): stock http.server handlers, http.client clients."""

from __future__ import annotations

import hashlib
import http.client
import http.server
import json
import os

import pytest

from libp2p_stream_sync import UnsupportedProtocol
from libp2p_stream_sync.p2phttp import (HTTP_PROTOCOL, HTTPStreamConnection, HTTPStreamServer,
                                        directory_handler, request)

from legacy_support import no_thread_left, p2p_addr, pair, run_threads, serving, wait_for  # noqa: F401


@pytest.fixture
def site(tmp_path):
    (tmp_path / "hello.txt").write_text("hello over libp2p\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "page.html").write_text("<h1>page</h1>")
    big = os.urandom(1 << 20)
    (tmp_path / "big.bin").write_bytes(big)
    return tmp_path, hashlib.sha256(big).hexdigest()


class Quiet(http.server.SimpleHTTPRequestHandler):
    """Only silences the access log; everything else is the stock handler."""

    def log_message(self, format, *args):
        pass


def test_simple_http_request_handler_with_16_concurrent_clients(pair, site):
    server_node, _client_node, control = pair
    root, big_sha = site
    with HTTPStreamServer(server_node, directory_handler(str(root), Quiet),
                          max_workers=8) as server, serving(server):
        assert server.protocol == HTTP_PROTOCOL
        assert server.server_name == str(server_node.peer_id)

        def client(i):
            conn = HTTPStreamConnection(control, server_node.peer_id, timeout=10)
            try:
                out = []
                for path in ("/hello.txt", "/sub/page.html", "/missing", "/big.bin"):
                    conn.request("GET", path)
                    resp = conn.getresponse()
                    body = resp.read()
                    out.append((path, resp.status, resp.getheader("Content-Type"),
                                body if path != "/big.bin" else hashlib.sha256(body).hexdigest()))
                conn.request("HEAD", "/hello.txt")
                head = conn.getresponse()
                out.append(("HEAD", head.status, head.getheader("Content-Length"), head.read()))
                return out
            finally:
                conn.close()

        for result in run_threads(client, 16):
            assert result[0] == ("/hello.txt", 200, "text/plain", b"hello over libp2p\n")
            assert result[1] == ("/sub/page.html", 200, "text/html", b"<h1>page</h1>")
            assert result[2][1] == 404
            assert result[3] == ("/big.bin", 200, "application/octet-stream", big_sha)
            assert result[4] == ("HEAD", 200, str(len("hello over libp2p\n")), b"")
        assert server.dropped == 0


def test_request_helper_and_directory_listing(pair, site):
    server_node, _client_node, control = pair
    root, _ = site
    with HTTPStreamServer(server_node, directory_handler(str(root), Quiet)) as server, \
            serving(server):
        status, headers, body = request(control, p2p_addr(server_node), "GET", "/")
        assert status == 200
        assert headers["content-type"].startswith("text/html")
        assert b"hello.txt" in body and b"sub/" in body
        result = request(control, server_node.peer_id, "GET", "/sub")
        assert result.status == 301 and result.headers["Location"] == "/sub/"


class JSONEcho(http.server.BaseHTTPRequestHandler):
    """A BaseHTTPRequestHandler subclass as one would write it for TCP (HTTP/1.1)."""

    protocol_version = "HTTP/1.1"
    handled = []

    def do_POST(self):
        length = int(self.headers["Content-Length"])
        data = json.loads(self.rfile.read(length))
        self.handled.append((self.client_address, self.request))
        body = json.dumps({"echo": data, "path": self.path,
                           "host": self.headers["Host"],
                           "peer": self.client_address[0]}).encode()
        self.send_response(201)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):
        pass


def test_keep_alive_reuses_one_stream(pair):
    server_node, client_node, control = pair
    JSONEcho.handled = []
    with HTTPStreamServer(server_node, JSONEcho) as server, serving(server):
        conn = HTTPStreamConnection(control, server_node.peer_id)
        replies = []
        for i in range(5):
            conn.request("POST", f"/items/{i}", body=json.dumps([i, "x"]),
                         headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            assert resp.status == 201 and not resp.will_close
            replies.append(json.loads(resp.read()))
        first_sock = conn.sock
        assert first_sock is not None  # kept alive
        conn.close()
        assert replies[3] == {"echo": [3, "x"], "path": "/items/3",
                              "host": str(server_node.peer_id),
                              "peer": str(client_node.peer_id)}
        assert wait_for(lambda: server.active_workers == 0)
    # All five requests went over one stream, handled by one handler instance.
    assert len({req for _addr, req in JSONEcho.handled}) == 1
    assert len(JSONEcho.handled) == 5


class JSONEcho10(JSONEcho):
    """The same handler speaking HTTP/1.0 (BaseHTTPRequestHandler's default): one
    request per stream, as the libp2p HTTP spec recommends."""

    protocol_version = "HTTP/1.0"


def test_closing_server_gets_a_new_stream_per_request(pair):
    """When responses close the connection, http.client re-opens a stream per request."""
    server_node, _client_node, control = pair
    JSONEcho.handled = []
    with HTTPStreamServer(server_node, JSONEcho10) as server, serving(server):
        conn = HTTPStreamConnection(control, server_node.peer_id)
        for i in range(3):
            conn.request("POST", "/", body=b"%d" % i)
            resp = conn.getresponse()
            assert resp.will_close
            assert conn.sock is None  # the response owns the stream now
            assert json.loads(resp.read())["echo"] == i
        conn.close()
        status, _headers, body = request(control, server_node.peer_id, "POST", "/x",
                                         body=b"[1]")
        assert status == 201 and json.loads(body)["echo"] == [1]
    assert len({req for _addr, req in JSONEcho.handled}) == 4


def test_request_helper_sends_connection_close_to_a_keep_alive_server(pair):
    """request() follows the spec (Connection: close, half-close) with HTTP/1.1 handlers."""
    server_node, _client_node, control = pair
    JSONEcho.handled = []
    with HTTPStreamServer(server_node, JSONEcho) as server, serving(server):
        for i in range(3):
            result = request(control, server_node.peer_id, "POST", "/", body=b"%d" % i)
            assert result.status == 201 and json.loads(result.body)["echo"] == i
        assert wait_for(lambda: server.active_workers == 0)
    assert len({req for _addr, req in JSONEcho.handled}) == 3


def test_unsupported_protocol_is_a_connection_error(pair):
    server_node, _client_node, control = pair
    conn = HTTPStreamConnection(control, server_node.peer_id, timeout=5)
    with pytest.raises(ConnectionError) as info:
        conn.request("GET", "/")
    assert isinstance(info.value.__cause__, UnsupportedProtocol)
    conn.close()


def test_server_close_with_an_idle_keep_alive_client(pair):
    """An idle keep-alive stream does not keep server_close (or the test) waiting."""
    server_node, _client_node, control = pair
    server = HTTPStreamServer(server_node, JSONEcho)
    server.close_timeout = 0.2
    with serving(server):
        conn = HTTPStreamConnection(control, server_node.peer_id)
        conn.request("POST", "/", body=b"1")
        assert conn.getresponse().read()
        server.shutdown()
        server.server_close()  # the handler waits for a next request: reset after 0.2 s
        assert server.active_workers == 0
        with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
            conn.request("POST", "/", body=b"2")
            conn.getresponse()
        conn.close()


def test_concurrent_posts_through_request_helper(pair):
    server_node, client_node, control = pair
    JSONEcho.handled = []
    with HTTPStreamServer(server_node, JSONEcho, max_workers=4) as server, serving(server):
        results = run_threads(
            lambda i: request(control, server_node.peer_id, "POST", f"/n/{i}",
                              body=json.dumps(i)), 12)
        for i, (status, headers, body) in enumerate(results):
            assert status == 201
            assert headers["Content-Type"] == "application/json"
            assert json.loads(body)["echo"] == i
        assert server.dropped == 0
    assert len(JSONEcho.handled) == 12
    assert {addr for addr, _ in JSONEcho.handled} == {(str(client_node.peer_id), 0)}

