"""Processes the benchmark suite runs (``python3 bench/roles.py ROLE ...``).

Every role is one process of a two-process (or more) benchmark. Servers print one
``PORT <n>`` or ``LISTEN <multiaddr>`` line and serve until their stdin closes (or a
hard time limit passes). Clients speak a tiny line protocol with ``bench/run.py`` so
that the orchestrator can sample the server's CPU right around each measured run::

    client -> READY            (set up, e.g. dialed)
    run.py -> go               (one line on the client's stdin; "quit" ends it)
    client -> RUN key=value ...(one measured run)

Nothing here is a test: it only measures. All loops are bounded by counts or deadlines.
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import socket
import statistics
import struct
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

#: No role lives longer than this, whatever happens to its parent.
HARD_LIMIT = 900.0
IDLE_PROTOCOL = "/bench/idle/1.0.0"
ECHO_PROTOCOL = "/echo/1.0.0"


# -- small helpers ------------------------------------------------------------------------
def out(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def cpu_self() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def usage_self() -> tuple[float, int, int]:
    """(CPU seconds, voluntary, involuntary context switches) of this process, all
    threads including finished ones (getrusage RUSAGE_SELF)."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime, ru.ru_nvcsw, ru.ru_nivcsw


def usage_since(u0: tuple[float, int, int]) -> str:
    """``cpu=.. nvcsw=.. nivcsw=..`` fields: this process's usage since ``u0``."""
    cpu, vol, invol = usage_self()
    return f"cpu={cpu - u0[0]:.4f} nvcsw={vol - u0[1]} nivcsw={invol - u0[2]}"


def rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 65536
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def exit_after_hard_limit() -> None:
    def killer() -> None:
        time.sleep(HARD_LIMIT)
        os._exit(3)
    threading.Thread(target=killer, daemon=True).start()


def wait_for_go() -> bool:
    """Print READY, then wait for ``go`` (True) or ``quit``/EOF (False)."""
    out("READY")
    line = sys.stdin.readline()
    return line.strip() == "go"


def wait_stdin_closed() -> None:
    """Block until the parent closes our stdin (or says ``quit``)."""
    while True:
        line = sys.stdin.readline()
        if not line or line.strip() == "quit":
            return


def percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    if not s:
        return float("nan")
    idx = min(len(s) - 1, max(0, int(round(q * (len(s) - 1)))))
    return s[idx]


def tcp_listener() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    return sock


def serve_tcp(handler) -> None:
    """Accept connections (thread each) until stdin closes; print PORT first."""
    lsock = tcp_listener()
    out(f"PORT {lsock.getsockname()[1]}")
    lsock.settimeout(0.2)
    done = threading.Event()

    def acceptor() -> None:
        while not done.is_set():
            try:
                conn, _ = lsock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            conn.settimeout(None)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=handler, args=(conn,), daemon=True).start()

    threading.Thread(target=acceptor, daemon=True).start()
    wait_stdin_closed()
    done.set()
    lsock.close()


def tcp_connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


# -- raw TCP ------------------------------------------------------------------------------
RAW_CHUNK = 256 * 1024


def _sink(conn: socket.socket) -> None:
    buf = bytearray(RAW_CHUNK)
    with conn:
        while conn.recv_into(buf):
            pass
        conn.sendall(b"k")


def _echo(conn: socket.socket) -> None:
    buf = bytearray(64 * 1024)
    view = memoryview(buf)
    with conn:
        while True:
            n = conn.recv_into(buf)
            if not n:
                return
            conn.sendall(view[:n])


def role_tcp_server(args: argparse.Namespace) -> None:
    serve_tcp(_sink if args.mode == "sink" else _echo)


def role_tcp_send(args: argparse.Namespace) -> None:
    """Blocking sendall of 256 KiB pieces, one new connection per run."""
    data = bytes(RAW_CHUNK)
    while wait_for_go():
        sock = tcp_connect(args.port)
        c0, t0 = cpu_self(), time.perf_counter()
        left = args.bytes
        while left > 0:
            n = min(left, RAW_CHUNK)
            sock.sendall(data if n == RAW_CHUNK else data[:n])
            left -= n
        sock.shutdown(socket.SHUT_WR)
        sock.recv(1)
        seconds = time.perf_counter() - t0
        out(f"RUN seconds={seconds:.6f} cpu={cpu_self() - c0:.4f} bytes={args.bytes}")
        sock.close()


