"""The examples that run as separate processes work as their docstrings say."""

from __future__ import annotations

import os
import pathlib
import re
import signal
import stat
import subprocess
import sys

import pytest

from libp2p_stream_sync import Keypair

ROOT = pathlib.Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
ENV = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
ADDRESS = re.compile(r"/ip4/127\.0\.0\.1/tcp/\d+/p2p/(12D3KooW\w+)")


def example(name: str, *args: str, cwd: pathlib.Path | None = None
            ) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(EXAMPLES / name), *args], capture_output=True,
                          text=True, env=ENV, cwd=cwd, timeout=30)


@pytest.fixture
def server():
    """``echo_server.py`` in its own process; yields the address it printed."""
    proc = subprocess.Popen([sys.executable, str(EXAMPLES / "echo_server.py")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=ENV)
    try:
        line = proc.stdout.readline().strip()
        assert ADDRESS.fullmatch(line), (line, proc.stderr.read() if proc.poll() else "")
        yield line
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0, proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        proc.stdout.close()
        proc.stderr.close()


def test_client_talks_to_the_server_process_by_its_printed_address(server):
    result = example("echo_client.py", server, "hello", "second stream")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[:2] == ["echoed: hello", "echoed: second stream"]
    peer_id = ADDRESS.fullmatch(server).group(1)
    assert re.fullmatch(rf"ping {peer_id}: [\d.]+ ms", lines[2]), lines


def test_client_reports_a_wrong_peer_id_and_exits_1(server):
    wrong = server.rsplit("/p2p/", 1)[0] + f"/p2p/{Keypair.generate().peer_id}"
    result = example("echo_client.py", wrong)
    assert result.returncode == 1
    assert result.stdout == "" and result.stderr.startswith(f"cannot talk to {wrong}: ")


def test_peer_id_survives_a_restart(tmp_path):
    first = example("persistent_peer_id.py", "node.key", cwd=tmp_path)
    second = example("persistent_peer_id.py", "node.key", cwd=tmp_path)
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    key = tmp_path / "node.key"
    peer_id = str(Keypair.from_bytes(key.read_bytes()).peer_id)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert first.stdout.splitlines()[0] == f"created node.key, peer id {peer_id}"
    assert second.stdout.splitlines()[0] == f"loaded node.key, peer id {peer_id}"
    for result in (first, second):  # the node really runs with that identity
        assert ADDRESS.search(result.stdout).group(1) == peer_id
    other = example("persistent_peer_id.py", "other.key", cwd=tmp_path)
    assert peer_id not in other.stdout
