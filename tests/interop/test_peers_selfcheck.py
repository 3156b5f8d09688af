"""Self-check of the interop peer programs: real js-libp2p and py-libp2p
talking to each other (and to themselves) through the shared CLI contract.

If these fail, interop failures of libp2p_stream_sync cannot be trusted.
"""
from __future__ import annotations

import subprocess
from typing import Callable, Iterator

import pytest

from peers import (
    DEFAULT_STACK,
    EXIT_FAIL,
    EXIT_OK,
    EXIT_UNSUPPORTED,
    ListenerPool,
    PeerProcess,
    Stack,
    parse_result,
    peers_interoperate,
    run_peer_command,
)

pytestmark = [
    pytest.mark.interop,
    # The first test may install both peers (npm ci + pip, tens of seconds).
    pytest.mark.timeout(900),
]

MUXERS = ("yamux", "mplex")
# (listener kind, dialer kind)
CROSS = [("js", "py"), ("py", "js")]
SAME = [("js", "js"), ("py", "py")]

KIB = 1024
MIB = 1024 * KIB

# A valid Ed25519 peer id that no freshly started listener has.
FOREIGN_PEER_ID = "12D3KooWCvBSTXhTzK9s5zJBhu1SeBqy2syyU9zhYjzK76JraMTi"
UNSUPPORTED_PROTOCOL = "/selfcheck/unsupported/1.0.0"


def cross_params():
    return [pytest.param(lk, dk, m, id=f"{lk}-listen-{dk}-dial-{m}")
            for lk, dk in CROSS for m in MUXERS]


def same_params():
    return [pytest.param(lk, dk, m, id=f"{lk}-{dk}-{m}") for lk, dk in SAME for m in MUXERS]


@pytest.fixture(scope="module")
def listener(interop_peers) -> Iterator[Callable[..., PeerProcess]]:
    """listener(kind, muxer, stack=DEFAULT_STACK) -> a running PeerProcess,
    shared by the module; every listener must exit cleanly at the end."""
    pool = ListenerPool()
    yield pool.get
    bad = pool.close()
    assert not bad, "\n".join(bad)


def run(kind: str, args: list[str], timeout: float = 60,
        stack: Stack = DEFAULT_STACK) -> subprocess.CompletedProcess:
    return run_peer_command(kind, args, timeout=timeout, stack=stack)


def describe(cp: subprocess.CompletedProcess) -> str:
    return (f"exit {cp.returncode}\n--- stdout ---\n{cp.stdout}\n"
            f"--- stderr (tail) ---\n{cp.stderr[-4000:]}")


def expect_ok(cp: subprocess.CompletedProcess, what: str):
    res = parse_result(cp.stdout)
    assert cp.returncode == EXIT_OK and res.ok and res.words[:1] == [what], describe(cp)
    return res


# ------------------------------------------------------------- js <-> py --

@pytest.mark.parametrize("lkind,dkind,muxer", cross_params())
def test_echo_one_stream_1mib(listener, lkind, dkind, muxer):
    peer = listener(lkind, muxer)
    cp = run(dkind, ["echo", peer.multiaddr, "--muxer", muxer,
                     "--bytes", str(MIB), "--streams", "1"])
    res = expect_ok(cp, "echo")
    assert res.fields["streams"] == "1" and res.fields["bytes"] == str(MIB)
    assert float(res.fields["seconds"]) >= 0


@pytest.mark.parametrize("lkind,dkind,muxer", cross_params())
def test_echo_20_streams_64kib(listener, lkind, dkind, muxer):
    peer = listener(lkind, muxer)
    cp = run(dkind, ["echo", peer.multiaddr, "--muxer", muxer,
                     "--bytes", str(64 * KIB), "--streams", "20"])
    res = expect_ok(cp, "echo")
    assert res.fields["streams"] == "20" and res.fields["bytes"] == str(64 * KIB)


@pytest.mark.parametrize("lkind,dkind,muxer", cross_params())
def test_echo_lockstep(listener, lkind, dkind, muxer):
    peer = listener(lkind, muxer)
    cp = run(dkind, ["echo", peer.multiaddr, "--muxer", muxer,
                     "--bytes", str(256 * KIB), "--streams", "2", "--lockstep"])
    expect_ok(cp, "echo")


@pytest.mark.parametrize("lkind,dkind,muxer", cross_params())
def test_ping(listener, lkind, dkind, muxer):
    peer = listener(lkind, muxer)
    res = expect_ok(run(dkind, ["ping", peer.multiaddr, "--muxer", muxer]), "ping")
    assert 0 <= float(res.fields["rtt_ms"]) < 10_000


@pytest.mark.parametrize("lkind,dkind,muxer", cross_params())
def test_identify(listener, lkind, dkind, muxer):
    peer = listener(lkind, muxer)
    res = expect_ok(run(dkind, ["id", peer.multiaddr, "--muxer", muxer]), "id")
    protocols = res.fields["protocols"].split(",")
    assert protocols == sorted(protocols)
    for proto in ("/echo/1.0.0", "/ipfs/id/1.0.0", "/ipfs/ping/1.0.0", "/perf/1.0.0"):
        assert proto in protocols, res.line
    agent_prefix = {"js": "js-libp2p/", "py": "py-libp2p/"}[lkind]
    assert res.fields["agent"].startswith(agent_prefix), res.line


