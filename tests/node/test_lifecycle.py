"""Node lifecycle: nothing left behind, and a peer in another process (issue #3)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from libp2p_stream_sync import Node

from conftest import EchoServer, p2p_addr, wait_until


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
def test_close_leaves_no_thread_socket_or_fd():
    threads_before = set(threading.enumerate())
    fds_before = open_fds()
    server = Node(listen=["/ip4/127.0.0.1/tcp/0", "/ip6/::1/tcp/0"])
    client = Node()
    echo = EchoServer(server)
    stream = client.new_control().open_stream(p2p_addr(server), "/echo/1.0.0", timeout=5)
    stream.write(b"x" * 100_000)
    stream.close_write()
    stream.settimeout(5)
    assert len(stream.readall()) == 100_000
    client.run_in_worker(time.sleep, 0)  # start the handler pool too
    assert len(open_fds()) > len(fds_before)
    echo.close()
    client.close()
    server.close()
    assert wait_until(lambda: set(threading.enumerate()) <= threads_before), \
        set(threading.enumerate()) - threads_before
    assert open_fds() <= fds_before


def test_close_is_idempotent_and_refuses_new_work():
    node = Node()
    node.close()
    node.close()
    with pytest.raises(OSError):
        node.dial("/ip4/127.0.0.1/tcp/1")


def test_ipv6_listen_and_dial(make_node):
    server = make_node(listen=["/ip6/::1/tcp/0"])
    client = make_node(listen=[])
    echo = EchoServer(server)
    assert str(server.listen_addrs[0]).startswith("/ip6/::1/tcp/")
    stream = client.new_control().open_stream(p2p_addr(server), "/echo/1.0.0", timeout=5)
    stream.write(b"over ipv6")
    stream.close_write()
    stream.settimeout(5)
    assert stream.readall() == b"over ipv6"
    echo.close()


def test_dns4_dial(make_node):
    server = make_node()
    client = make_node(listen=[])
    port = server.listen_addrs[0].value_for_protocol(6)
    assert client.dial(f"/dns4/localhost/tcp/{port}/p2p/{server.peer_id}") == server.peer_id


SERVER_SCRIPT = textwrap.dedent("""
    import sys, threading
    from libp2p_stream_sync import Node
    node = Node(listen=["/ip4/127.0.0.1/tcp/0"], muxers=[sys.argv[1]])
    incoming = node.new_control().accept("/echo/1.0.0")
    def echo(stream):
        while True:
            data = stream.read(1 << 20)
            if not data:
                break
            stream.write(data)
        stream.close()
    def serve():
        for _, stream in incoming:
            threading.Thread(target=echo, args=(stream,), daemon=True).start()
    threading.Thread(target=serve, daemon=True).start()
    print(f"{node.listen_addrs[0]}/p2p/{node.peer_id}", flush=True)
    sys.stdin.read()
    node.close()
""")


@pytest.mark.parametrize("muxer", ["yamux", "mplex"])
def test_echo_with_a_node_in_another_process(make_node, muxer):
    proc = subprocess.Popen([sys.executable, "-c", SERVER_SCRIPT, muxer],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        addr = proc.stdout.readline().strip()
        assert "/p2p/" in addr
        client = make_node(listen=[], muxers=[muxer])
        control = client.new_control()
        payload = os.urandom(3 << 20)
        streams = [control.open_stream(addr, "/echo/1.0.0", timeout=10) for _ in range(4)]

        def send(stream):
            stream.write(payload)
            stream.close_write()

        writers = [threading.Thread(target=send, args=(s,)) for s in streams]
        results = {}

        def receive(index, stream):
            stream.settimeout(30)
            results[index] = stream.readall()

        # Read all streams at once: with mplex (no flow control) a reader that lets
        # one stream's data pile up stalls the connection (see test_mplex_stall).
        readers = [threading.Thread(target=receive, args=(i, s)) for i, s in enumerate(streams)]
        for t in writers + readers:
            t.start()
        for t in writers + readers:
            t.join(30)
        assert len(results) == 4
        assert all(r == payload for r in results.values())
    finally:
        proc.stdin.close()
        assert proc.wait(10) == 0