def role_tcp_rtt(args: argparse.Namespace) -> None:
    sock = tcp_connect(args.port)
    msg = b"x" * args.size
    buf = bytearray(args.size)
    view = memoryview(buf)
    while wait_for_go():
        samples = []
        u0 = usage_self()
        for _ in range(args.count):
            t0 = time.perf_counter()
            sock.sendall(msg)
            got = 0
            while got < args.size:
                n = sock.recv_into(view[got:])
                if not n:
                    raise ConnectionError("server closed")
                got += n
            samples.append(time.perf_counter() - t0)
        out(f"RUN median_us={statistics.median(samples) * 1e6:.2f} "
            f"p99_us={percentile(samples, 0.99) * 1e6:.2f} count={len(samples)} "
            f"{usage_since(u0)}")
    sock.close()


# -- ChaCha20-Poly1305 pipeline (the Noise transport's ceiling) ---------------------------
FRAME = 65519  # Noise's largest plaintext per frame
TAG = 16
BATCH = 16     # frames per sendall


def _aead(key: bytes):
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
    return ChaCha20Poly1305(key)


_NONCE = struct.Struct("<4xQ")  # Noise: 4 zero bytes, 64-bit little-endian counter
AEAD_KEY = bytes(range(32))


def _aead_sink(conn: socket.socket) -> None:
    cipher = _aead(AEAD_KEY)
    decrypt_into = cipher.decrypt_into
    size = (FRAME + TAG + 2) * BATCH * 2
    buf = bytearray(size)
    view = memoryview(buf)
    plain = bytearray(FRAME)
    pview = memoryview(plain)
    nonce_buf = bytearray(12)
    nonce = 0
    have = 0
    with conn:
        while True:
            n = conn.recv_into(view[have:])
            if not n:
                break
            have += n
            pos = 0
            while have - pos >= 2:
                flen = (buf[pos] << 8) | buf[pos + 1]
                if have - pos - 2 < flen:
                    break
                _NONCE.pack_into(nonce_buf, 0, nonce)
                decrypt_into(nonce_buf, view[pos + 2:pos + 2 + flen], None,
                             pview[:flen - TAG])
                nonce += 1
                pos += 2 + flen
            if pos:
                rest = have - pos
                if rest:
                    buf[:rest] = view[pos:have]
                have = rest
        conn.sendall(b"k")


def role_aead_server(args: argparse.Namespace) -> None:
    serve_tcp(_aead_sink)


