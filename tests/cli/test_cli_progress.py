"""``echo`` and ``perf`` report progress on stderr and put MB/s in their OK line."""

from __future__ import annotations

import io
import os
import pty
import re
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENV = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
CMD = [sys.executable, "-m", "libp2p_stream_sync"]
REPORT = r"(perf|echo): ([\d.]+) of ([\d.]+) MB, ([\d.]+) MB/s, ([\d.]+) s"


@pytest.fixture(scope="module")
def address():
    proc = subprocess.Popen(CMD + ["listen", "--perf"], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, env=ENV)
    try:
        line = proc.stdout.readline()
        assert line.startswith("LISTEN /ip4/127.0.0.1/tcp/"), line
        yield line.split()[1]
    finally:
        proc.terminate()
        assert proc.wait(10) == 0
        proc.stdout.close()


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(CMD + list(args), capture_output=True, text=True, env=ENV,
                          timeout=30)


def ok_fields(stdout: str, command: str) -> dict[str, str]:
    assert stdout.startswith(f"OK {command} ") and stdout.count("\n") == 1, stdout
    return dict(item.split("=", 1) for item in stdout.split()[2:])


def test_perf_with_progress_reports_bytes_and_rate_and_ok_has_mbps(address):
    result = run("perf", address, "--upload", "8M", "--download", "4M", "--progress")
    assert result.returncode == 0, result.stderr
    fields = ok_fields(result.stdout, "perf")
    seconds, mbps = float(fields["seconds"]), float(fields["mbps"])
    assert mbps > 0
    assert mbps == pytest.approx(12 * 2**20 / seconds / 1e6, rel=0.02, abs=0.01)
    reports = result.stderr.splitlines()
    assert reports, "no progress report on stderr"
    last = re.fullmatch(REPORT, reports[-1])
    assert last, reports[-1]
    assert last.group(1) == "perf"
    assert last.group(2) == last.group(3) == f"{12 * 2**20 / 1e6:.1f}"  # all of it, in MB
    assert float(last.group(4)) > 0


def test_echo_with_progress_counts_echoed_bytes_of_every_stream(address):
    result = run("echo", address, "--bytes", "1M", "--streams", "3", "--progress")
    assert result.returncode == 0, result.stderr
    fields = ok_fields(result.stdout, "echo")
    assert float(fields["mbps"]) == pytest.approx(
        3 * 2**20 / float(fields["seconds"]) / 1e6, rel=0.02, abs=0.01)
    last = re.fullmatch(REPORT, result.stderr.splitlines()[-1])
    assert last and last.group(1) == "echo"
    assert last.group(2) == last.group(3) == f"{3 * 2**20 / 1e6:.1f}"


def run_on_a_terminal(*args: str) -> tuple[int, str]:
    """Run the CLI with stderr on a pseudo-terminal; return (exit status, stderr text)."""
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen(CMD + list(args), stdout=subprocess.DEVNULL, stderr=slave,
                                env=ENV)
        os.close(slave)
        chunks = []
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: every writer closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
        return proc.wait(30), b"".join(chunks).decode()
    finally:
        os.close(master)


def test_on_a_terminal_progress_redraws_one_line(address):
    status, text = run_on_a_terminal("perf", address, "--upload", "2M", "--download", "2M")
    assert status == 0
    assert text.startswith("\r\x1b[Kperf: "), repr(text)
    assert text.endswith("\r\n")  # the terminal turns the final "\n" into "\r\n"
    assert re.fullmatch(REPORT, text.rsplit("\r\x1b[K", 1)[1].rstrip("\r\n"))


def test_no_progress_silences_a_terminal(address):
    status, text = run_on_a_terminal("perf", address, "--upload", "1M", "--download", "1M",
                                     "--no-progress")
    assert status == 0 and text == ""


def test_reports_come_once_per_interval_while_bytes_move():
    from libp2p_stream_sync.cli import PROGRESS_INTERVAL, ProgressReport

    assert PROGRESS_INTERVAL == 1.0
    out = io.StringIO()
    report = ProgressReport("perf", 10_000_000, out, interval=0.05)
    for _ in range(10):
        report.add(1_000_000)
        time.sleep(0.05)
    report.close()
    lines = out.getvalue().splitlines()
    assert len(lines) >= 4, lines  # about 10 on an idle machine, plus the final one
    moved = [float(re.fullmatch(REPORT, line).group(2)) for line in lines]
    assert moved == sorted(moved) and moved[-1] == 10.0