@pytest.mark.parametrize("lkind,dkind,muxer", cross_params())
def test_perf_8mib_up_and_down(listener, lkind, dkind, muxer):
    peer = listener(lkind, muxer)
    n = 8 * MIB
    res = expect_ok(run(dkind, ["perf", peer.multiaddr, "--muxer", muxer,
                                "--upload", str(n), "--download", str(n)]), "perf")
    assert res.fields["upload_bytes"] == str(n)
    assert res.fields["download_bytes"] == str(n)


@pytest.mark.parametrize("lkind,dkind,muxer", cross_params())
def test_open_supported_and_unsupported(listener, lkind, dkind, muxer):
    peer = listener(lkind, muxer)
    expect_ok(run(dkind, ["open", peer.multiaddr, "--muxer", muxer,
                          "--protocol", "/echo/1.0.0"]), "open")
    cp = run(dkind, ["open", peer.multiaddr, "--muxer", muxer,
                     "--protocol", UNSUPPORTED_PROTOCOL])
    res = parse_result(cp.stdout)
    assert cp.returncode == EXIT_UNSUPPORTED, describe(cp)
    assert res.status == "UNSUPPORTED" and res.words == [UNSUPPORTED_PROTOCOL], describe(cp)


@pytest.mark.parametrize("lkind,dkind,muxer", cross_params())
def test_wrong_peer_id_fails(listener, lkind, dkind, muxer):
    peer = listener(lkind, muxer)
    assert peer.peer_id != FOREIGN_PEER_ID
    wrong = peer.multiaddr.replace(peer.peer_id, FOREIGN_PEER_ID)
    cp = run(dkind, ["ping", wrong, "--muxer", muxer], timeout=30)
    res = parse_result(cp.stdout)
    assert cp.returncode == EXIT_FAIL and res.status == "FAIL", describe(cp)
    # ... and the listener is still fine afterwards.
    expect_ok(run(dkind, ["ping", peer.multiaddr, "--muxer", muxer]), "ping")


# ----------------------------------------------------- js <-> js, py <-> py --

@pytest.mark.parametrize("lkind,dkind,muxer", same_params())
def test_same_implementation_echo(listener, lkind, dkind, muxer):
    peer = listener(lkind, muxer)
    cp = run(dkind, ["echo", peer.multiaddr, "--muxer", muxer,
                     "--bytes", str(256 * KIB), "--streams", "4"])
    expect_ok(cp, "echo")


@pytest.mark.parametrize("kind", ["js", "py"])
def test_muxer_mismatch_fails(listener, kind):
    """A yamux-only dialer cannot reach an mplex-only listener."""
    other = {"js": "py", "py": "js"}[kind]
    peer = listener(kind, "mplex")
    cp = run(other, ["ping", peer.multiaddr, "--muxer", "yamux"], timeout=30)
    assert cp.returncode == EXIT_FAIL and parse_result(cp.stdout).status == "FAIL", describe(cp)


# ------------------------------------------- other transports and security --

# Every pairing of the peer programs that can use a non-default stack, once
# (js <-> py over /tls/1.0.0 cannot: see README "Quirks").  QUIC ignores the
# muxer; the others run yamux (muxers are covered above).
STACK_CELLS = [
    ("js", "py", Stack("ws", "noise")),
    ("py", "js", Stack("ws", "noise")),
    ("js", "js", Stack("ws", "tls")),
    ("js", "js", Stack("tcp", "tls")),
    ("py", "py", Stack("tcp", "tls")),
    ("js", "js", Stack("quic")),
    ("py", "py", Stack("quic")),
    ("js", "py", Stack("quic")),
    ("py", "js", Stack("quic")),
]


def stack_params():
    return [pytest.param(lk, dk, stack, id=f"{lk}-listen-{dk}-dial-{stack.id}")
            for lk, dk, stack in STACK_CELLS]


@pytest.mark.parametrize("lkind,dkind,stack", stack_params())
def test_stack_echo(listener, lkind, dkind, stack):
    assert peers_interoperate(lkind, dkind, stack)
    peer = listener(lkind, "yamux", stack)
    # (PeerProcess only accepts a LISTEN address of the stack's transport.)
    cp = run(dkind, ["echo", peer.multiaddr, "--muxer", "yamux",
                     "--bytes", str(256 * KIB), "--streams", "2"], stack=stack)
    res = expect_ok(cp, "echo")
    assert res.fields["streams"] == "2" and res.fields["bytes"] == str(256 * KIB)


@pytest.mark.parametrize("lkind,dkind,stack", stack_params())
def test_stack_ping(listener, lkind, dkind, stack):
    peer = listener(lkind, "yamux", stack)
    res = expect_ok(run(dkind, ["ping", peer.multiaddr, "--muxer", "yamux"], stack=stack),
                    "ping")
    assert 0 <= float(res.fields["rtt_ms"]) < 10_000
