"""The command line, run as subprocesses: output contract, exit codes, failure lines."""

from __future__ import annotations

import os
import queue
import re
import shutil
import signal
import stat
import subprocess
import sys
import threading

import pytest

from libp2p_stream_sync import Keypair
from libp2p_stream_sync.cli import main, parse_size

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENV = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
CMD = [sys.executable, "-m", "libp2p_stream_sync"]
LISTEN_RE = re.compile(r"^LISTEN (/ip[46]/\S+/tcp/\d+)/p2p/(\w+)$")


class Listener:
    """A ``listen`` subprocess; :attr:`addrs` holds its LISTEN lines' addresses."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(CMD + ["listen", *args], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env=ENV)
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()
        self.addrs = [self.next_line(10)]
        self.peer_id = self.addrs[0].rsplit("/p2p/", 1)[1]

    def _pump(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def next_line(self, timeout: float) -> str:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            self.stop()
            pytest.fail("listener printed nothing")
        if line is None:
            pytest.fail(f"listener exited: {self.proc.wait(5)} {self.proc.stderr.read()}")
        assert LISTEN_RE.match(line), line
        return line.split(" ", 1)[1]

    @property
    def addr(self) -> str:
        return self.addrs[0]

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(10)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(5)
            self.proc.stdout.close()
            self.proc.stderr.close()


def run(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(CMD + list(args), capture_output=True, text=True, env=ENV,
                          timeout=timeout)


def ok_line(result: subprocess.CompletedProcess, command: str) -> dict[str, str]:
    """Check ``OK <command> k=v ...`` on stdout with exit 0; return the fields."""
    assert result.returncode == 0, (result.stdout, result.stderr)
    lines = result.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"OK {command} "), result.stdout
    return dict(item.split("=", 1) for item in lines[0].split(" ")[2:])


def fail_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 1, (result.stdout, result.stderr)
    lines = result.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith("FAIL "), result.stdout
    return lines[0][5:]


@pytest.fixture(scope="module")
def listener():
    node = Listener()
    yield node
    assert node.stop() == 0


@pytest.fixture(scope="module")
def perf_listener(tmp_path_factory):
    key = tmp_path_factory.mktemp("key") / "node.key"
    node = Listener("--perf", "--muxer", "mplex", "--key-file", str(key),
                    "--listen", "/ip4/127.0.0.1/tcp/0", "--listen", "/ip6/::1/tcp/0")
    node.addrs.append(node.next_line(5))
    node.key = key
    yield node
    assert node.stop() == 0


def test_listen_prints_one_line_per_address_with_the_key_files_peer_id(perf_listener):
    assert perf_listener.addrs[0].startswith("/ip4/127.0.0.1/tcp/")
    assert perf_listener.addrs[1].startswith("/ip6/::1/tcp/")
    assert perf_listener.peer_id == str(Keypair.from_bytes(perf_listener.key.read_bytes())
                                        .peer_id)


def test_echo(listener):
    fields = ok_line(run("echo", listener.addr, "--bytes", "256K", "--streams", "4"), "echo")
    assert fields["streams"] == "4" and fields["bytes"] == str(256 * 1024)
    assert float(fields["seconds"]) > 0


def test_echo_over_mplex_and_ipv6(perf_listener):
    fields = ok_line(run("echo", perf_listener.addrs[1], "--muxer", "mplex"), "echo")
    assert fields["streams"] == "1" and fields["bytes"] == "1024"


def test_ping(listener):
    fields = ok_line(run("ping", listener.addr, "--count", "3"), "ping")
    assert 0 < float(fields["rtt_ms"]) < 5000


def test_perf(perf_listener):
    fields = ok_line(run("perf", perf_listener.addr, "--upload", "2M", "--download", "1K"),
                     "perf")
    assert fields["upload_bytes"] == str(2 << 20)
    assert fields["download_bytes"] == "1024"
    assert float(fields["seconds"]) > 0
    assert run("perf", perf_listener.addr, "--upload", "0",
               "--download", "0").stderr == ""  # no progress display when not a tty


def test_id(listener, perf_listener):
    result = run("id", listener.addr)
    assert result.returncode == 0, result.stderr
    match = re.fullmatch(r"OK id protocols=(\S+) agent=(.+)\n", result.stdout)
    assert match, result.stdout
    assert set(match.group(1).split(",")) == {
        "/echo/1.0.0", "/ipfs/id/1.0.0", "/ipfs/id/push/1.0.0", "/ipfs/ping/1.0.0"}
    assert match.group(2).startswith("libp2p_stream_sync/")
    assert "/perf/1.0.0" in run("id", perf_listener.addr).stdout


def test_peerid_key_file_is_created_private_and_stable(tmp_path):
    key = tmp_path / "k"
    first = run("peerid", "--key-file", str(key))
    assert re.fullmatch(r"OK peerid 12D3KooW\w+\n", first.stdout)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert run("peerid", "--key-file", str(key)).stdout == first.stdout
    assert first.stdout.split()[2] == str(Keypair.from_bytes(key.read_bytes()).peer_id)


def test_unreachable_address_fails():
    reason = fail_line(run("ping", "/ip4/127.0.0.1/tcp/1", "--timeout", "5"))
    assert "127.0.0.1:1" in reason


def test_wrong_peer_id_fails(listener):
    other = Keypair.generate().peer_id
    host = listener.addr.rsplit("/p2p/", 1)[0]
    reason = fail_line(run("echo", f"{host}/p2p/{other}"))
    assert str(other) in reason and listener.peer_id in reason


def test_unsupported_protocol_fails_naming_it(listener):
    reason = fail_line(run("perf", listener.addr, "--upload", "1", "--download", "1"))
    assert "/perf/1.0.0" in reason and "not supported" in reason


def test_no_common_muxer_fails(perf_listener):
    assert "muxer" in fail_line(run("ping", perf_listener.addr, "--muxer", "yamux"))


def test_usage_errors_exit_2():
    assert run("ping").returncode == 2


@pytest.mark.parametrize("argv", [
    ["perf", "/ip4/127.0.0.1/tcp/1", "--upload", "1X", "--download", "1"],
    ["perf", "/ip4/127.0.0.1/tcp/1", "--upload", "1"],
    ["echo", "/ip4/127.0.0.1/tcp/1", "--streams", "0"],
    ["ping", "/ip4/127.0.0.1/tcp/1", "--timeout", "-1"],
    ["listen", "--muxer", "quic"],
    ["bogus"],
    [],
])
def test_usage_errors_exit_2_in_process(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert capsys.readouterr().out == ""


@pytest.mark.skipif(shutil.which("libp2p-stream") is None,
                    reason="console script not installed (pip install -e .)")
def test_console_script(tmp_path):
    result = subprocess.run(["libp2p-stream", "peerid", "--key-file", str(tmp_path / "k")],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0
    assert result.stdout.startswith("OK peerid 12D3KooW")


def test_sigint_stops_the_listener_with_status_0():
    node = Listener()
    assert node.stop(signal.SIGINT) == 0


# -- in-process checks of the pieces ------------------------------------------------------
@pytest.mark.parametrize("text,value", [("0", 0), ("1024", 1024), ("64K", 65536),
                                        ("10m", 10 << 20), ("1G", 1 << 30),
                                        ("2MiB", 2 << 20), ("3KB", 3072)])
def test_parse_size(text, value):
    assert parse_size(text) == value


@pytest.mark.parametrize("text", ["", "-1", "1T", "1.5M", "M"])
def test_parse_size_rejects(text):
    with pytest.raises(Exception):
        parse_size(text)


def test_bad_key_file_fails(tmp_path, capsys):
    key = tmp_path / "bad"
    key.write_bytes(b"not a key")
    assert main(["peerid", "--key-file", str(key)]) == 1
    assert capsys.readouterr().out.startswith("FAIL cannot load key file")


def test_invalid_multiaddr_fails(capsys):
    assert main(["ping", "/not/a/multiaddr", "--timeout", "1"]) == 1
    assert capsys.readouterr().out.startswith("FAIL ")
