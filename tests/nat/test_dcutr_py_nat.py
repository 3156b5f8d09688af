"""DCUtR with py-libp2p 0.8.1 across two endpoint-independent NATs, both roles.

The py peer is tests/interop/py/peer.py in the interop virtualenv (installed by the
first run of tests/interop; without it these tests skip, saying so). Our relay runs on
the public host. js-libp2p 2.10 is not tried: its dial queue drops DCUtR's
``initiator: false``, so both ends of a TCP hole punch act as the security initiator
and the handshake fails (tests/interop/README.md).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from netlab import NetLab, lab_or_skip

pytestmark = pytest.mark.timeout(180)

INTEROP = Path(__file__).resolve().parent.parent / "interop"
PYTHON = INTEROP / ".py-libp2p-venv" / "bin" / "python"
PEER = INTEROP / "py" / "peer.py"
PUBLIC = [NetLab.PUBLIC_NETWORK]


@pytest.fixture(scope="module")
def lab():
    if not PYTHON.exists():
        pytest.skip("py-libp2p is not installed: run tests/interop once "
                    f"({PYTHON} is missing)")
    lab = lab_or_skip(nats=("eim", "eim"), public_hosts=1, drop_unsolicited=True)
    yield lab
    lab.close()


@pytest.fixture(scope="module")
def relay(lab):
    host = lab.public[0]
    return lab.spawn(host).start_node(listen=[f"/ip4/{host.ip}/tcp/0"],
                                      relay_service={}, public_networks=PUBLIC)


def _py(lab, index: int, *args: str) -> list[str]:
    host = lab.private[index]
    return ["ip", "netns", "exec", host.ns, str(PYTHON), str(PEER), *args,
            "--muxer", "yamux", "--listen-ip", host.ip]


def test_py_receiver_punches_with_our_initiator(lab, relay):
    host = lab.private[0]
    ours = lab.spawn(host).start_node(listen=[f"/ip4/{host.ip}/tcp/0"],
                                      public_networks=PUBLIC)
    (circuit,) = ours.call("reserve", relay=relay.p2p_addr())
    result = subprocess.run(_py(lab, 1, "dcutr", f"{circuit}/p2p/{ours.peer_id}",
                                "--wait", "20", "--timeout", "40"),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr[-2000:]
    # py's direct connection leads to our router's address: a punched hole
    assert result.stdout.startswith(f"dcutr direct /ip4/{lab.nat[0].ip}/tcp/"), result.stdout
    assert ours.call("hole_punches").get("punched") == 1


def test_py_initiator_punches_with_our_receiver(lab, relay):
    py = subprocess.Popen(_py(lab, 0, "listen", "--via", relay.p2p_addr(), "--dcutr"),
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
    try:
        line = py.stdout.readline()
        assert line.startswith("LISTEN "), line + py.stderr.read()[-2000:]
        circuit = line.split()[1]
        host = lab.private[1]
        ours = lab.spawn(host).start_node(listen=[f"/ip4/{host.ip}/tcp/0"],
                                          public_networks=PUBLIC)
        ours.dial(circuit)
        peer = circuit.rsplit("/", 1)[1]
        assert ours.call("wait_direct", peer=peer, timeout_s=20), ours.proc.stderr_tail()
        (direct,) = [c for c in ours.call("connections", peer=peer) if not c["relayed"]]
        assert direct["remote_addr"][0] == lab.nat[0].ip
        assert ours.call("hole_punches").get("punched") == 1
        result = ours.call("echo", peer=peer, size=4096, direct=True)
        assert result["ok"] and not result["relayed"], result
    finally:
        py.kill()
        py.wait(5)
