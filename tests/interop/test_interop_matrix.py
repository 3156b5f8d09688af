"""Our node against real js-libp2p and py-libp2p peers (issue #5).

Every cell runs in both directions: ``we_dial`` (our Node is the client of a peer
program in ``listen`` mode) and ``they_dial`` (the peer program's client commands
against our listening Node). Test ids name peer, direction, muxer and scenario.
"""

from __future__ import annotations

import functools
import hashlib
import os
import threading

import pytest

import peers
from libp2p_stream_sync import Node, OpenStreamError, PeerId, UnsupportedProtocol
from libp2p_stream_sync.protocols.echo import serve_echo
from libp2p_stream_sync.protocols.identify import AGENT_VERSION

pytestmark = pytest.mark.interop

KINDS = ["js", "py"]
MUXERS = ["yamux", "mplex"]
MiB = 1 << 20
PERF_BYTES = 64 * MiB
OUR_PROTOCOLS = {"/echo/1.0.0", "/ipfs/id/1.0.0", "/ipfs/ping/1.0.0", "/perf/1.0.0"}
SCENARIOS = ["echo_1x4MiB", "echo_100x64KiB", "ping", "identify", "perf_upload_64MiB",
             "perf_download_64MiB", "unsupported_protocol", "wrong_peer_id"]
#: The other stacks (issue #14) run over yamux with fewer, smaller cells: perf moves
#: 8 MiB each way in one run (64 MiB over WebSocket would add about a minute).
OTHER_STACKS = [peers.Stack("tcp", "tls"), peers.Stack("ws", "noise"),
                peers.Stack("ws", "tls")]
STACK_SCENARIOS = ["echo_1x4MiB", "ping", "identify", "perf_8MiB", "wrong_peer_id"]
STACK_PERF_BYTES = 8 * MiB
#: QUIC (/quic-v1, issue #15): its own TLS 1.3 and streams, no muxer negotiation (the
#: peer programs' --muxer is ignored there). Perf moves 8 MiB each way.
QUIC = peers.Stack("quic")
QUIC_SCENARIOS = ["echo_1x4MiB", "echo_100x64KiB", "ping", "identify", "perf_8MiB",
                  "unsupported_protocol", "wrong_peer_id"]


def _other_peer_id() -> PeerId:
    from libp2p_stream_sync import Keypair
    return Keypair.generate().peer_id


# -- we dial them ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def listeners(interop_peers):
    """One running listener per (peer kind, muxer[, stack]), shared by the we_dial
    tests (listeners(kind, muxer, stack=peers.DEFAULT_STACK))."""
    with peers.ListenerPool() as pool:
        yield pool.get


@pytest.fixture
def our_client(request):
    nodes = []

    def make(muxer: str, security: str = "noise") -> Node:
        node = Node(muxers=[muxer], security=[security])
        nodes.append(node)
        return node

    yield make
    for node in nodes:
        node.close()


def _echo_both_ways(control, peer, payload: bytes, timeout: float = 60) -> bytes:
    stream = control.open_stream(peer, "/echo/1.0.0", timeout=timeout)
    stream.settimeout(timeout)
    writer_error = []

    def write():
        try:
            for start in range(0, len(payload), 256 * 1024):
                stream.write(payload[start:start + 256 * 1024])
            stream.close_write()
        except Exception as exc:  # reported by the assertion below
            writer_error.append(exc)

    thread = threading.Thread(target=write)
    thread.start()
    data = stream.readall()
    thread.join(timeout)
    stream.close()
    assert not writer_error, writer_error
    return data


