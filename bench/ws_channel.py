"""Throughput of the WebSocket byte channel over loopback, beside raw TCP in the same run.

    python3 bench/ws_channel.py                 # 256 MiB each case, 3 rounds
    python3 bench/ws_channel.py --mib 64 --rounds 1

Two processes (fork): the sender writes ``--mib`` MiB with ``sendmsg`` in 64 KiB pieces,
the receiver reads with ``recv_into`` (256 KiB buffer); both non-blocking with ``select``.
Cases: raw TCP sockets, WebSocket client -> server (masked frames: the client masks, the
server unmasks) and server -> client (unmasked). Prints MB/s (wall time of the transfer,
after the upgrade) and CPU seconds per GB of each side (``getrusage`` of its process),
the median of the rounds. Needs ``wsproto`` (``pip install 'libp2p_stream_sync[ws]'``).
"""

from __future__ import annotations

import argparse
import os
import pathlib
import resource
import select
import socket
import statistics
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from libp2p_stream_sync.transport.websocket import WebSocketChannel  # noqa: E402

CHUNK = 64 * 1024
RECV = 256 * 1024
FRAME = 64 * 1024   # --frame: payload of each WebSocket message sent


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _wrap(sock: socket.socket, kind: str, role: str):
    sock.setblocking(False)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if kind == "tcp":
        return sock
    return WebSocketChannel(sock, role, host="127.0.0.1:1" if role == "client" else None,
                            max_frame_size=FRAME)


def _send(chan, total: int) -> None:
    payload = memoryview(os.urandom(CHUNK))
    sent = 0
    scratch = bytearray(4096)
    while sent < total:
        try:
            sent += chan.sendmsg([payload[:min(CHUNK, total - sent)]])
            continue
        except BlockingIOError:
            pass
        # the WebSocket client must also read the upgrade response (and any pongs)
        readable, _, _ = select.select([chan], [chan], [], 5.0)
        if readable:
            try:
                chan.recv_into(scratch, len(scratch))
            except BlockingIOError:
                pass
        if getattr(chan, "wants_write", False):
            chan.flush()
    while getattr(chan, "wants_write", False):
        select.select([], [chan], [], 5.0)
        chan.flush()


def _receive(chan, total: int) -> float:
    """Receive ``total`` bytes; return the time the first application byte came."""
    buf = bytearray(RECV)
    got = 0
    first = None
    while got < total:
        select.select([chan], [chan] if getattr(chan, "wants_write", False) else [], [], 5.0)
        try:
            n = chan.recv_into(buf, RECV)
        except BlockingIOError:
            if getattr(chan, "wants_write", False):
                chan.flush()
            continue
        if n == 0:
            raise EOFError(f"stream ended after {got} bytes")
        if first is None:
            first = time.perf_counter()
        got += n
    return first if first is not None else time.perf_counter()


def _tcp_pair() -> tuple[socket.socket, socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
    return client, server


def run_case(kind: str, direction: str, total: int) -> dict:
    """One transfer; returns MB/s and CPU s/GB of the sender and receiver."""
    a, b = _tcp_pair()
    client_sends = direction == "c2s"
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: the server side
        a.close()
        os.close(read_fd)
        chan = _wrap(b, kind, "server")
        cpu0 = _cpu()
        if client_sends:
            _receive(chan, total)
        else:
            _send(chan, total)
            # the client still reads; keep the socket open until it is done
            select.select([chan], [], [], 30.0)
        os.write(write_fd, f"{_cpu() - cpu0}\n".encode())
        os._exit(0)
    b.close()
    os.close(write_fd)
    chan = _wrap(a, kind, "client")
    cpu0 = _cpu()
    start = time.perf_counter()
    if client_sends:
        _send(chan, total)
        end = None
    else:
        first = _receive(chan, total)
        end = time.perf_counter()
    client_cpu = _cpu() - cpu0
    with os.fdopen(read_fd) as pipe:
        server_cpu = float(pipe.readline())
    if end is None:
        end = time.perf_counter()
    else:
        start = min(start, first)
    chan.close()
    os.waitpid(pid, 0)
    gb = total / 1e9
    sender_cpu, receiver_cpu = ((client_cpu, server_cpu) if client_sends
                                else (server_cpu, client_cpu))
    return {"mbps": total / 1e6 / (end - start), "send_cpu": sender_cpu / gb,
            "recv_cpu": receiver_cpu / gb}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--frame", type=int, default=64, help="KiB per message sent")
    parser.add_argument("--chunk", type=int, default=64, help="KiB per sendmsg call")
    args = parser.parse_args()
    global FRAME, CHUNK
    FRAME, CHUNK = args.frame * 1024, args.chunk * 1024
    total = args.mib * 1024 * 1024
    cases = [("tcp", "c2s", "raw TCP"), ("ws", "c2s", "WebSocket client->server (masked)"),
             ("ws", "s2c", "WebSocket server->client")]
    results: dict[str, list[dict]] = {label: [] for _, _, label in cases}
    for _ in range(args.rounds):  # interleaved: load changes hit every case alike
        for kind, direction, label in cases:
            results[label].append(run_case(kind, direction, total))
    print(f"{args.mib} MiB per transfer, {args.chunk} KiB per sendmsg, {args.frame} KiB "
          f"messages, median of {args.rounds} round(s)\n")
    print("| case | MB/s | sender CPU s/GB | receiver CPU s/GB |\n|---|---|---|---|")
    for label, runs in results.items():
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        print(f"| {label} | {med['mbps']:.0f} | {med['send_cpu']:.2f} | "
              f"{med['recv_cpu']:.2f} |")


if __name__ == "__main__":
    main()
