"""``listen --relay-service`` and ``listen --relay`` (issue #16): a node reached only
through a relay, from the command line."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENV = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
CMD = [sys.executable, "-m", "libp2p_stream_sync"]


class Listen:
    """A ``listen`` subprocess and the addresses of its LISTEN lines."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(CMD + ["listen", *args], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env=ENV)
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def addrs(self, count: int, timeout: float = 20) -> list[str]:
        """The first ``count`` LISTEN addresses (fails on any other line)."""
        out = []
        for _ in range(count):
            try:
                line = self.lines.get(timeout=timeout)
            except queue.Empty:
                pytest.fail("listen printed nothing")
            assert line is not None and line.startswith("LISTEN /"), (
                line, self.proc.poll(), line is None and self.proc.stderr.read())
            out.append(line.split(" ", 1)[1])
        return out

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


@pytest.fixture
def relay():
    node = Listen("--relay-service")
    yield node
    node.stop()


def test_listen_through_a_relay_prints_its_circuit_address_and_answers_on_it(relay):
    relay_addr = relay.addrs(1)[0]
    behind = Listen("--relay", relay_addr)
    try:
        direct, circuit = behind.addrs(2)
        peer = direct.rsplit("/p2p/", 1)[1]
        assert circuit == f"{relay_addr}/p2p-circuit/p2p/{peer}"
        for command in (["ping", circuit], ["echo", circuit, "--bytes", "10K"]):
            result = subprocess.run(CMD + command + ["--timeout", "10"], env=ENV,
                                    capture_output=True, text=True, timeout=30)
            assert result.returncode == 0, (result.stdout, result.stderr)
            assert result.stdout.startswith(f"OK {command[0]} "), result.stdout
    finally:
        behind.stop()


def test_listen_with_a_relay_that_serves_none_fails_naming_why():
    plain = Listen()
    try:
        result = subprocess.run(CMD + ["listen", "--relay", plain.addrs(1)[0]], env=ENV,
                                capture_output=True, text=True, timeout=30)
        assert result.returncode == 1 and result.stdout.startswith("FAIL "), result
    finally:
        plain.stop()