def _we_dial(scenario: str, kind: str, muxer: str, peer: peers.PeerProcess, node: Node):
    control = node.new_control()
    addr = peer.multiaddr
    peer_id = PeerId.from_string(peer.peer_id)
    if scenario == "echo_1x4MiB":
        payload = os.urandom(4 * MiB)
        assert _echo_both_ways(control, addr, payload) == payload
    elif scenario == "echo_100x64KiB":
        node.dial(addr)
        payloads = [os.urandom(64 * 1024) for _ in range(100)]
        results: dict[int, bytes | Exception] = {}

        def one(i):
            try:
                results[i] = _echo_both_ways(control, peer_id, payloads[i])
            except Exception as exc:
                results[i] = exc

        threads = [threading.Thread(target=one, args=(i,)) for i in range(100)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        failures = {i: r for i, r in results.items() if r != payloads[i]}
        assert len(results) == 100 and not failures, list(failures.items())[:3]
    elif scenario == "ping":
        rtts = node.ping(addr, count=3, timeout=30)
        assert len(rtts) == 3 and all(0 < r < 5 for r in rtts)
    elif scenario == "identify":
        node.dial(addr)
        info = node.wait_identified(peer_id, timeout=30)
        assert {"/echo/1.0.0", "/ipfs/ping/1.0.0", "/ipfs/id/1.0.0"} <= set(info.protocols)
        assert info.agent_version.startswith("js-libp2p" if kind == "js" else "py-libp2p")
        assert info.listen_addrs
    elif scenario == "perf_8MiB":
        result = node.perf(addr, STACK_PERF_BYTES, STACK_PERF_BYTES, timeout=120)
        assert (result.upload_bytes, result.download_bytes) == (STACK_PERF_BYTES,) * 2
    elif scenario == "perf_upload_64MiB":
        result = node.perf(addr, PERF_BYTES, 0, timeout=120)
        assert (result.upload_bytes, result.download_bytes) == (PERF_BYTES, 0)
    elif scenario == "perf_download_64MiB":
        result = node.perf(addr, 0, PERF_BYTES, timeout=120)
        assert (result.upload_bytes, result.download_bytes) == (0, PERF_BYTES)
    elif scenario == "unsupported_protocol":
        with pytest.raises(UnsupportedProtocol) as info:
            control.open_stream(addr, "/not-there/1.0.0", timeout=30)
        assert info.value.protocol == "/not-there/1.0.0"
    elif scenario == "wrong_peer_id":
        wrong = addr.rsplit("/p2p/", 1)[0] + f"/p2p/{_other_peer_id()}"
        with pytest.raises(OpenStreamError) as info:
            control.open_stream(wrong, "/echo/1.0.0", timeout=30)
        assert info.value.kind == "wrong-peer"
    else:  # pragma: no cover
        raise AssertionError(scenario)


@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("muxer", MUXERS)
@pytest.mark.parametrize("kind", KINDS)
def test_we_dial(kind, muxer, scenario, listeners, our_client):
    peer = listeners(kind, muxer)
    try:
        _we_dial(scenario, kind, muxer, peer, our_client(muxer))
    except BaseException:
        print(f"{kind} listener stderr:\n{peer.stderr_text()[-3000:]}")
        raise


@pytest.mark.parametrize("scenario", STACK_SCENARIOS)
@pytest.mark.parametrize("stack", OTHER_STACKS, ids=lambda stack: stack.id)
@pytest.mark.parametrize("kind", KINDS)
def test_we_dial_stack(kind, stack, scenario, listeners, our_client):
    """TCP + TLS, WS + Noise, WS + TLS: our Node dials their listener (yamux)."""
    peer = listeners(kind, "yamux", stack)
    try:
        _we_dial(scenario, kind, "yamux", peer, our_client("yamux", stack.security))
    except BaseException:
        print(f"{kind} listener stderr:\n{peer.stderr_text()[-3000:]}")
        raise


@pytest.mark.parametrize("scenario", QUIC_SCENARIOS)
@pytest.mark.parametrize("kind", KINDS)
def test_we_dial_quic(kind, scenario, listeners, our_client):
    """Our Node dials their QUIC listener (/udp/N/quic-v1)."""
    peer = listeners(kind, "yamux", QUIC)
    node = our_client("yamux")
    try:
        _we_dial(scenario, kind, "yamux", peer, node)
        if scenario in ("echo_1x4MiB", "ping", "perf_8MiB"):
            assert {c.transport.name for c in node.connections()} == {"quic-v1"}
    except BaseException:
        print(f"{kind} listener stderr:\n{peer.stderr_text()[-3000:]}")
        raise


# -- they dial us ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def our_servers(interop_peers):
    """One listening Node per muxer with echo and perf, shared by the they_dial tests."""
    servers: dict[tuple[str, peers.Stack], tuple[Node, object]] = {}

    def get(muxer: str, stack: peers.Stack = peers.DEFAULT_STACK) -> Node:
        if (muxer, stack) not in servers:
            node = Node(listen=[stack.listen_addr], muxers=[muxer],
                        security=[stack.security], enable_perf=True)
            servers[muxer, stack] = (node, serve_echo(node.new_control(), max_streams=256))
        return servers[muxer, stack][0]

    yield get
    for node, echo in servers.values():
        echo.close()
        node.close()


def _run(kind: str, args: list[str], timeout: float = 120,
         stack: peers.Stack = peers.DEFAULT_STACK):
    proc = peers.run_peer_command(kind, args, timeout=timeout, stack=stack)
    return proc, peers.parse_result(proc.stdout)


def _they_dial(scenario: str, kind: str, muxer: str, node: Node,
               stack: peers.Stack = peers.DEFAULT_STACK):
    addr = f"{node.listen_addrs[0]}/p2p/{node.peer_id}"
    run = functools.partial(_run, stack=stack)
    base = ["--muxer", muxer]
    lockstep = ["--lockstep"] if (kind == "py" and muxer == "mplex") else []
    if scenario == "echo_1x4MiB":
        proc, res = run(kind, ["echo", addr, *base, "--bytes", str(4 * MiB),
                               "--streams", "1", *lockstep])
        assert res.ok and res.fields["bytes"] == str(4 * MiB), proc.stdout + proc.stderr
    elif scenario == "echo_100x64KiB":
        proc, res = run(kind, ["echo", addr, *base, "--bytes", str(64 * 1024),
                               "--streams", "100", *lockstep])
        assert res.ok and res.fields["streams"] == "100", proc.stdout + proc.stderr
    elif scenario == "ping":
        proc, res = run(kind, ["ping", addr, *base])
        assert res.ok and float(res.fields["rtt_ms"]) > 0, proc.stdout + proc.stderr
    elif scenario == "identify":
        proc, res = run(kind, ["id", addr, *base])
        assert res.ok, proc.stdout + proc.stderr
        assert OUR_PROTOCOLS <= set(res.fields["protocols"].split(","))
        assert res.fields["agent"] == AGENT_VERSION
    elif scenario == "perf_8MiB":
        size = str(STACK_PERF_BYTES)
        proc, res = run(kind, ["perf", addr, *base, "--upload", size, "--download", size])
        assert res.ok and (res.fields["upload_bytes"], res.fields["download_bytes"]) == \
            (size, size), proc.stdout + proc.stderr
    elif scenario == "perf_upload_64MiB":
        proc, res = run(kind, ["perf", addr, *base, "--upload", str(PERF_BYTES),
                               "--download", "0"])
        assert res.ok and res.fields["upload_bytes"] == str(PERF_BYTES), \
            proc.stdout + proc.stderr
    elif scenario == "perf_download_64MiB":
        proc, res = run(kind, ["perf", addr, *base, "--upload", "0",
                               "--download", str(PERF_BYTES)])
        assert res.ok and res.fields["download_bytes"] == str(PERF_BYTES), \
            proc.stdout + proc.stderr
    elif scenario == "unsupported_protocol":
        proc, res = run(kind, ["open", addr, *base, "--protocol", "/not-there/1.0.0"])
        assert proc.returncode == peers.EXIT_UNSUPPORTED, proc.stdout + proc.stderr
        assert res.status == "UNSUPPORTED"
    elif scenario == "wrong_peer_id":
        wrong = f"{node.listen_addrs[0]}/p2p/{_other_peer_id()}"
        proc, res = run(kind, ["echo", wrong, *base, "--bytes", "16", "--streams", "1"])
        assert proc.returncode == peers.EXIT_FAIL and res.status == "FAIL", \
            proc.stdout + proc.stderr
    else:  # pragma: no cover
        raise AssertionError(scenario)


@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("muxer", MUXERS)
@pytest.mark.parametrize("kind", KINDS)
def test_they_dial(kind, muxer, scenario, our_servers):
    _they_dial(scenario, kind, muxer, our_servers(muxer))


@pytest.mark.parametrize("scenario", STACK_SCENARIOS)
@pytest.mark.parametrize("stack", OTHER_STACKS, ids=lambda stack: stack.id)
@pytest.mark.parametrize("kind", KINDS)
def test_they_dial_stack(kind, stack, scenario, our_servers):
    """TCP + TLS, WS + Noise, WS + TLS: their client dials our Node (yamux)."""
    _they_dial(scenario, kind, "yamux", our_servers("yamux", stack), stack)


@pytest.mark.parametrize("scenario", QUIC_SCENARIOS)
@pytest.mark.parametrize("kind", KINDS)
def test_they_dial_quic(kind, scenario, our_servers):
    """Their QUIC client dials our Node's /udp/N/quic-v1 listener."""
    _they_dial(scenario, kind, "yamux", our_servers("yamux", QUIC), QUIC)


def test_checksums_survive_a_long_echo_through_js(listeners, our_client):
    """A larger transfer through js-libp2p, checked by hash (catches reordering)."""
    peer = listeners("js", "yamux")
    node = our_client("yamux")
    payload = os.urandom(16 * MiB)
    echoed = _echo_both_ways(node.new_control(), peer.multiaddr, payload)
    assert hashlib.sha256(echoed).digest() == hashlib.sha256(payload).digest()