def role_aead_send(args: argparse.Namespace) -> None:
    cipher = _aead(AEAD_KEY)
    encrypt_into = cipher.encrypt_into
    plain = bytes(FRAME)
    frame_wire = 2 + FRAME + TAG
    out_buf = bytearray(frame_wire * BATCH)
    oview = memoryview(out_buf)
    for i in range(BATCH):
        out_buf[i * frame_wire] = (FRAME + TAG) >> 8
        out_buf[i * frame_wire + 1] = (FRAME + TAG) & 0xFF
    nonce_buf = bytearray(12)
    while wait_for_go():
        sock = tcp_connect(args.port)
        nonce = 0
        c0, t0 = cpu_self(), time.perf_counter()
        frames_left = -(-args.bytes // FRAME)
        while frames_left > 0:
            k = min(BATCH, frames_left)
            for i in range(k):
                _NONCE.pack_into(nonce_buf, 0, nonce)
                start = i * frame_wire + 2
                encrypt_into(nonce_buf, plain, None, oview[start:start + FRAME + TAG])
                nonce += 1
            sock.sendall(oview[:k * frame_wire])
            frames_left -= k
        sock.shutdown(socket.SHUT_WR)
        sock.recv(1)
        seconds = time.perf_counter() - t0
        moved = -(-args.bytes // FRAME) * FRAME
        out(f"RUN seconds={seconds:.6f} cpu={cpu_self() - c0:.4f} bytes={moved}")
        sock.close()


class _PoolEcho:
    """Echo served by a fixed pool of threads pulling from one IncomingStreams (for
    comparison with serve_echo's thread per stream)."""

    def __init__(self, control, workers: int) -> None:
        from libp2p_stream_sync.protocols.echo import echo_stream
        self._incoming = control.accept(ECHO_PROTOCOL, capacity=4096)

        def work() -> None:
            while True:
                try:
                    _, stream = self._incoming.get()
                except Exception:
                    return
                try:
                    echo_stream(stream, 30.0)
                except OSError:
                    stream.reset()

        for _ in range(workers):
            threading.Thread(target=work, daemon=True).start()

    def close(self) -> None:
        self._incoming.close()


# -- our node: server ---------------------------------------------------------------------
def role_node_server(args: argparse.Namespace) -> None:
    """A Node serving perf, echo (serve_echo) and an idle-stream protocol.

    stdin commands: ``stats`` -> ``STATS rss=.. conns=.. ready=.. held=.. cpu=..``,
    ``usage`` -> ``USAGE cpu=.. nvcsw=.. nivcsw=..`` (getrusage of the process),
    ``gc`` -> ``GC``, ``drop`` -> resets the held idle streams, EOF -> exit.
    """
    raise_nofile()
    from libp2p_stream_sync import Limits, Node, serve_echo

    limits = Limits(max_inbound_connections=8192,
                    max_streams_per_connection=args.max_streams,
                    max_inbound_streams_per_protocol_per_peer=args.max_streams,
                    max_inbound_streams_per_peer=args.max_streams,
                    idle_connection_timeout=None, quic_max_datagram_size=args.quic_datagram)
    listen = {"tcp": "/ip4/127.0.0.1/tcp/0", "ws": "/ip4/127.0.0.1/tcp/0/ws",
              "quic": "/ip4/127.0.0.1/udp/0/quic-v1"}[args.transport]
    node = Node(listen=[listen], muxers=[args.muxer], limits=limits,
                security=args.security.split(","), enable_perf=True,
                max_handler_threads=args.handler_threads)
    ready = [0]
    node.on_connection_ready.append(lambda conn: ready.__setitem__(0, ready[0] + 1))
    control = node.new_control()
    if args.echo_mode == "pool":
        echo = _PoolEcho(control, args.echo_threads)
    else:
        echo = serve_echo(control, max_streams=args.echo_threads, capacity=4096)
    held: list = []
    incoming = control.accept(IDLE_PROTOCOL, capacity=args.max_streams)

    def hold() -> None:
        while True:
            try:
                _, stream = incoming.get()
            except Exception:
                return
            held.append(stream)

    threading.Thread(target=hold, daemon=True).start()
    out(f"LISTEN {node.listen_addrs[0]}/p2p/{node.peer_id}")
    try:
        while True:
            line = sys.stdin.readline()
            cmd = line.strip()
            if not line or cmd == "quit":
                break
            if cmd == "stats":
                conns = len(node.connections())
                cpu, vol, invol = usage_self()
                out(f"STATS rss={rss_bytes()} conns={conns} ready={ready[0]} "
                    f"held={len(held)} cpu={cpu:.4f} nvcsw={vol} nivcsw={invol} "
                    f"threads={threading.active_count()}")
            elif cmd == "usage":
                cpu, vol, invol = usage_self()
                out(f"USAGE cpu={cpu:.6f} nvcsw={vol} nivcsw={invol}")
            elif cmd == "gc":
                gc.collect()
                out("GC")
            elif cmd == "drop":
                for stream in held:
                    stream.reset()
                held.clear()
                out("DROPPED")
            elif cmd == "tracemalloc-start":
                import tracemalloc
                tracemalloc.start()
                out("TM")
            elif cmd == "tracemalloc":
                import tracemalloc
                cur, _peak = tracemalloc.get_traced_memory()
                out(f"TM current={cur}")
            elif cmd == "tracemalloc-top":
                import tracemalloc
                stats = tracemalloc.take_snapshot().statistics("lineno")[:8]
                out("TOP " + " | ".join(f"{st.traceback[0].filename.split('/')[-1]}:"
                                        f"{st.traceback[0].lineno} {st.size}"
                                        for st in stats))
    finally:
        echo.close()
        incoming.close()
        os._exit(0)  # skip joining thousands of connections' teardown


# -- our node: clients --------------------------------------------------------------------
def _client_node(muxer: str, quic_datagram: int = 1200, **kw):
    from libp2p_stream_sync import Limits, Node
    limits = Limits(max_streams_per_connection=16384,
                    max_outbound_connections=8192, quic_max_datagram_size=quic_datagram)
    return Node(muxers=[muxer], limits=limits, **kw)


def role_node_perf(args: argparse.Namespace) -> None:
    node = _client_node(args.muxer, args.quic_datagram, security=args.security.split(","))
    peer = node.dial(args.addr, timeout=30)
    while wait_for_go():
        c0, t0 = cpu_self(), time.perf_counter()
        res = node.perf(peer, args.upload, args.download, timeout=300)
        wall = time.perf_counter() - t0
        out(f"RUN seconds={res.seconds:.6f} wall={wall:.6f} cpu={cpu_self() - c0:.4f} "
            f"bytes={res.upload_bytes + res.download_bytes}")
    os._exit(0)


def role_node_opens(args: argparse.Namespace) -> None:
    """Streams opened per second: open + negotiate + 1-byte echo + close."""
    node = _client_node(args.muxer, args.quic_datagram)
    peer = node.dial(args.addr, timeout=30)
    control = node.new_control()
    # warm-up: identify, windows, thread pools
    for _ in range(50):
        s = control.open_stream(peer, ECHO_PROTOCOL, timeout=10, lazy=args.lazy)
        s.write(b"x")
        s.read_exactly(1)
        s.close()
    while wait_for_go():
        stop_at = time.perf_counter() + args.seconds
        lat: list[list[float]] = [[] for _ in range(args.threads)]
        errors = [0]

        def worker(i: int) -> None:
            ctl = control.clone()
            mine = lat[i]
            clock = time.perf_counter
            while clock() < stop_at:
                try:
                    t_open = clock()
                    s = ctl.open_stream(peer, ECHO_PROTOCOL, timeout=10, lazy=args.lazy)
                    s.settimeout(10)
                    s.write(b"x")
                    s.read_exactly(1)
                    s.close()
                    mine.append(clock() - t_open)
                except Exception:
                    errors[0] += 1
                    if errors[0] > 1000:
                        return

        u0, t0 = usage_self(), time.perf_counter()
        threads = [threading.Thread(target=worker, args=(i,)) for i in range(args.threads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(args.seconds + 30)
        seconds = time.perf_counter() - t0
        allv = [x for v in lat for x in v]
        med = statistics.median(allv) * 1e6 if allv else float("nan")
        out(f"RUN opens={len(allv)} seconds={seconds:.6f} {usage_since(u0)} "
            f"median_us={med:.1f} errors={errors[0]}")
    os._exit(0)


def role_node_rtt(args: argparse.Namespace) -> None:
    node = _client_node(args.muxer, args.quic_datagram)
    peer = node.dial(args.addr, timeout=30)
    stream = node.new_control().open_stream(peer, ECHO_PROTOCOL, timeout=10)
    stream.settimeout(10)
    msg = b"x" * args.size
    buf = bytearray(args.size)
    view = memoryview(buf)
    for _ in range(200):  # warm-up
        stream.write(msg)
        stream.read_exactly(args.size)
    while wait_for_go():
        samples = []
        u0 = usage_self()
        for _ in range(args.count):
            t0 = time.perf_counter()
            stream.write(msg)
            got = 0
            while got < args.size:
                n = stream.readinto(view[got:])
                if not n:
                    raise ConnectionError("echo stream ended")
                got += n
            samples.append(time.perf_counter() - t0)
        out(f"RUN median_us={statistics.median(samples) * 1e6:.2f} "
            f"p99_us={percentile(samples, 0.99) * 1e6:.2f} count={len(samples)} "
            f"{usage_since(u0)}")
    os._exit(0)


def _lean_handshake(port: int, keypair, muxer: str) -> float:
    """TCP connect + multistream /noise + Noise XX (+ early muxer) with the engines,
    blocking, as cheaply as a client can; returns seconds. Closes the socket."""
    from libp2p_stream_sync.engines.multistream import Agreed, MultistreamDialer
    from libp2p_stream_sync.engines.noise import NoiseHandshake
    t0 = time.perf_counter()
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sel = MultistreamDialer(["/noise"])
        hs = NoiseHandshake(keypair, initiator=True, muxers=[muxer])
        sock.sendall(sel.data_to_send())
        leftover = b""
        while True:
            data = sock.recv(65536)
            if not data:
                raise ConnectionError("closed during multistream")
            res = sel.receive_data(data)
            pending = sel.data_to_send()
            if pending:
                sock.sendall(pending)
            if isinstance(res, Agreed):
                leftover = res.leftover
                break
        sock.sendall(hs.data_to_send())
        if leftover:
            hs.receive_data(leftover)
        while not hs.complete:
            data = sock.recv(65536)
            if not data:
                raise ConnectionError("closed during noise")
            hs.receive_data(data)
        transport, rest = hs.to_transport()
        final = hs.data_to_send()
        if hs.selected_muxer() is None:  # no early negotiation: multistream over Noise
            dialer = MultistreamDialer([muxer])
            final += bytes(transport.encrypt(dialer.data_to_send()))
            sock.sendall(final)
            buf = rest
            while True:
                plain = transport.receive_data(buf) if buf else b""
                if plain and isinstance(dialer.receive_data(plain), Agreed):
                    break
                buf = sock.recv(65536)
                if not buf:
                    raise ConnectionError("closed during muxer select")
        else:
            sock.sendall(final)
        return time.perf_counter() - t0
    finally:
        sock.close()


def _lean_quic_handshake(host: str, port: int, keypair, identity) -> float:
    """One QUIC handshake with the engine alone over a blocking UDP socket, until
    both certificates are verified (our Finished sent); then CONNECTION_CLOSE."""
    from libp2p_stream_sync.engines.quic import QuicMuxer
    t0 = time.perf_counter()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        addr = (host, port)
        muxer = QuicMuxer.client(keypair, addr, time.monotonic(), identity=identity,
                                 keepalive_interval=None)
        deadline = t0 + 10
        while True:
            for data, to in muxer.datagrams_to_send(time.monotonic()):
                sock.sendto(data, to)
            if muxer.is_verified:
                break
            if muxer.is_terminated or time.perf_counter() > deadline:
                raise ConnectionError(f"QUIC handshake failed: {muxer.handshake_error}")
            timer = muxer.get_timer()
            sock.settimeout(max(0.001, timer - time.monotonic()) if timer else 1.0)
            try:
                data, src = sock.recvfrom(65536)
            except socket.timeout:
                muxer.handle_timer(time.monotonic())
                continue
            muxer.receive_datagram(data, src, time.monotonic())
        elapsed = time.perf_counter() - t0
        muxer.close()
        for data, to in muxer.datagrams_to_send(time.monotonic()):
            sock.sendto(data, to)
        return elapsed
    finally:
        sock.close()


def role_quic_dial(args: argparse.Namespace) -> None:
    """Dial a QUIC listener as fast as possible with lean blocking handshakes."""
    from libp2p_stream_sync import Keypair
    from libp2p_stream_sync.engines.quic import QuicIdentity
    # Four identities per thread, used in turn: a loaded server reads a connection's
    # CONNECTION_CLOSE late, and one identity would soon hit max_connections_per_peer.
    keys = [Keypair.generate() for _ in range(4 * args.threads)]
    identities = [QuicIdentity(key) for key in keys]  # one per node, as a node does
    turns = [0] * args.threads

    def handshake(i: int) -> float:
        turns[i] += 1
        k = 4 * i + turns[i] % 4
        return _lean_quic_handshake("127.0.0.1", args.port, keys[k], identities[k])
    _lean_dial_loop(args, handshake)


def role_lean_dial(args: argparse.Namespace) -> None:
    """Dial the server as fast as possible with lean blocking handshakes."""
    raise_nofile()
    from libp2p_stream_sync import Keypair
    keys = [Keypair.generate() for _ in range(args.threads)]
    if args.security == "tls":
        from libp2p_stream_sync.engines.tls import TlsIdentity
        identities = [TlsIdentity(key) for key in keys]  # one per node, as a node does

        def handshake(i: int) -> float:
            return _lean_tls_handshake(args.port, keys[i], args.muxer, identities[i])
    else:
        def handshake(i: int) -> float:
            return _lean_handshake(args.port, keys[i], args.muxer)
    _lean_dial_loop(args, handshake)


def _lean_dial_loop(args: argparse.Namespace, handshake) -> None:
    """READY / go / RUN loop of the lean dialers: ``handshake(thread index)`` in
    ``args.threads`` threads for ``args.seconds``."""
    raise_nofile()
    while wait_for_go():
        stop_at = time.perf_counter() + args.seconds
        lat: list[list[float]] = [[] for _ in range(args.threads)]
        errors = [0]

        def worker(i: int) -> None:
            while time.perf_counter() < stop_at:
                try:
                    lat[i].append(handshake(i))
                except Exception:
                    errors[0] += 1
                    time.sleep(0.001)

        u0, t0 = usage_self(), time.perf_counter()
        threads = [threading.Thread(target=worker, args=(i,)) for i in range(args.threads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(args.seconds + 20)
        seconds = time.perf_counter() - t0
        allv = [x for v in lat for x in v]
        med = statistics.median(allv) * 1e3 if allv else float("nan")
        out(f"RUN handshakes={len(allv)} seconds={seconds:.6f} median_ms={med:.3f} "
            f"{usage_since(u0)} errors={errors[0]}")
    os._exit(0)


def _lean_tls_handshake(port: int, keypair, muxer: str, identity) -> float:
    """TCP connect + multistream /tls/1.0.0 + TLS 1.3 (muxer by ALPN, else multistream)
    with the upgrade engine, blocking; returns seconds. Closes the socket."""
    from libp2p_stream_sync.engines.upgrade import TLS, Upgrade
    t0 = time.perf_counter()
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        upgrade = Upgrade(keypair, initiator=True, expected_peer=None, security=[TLS],
                          muxers=[muxer], identities={TLS.protocol_id: identity})
        while True:
            for chunk in upgrade.data_to_send():
                sock.sendall(chunk)
            if upgrade.complete:
                return time.perf_counter() - t0
            data = sock.recv(65536)
            if not data:
                raise ConnectionError("closed during the upgrade")
            if upgrade.transport is None:
                upgrade.receive_data(data)
            else:
                upgrade.receive_plain(upgrade.transport.receive_data(data))
    finally:
        sock.close()


def role_hold_conns(args: argparse.Namespace) -> None:
    """Open ``count`` connections (one Node each: our node keeps one per peer) and hold."""
    raise_nofile()
    nodes: list = []
    lock = threading.Lock()
    failures = [0]
    per = [args.count // args.threads + (1 if i < args.count % args.threads else 0)
           for i in range(args.threads)]

    def worker(n: int) -> None:
        for _ in range(n):
            try:
                node = _client_node(args.muxer, max_handler_threads=2)
                node.dial(args.addr, timeout=60)
                with lock:
                    nodes.append(node)
            except Exception:
                failures[0] += 1

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(n,)) for n in per]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    out(f"HELD conns={len(nodes)} seconds={time.perf_counter() - t0:.4f} "
        f"failures={failures[0]}")
    wait_stdin_closed()
    os._exit(0)


def role_hold_streams(args: argparse.Namespace) -> None:
    """Open ``streams`` idle streams spread over ``conns`` connections and hold them."""
    raise_nofile()
    nodes = [_client_node(args.muxer) for _ in range(args.conns)]
    peers = [n.dial(args.addr, timeout=30) for n in nodes]
    out("CONNECTED")
    if sys.stdin.readline().strip() != "go":
        os._exit(0)
    held: list = []
    lock = threading.Lock()
    failures = [0]
    per = [args.streams // args.conns + (1 if i < args.streams % args.conns else 0)
           for i in range(args.conns)]

    def worker(i: int) -> None:
        control = nodes[i].new_control()
        mine = []
        for _ in range(per[i]):
            try:
                mine.append(control.open_stream(peers[i], IDLE_PROTOCOL, timeout=30))
            except Exception:
                failures[0] += 1
                if failures[0] > 100:
                    break
        with lock:
            held.extend(mine)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(args.conns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    out(f"HELD streams={len(held)} seconds={time.perf_counter() - t0:.4f} "
        f"failures={failures[0]}")
    wait_stdin_closed()
    os._exit(0)


# -- main -----------------------------------------------------------------------------------
def main() -> None:
    exit_after_hard_limit()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="role", required=True)

    s = sub.add_parser("tcp-server")
    s.add_argument("--mode", choices=["sink", "echo"], default="sink")
    s.set_defaults(fn=role_tcp_server)
    s = sub.add_parser("tcp-send")
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--bytes", type=int, required=True)
    s.set_defaults(fn=role_tcp_send)
    s = sub.add_parser("tcp-rtt")
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--count", type=int, default=2000)
    s.add_argument("--size", type=int, default=16)
    s.set_defaults(fn=role_tcp_rtt)
    s = sub.add_parser("aead-server")
    s.set_defaults(fn=role_aead_server)
    s = sub.add_parser("aead-send")
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--bytes", type=int, required=True)
    s.set_defaults(fn=role_aead_send)

    s = sub.add_parser("node-server")
    s.add_argument("--muxer", default="yamux")
    s.add_argument("--max-streams", type=int, default=16384)
    s.add_argument("--echo-threads", type=int, default=64)
    s.add_argument("--handler-threads", type=int, default=64)
    s.add_argument("--echo-mode", choices=["serve_echo", "pool"], default="serve_echo",
                   help="serve_echo (its own worker pool) or a fixed pool of 16 threads")
    s.add_argument("--transport", choices=["tcp", "ws", "quic"], default="tcp")
    s.add_argument("--security", default="noise", help="noise, tls or noise,tls")
    s.add_argument("--quic-datagram", type=int, default=1200,
                   help="Limits.quic_max_datagram_size")
    s.set_defaults(fn=role_node_server)
    for name, fn in (("node-perf", role_node_perf), ("node-opens", role_node_opens),
                     ("node-rtt", role_node_rtt), ("hold-conns", role_hold_conns),
                     ("hold-streams", role_hold_streams)):
        s = sub.add_parser(name)
        s.add_argument("--addr", required=True)
        s.add_argument("--muxer", default="yamux")
        s.add_argument("--quic-datagram", type=int, default=1200,
                       help="Limits.quic_max_datagram_size")
        s.set_defaults(fn=fn)
        if name == "node-perf":
            s.add_argument("--security", default="noise", help="noise or tls")
            s.add_argument("--upload", type=int, required=True)
            s.add_argument("--download", type=int, required=True)
        elif name == "node-opens":
            s.add_argument("--threads", type=int, default=1)
            s.add_argument("--seconds", type=float, default=3.0)
            s.add_argument("--lazy", action="store_true", help="open_stream(lazy=True)")
        elif name == "node-rtt":
            s.add_argument("--count", type=int, default=2000)
            s.add_argument("--size", type=int, default=16)
        elif name == "hold-conns":
            s.add_argument("--count", type=int, required=True)
            s.add_argument("--threads", type=int, default=8)
        elif name == "hold-streams":
            s.add_argument("--conns", type=int, default=4)
            s.add_argument("--streams", type=int, required=True)
    s = sub.add_parser("lean-dial")
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--muxer", default="/yamux/1.0.0")
    s.add_argument("--threads", type=int, default=4)
    s.add_argument("--seconds", type=float, default=3.0)
    s.add_argument("--security", choices=["noise", "tls"], default="noise")
    s.set_defaults(fn=role_lean_dial)
    s = sub.add_parser("quic-dial")
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--threads", type=int, default=4)
    s.add_argument("--seconds", type=float, default=3.0)
    s.set_defaults(fn=role_quic_dial)

    args = p.parse_args()
    args.fn(args)


if __name__ == "__main__":
    main()
