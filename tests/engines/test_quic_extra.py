"""QUIC is an optional extra: without aioquic the package imports, QUIC says what to
install, and pyproject pins the version the engine's aioquic hooks were checked on."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

from libp2p_stream_sync.engines import quic

ROOT = pathlib.Path(__file__).resolve().parent.parent.parent

WITHOUT_AIOQUIC = """
import sys
for name in [m for m in sys.modules if m == "aioquic" or m.startswith("aioquic.")]:
    del sys.modules[name]
sys.modules["aioquic"] = None          # makes every "import aioquic..." fail
import libp2p_stream_sync
from libp2p_stream_sync.engines import quic, quic_endpoint
from libp2p_stream_sync.identity import Keypair
assert not quic.quic_available()
for make in (lambda: quic.QuicMuxer(Keypair.generate(), initiator=True),
             lambda: quic_endpoint.QuicEndpoint(Keypair.generate())):
    try:
        make()
    except quic.QuicUnavailable as exc:
        assert isinstance(exc, ImportError)
        print(exc)
    else:
        raise SystemExit("constructed without aioquic")
"""


def test_without_aioquic_the_package_imports_and_quic_names_the_extra():
    done = subprocess.run([sys.executable, "-c", WITHOUT_AIOQUIC], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 2
    assert all("pip install 'libp2p_stream_sync[quic]'" in line for line in lines)


def test_the_extra_pins_the_checked_aioquic_version():
    text = (ROOT / "pyproject.toml").read_text()
    pin = f'"aioquic=={quic.AIOQUIC_VERSION}"'
    assert f"quic = [{pin}]" in text
    assert text.count(pin) == 2  # the quic extra and the test extra


def test_installed_aioquic_is_the_pinned_one():
    pytest.importorskip("aioquic")
    from importlib.metadata import version
    assert version("aioquic") == quic.AIOQUIC_VERSION


NODE_WITHOUT_AIOQUIC = """
import sys
sys.modules["aioquic"] = None
from libp2p_stream_sync import Keypair, Node
from libp2p_stream_sync.engines.quic import QuicUnavailable
try:
    Node(listen=["/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1"])
except QuicUnavailable as exc:
    print("listen:", exc)
else:
    raise SystemExit("listened on QUIC without aioquic")
with Node(listen=["/ip4/127.0.0.1/tcp/0"]) as node:
    peer = Keypair.generate().peer_id
    try:
        node.dial(f"/ip4/127.0.0.1/udp/4001/quic-v1/p2p/{peer}")
    except QuicUnavailable as exc:
        print("dial:", exc)
    else:
        raise SystemExit("dialed QUIC without aioquic")
    node.learn_address(peer, "/ip4/127.0.0.1/udp/4001/quic-v1")  # skipped, no error
    assert node.addresses_of(peer) == []
"""


def test_a_node_without_aioquic_names_the_extra_for_quic_addresses():
    done = subprocess.run([sys.executable, "-c", NODE_WITHOUT_AIOQUIC], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert [line.split(":")[0] for line in lines] == ["listen", "dial"]
    assert all("pip install 'libp2p_stream_sync[quic]'" in line for line in lines)
