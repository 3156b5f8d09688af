"""Process handling and statistics for bench/run.py (stdlib only)."""

from __future__ import annotations

import os
import queue
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
ROLES = BENCH / "roles.py"
CLK_TCK = os.sysconf("SC_CLK_TCK")


class BenchError(RuntimeError):
    pass


def proc_cpu(pid: int) -> float:
    """utime + stime of a process (all threads), in seconds, from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        rest = f.read().rsplit(")", 1)[1].split()
    return (int(rest[11]) + int(rest[12])) / CLK_TCK


def proc_usage(pid: int) -> tuple[float, int, int]:
    """(CPU seconds, voluntary, involuntary context switches) of another process.

    CPU comes from /proc/<pid>/stat (all threads, finished ones included); the switches
    are summed over /proc/<pid>/task/*/status, so threads that ended are missing (the
    peers measured this way keep their threads).
    """
    cpu = proc_cpu(pid)
    vol = invol = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/status") as f:
                for line in f:
                    if line.startswith("voluntary_ctxt_switches:"):
                        vol += int(line.split()[1])
                    elif line.startswith("nonvoluntary_ctxt_switches:"):
                        invol += int(line.split()[1])
        except FileNotFoundError:  # the thread just ended
            pass
    return cpu, vol, invol


def proc_rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def fields(line: str) -> dict[str, str]:
    out = {}
    for word in line.split()[1:]:
        k, sep, v = word.partition("=")
        if sep:
            out[k] = v
    return out


class Proc:
    """A child process spoken to by lines on stdin/stdout; stderr goes to a temp file."""

    def __init__(self, argv: list[str], name: str, env: dict | None = None,
                 cwd: Path | None = None, answers_usage: bool = False) -> None:
        self.name = name
        #: True for roles that answer ``usage`` on stdin with their own getrusage.
        self.answers_usage = answers_usage
        self.argv = argv
        self._err = tempfile.TemporaryFile(mode="w+b")
        self.p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=self._err, text=True, bufsize=1,
                                  cwd=str(cwd or ROOT), env=env, start_new_session=True)
        self.pid = self.p.pid
        self.q: queue.Queue = queue.Queue()
        threading.Thread(target=self._reader, daemon=True).start()

    @classmethod
    def role(cls, role: str, *args: object, name: str | None = None) -> "Proc":
        env = dict(os.environ)
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        return cls([sys.executable, str(ROLES), role, *map(str, args)], name or role, env,
                   answers_usage=role == "node-server")

    def _reader(self) -> None:
        assert self.p.stdout is not None
        for line in self.p.stdout:
            self.q.put(line.rstrip("\n"))
        self.q.put(None)

    def stderr_tail(self, n: int = 2000) -> str:
        try:
            self._err.seek(0)
            return self._err.read().decode(errors="replace")[-n:]
        except (OSError, ValueError):
            return ""

    def expect(self, prefix: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BenchError(f"{self.name}: no {prefix!r} line within {timeout:g}s"
                                 f"\n{self.stderr_tail()}")
            try:
                line = self.q.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                raise BenchError(f"{self.name}: exited ({self.p.poll()}) before {prefix!r}"
                                 f"\n{self.stderr_tail()}")
            if line.startswith(prefix):
                return line

    def send(self, line: str) -> None:
        assert self.p.stdin is not None
        self.p.stdin.write(line + "\n")
        self.p.stdin.flush()

    def cpu(self) -> float:
        return proc_cpu(self.pid)

    def usage(self) -> tuple[float, int, int]:
        """(CPU seconds, voluntary, involuntary context switches) so far."""
        if self.answers_usage:
            self.send("usage")
            f = fields(self.expect("USAGE", 10))
            return float(f["cpu"]), int(f["nvcsw"]), int(f["nivcsw"])
        return proc_usage(self.pid)

    def rss(self) -> int:
        return proc_rss(self.pid)

    def close(self, wait: float = 5.0) -> None:
        if self.p.poll() is None:
            try:
                self.p.stdin.close()  # type: ignore[union-attr]
            except OSError:
                pass
            try:
                self.p.wait(wait)
            except subprocess.TimeoutExpired:
                self.p.terminate()
                try:
                    self.p.wait(3)
                except subprocess.TimeoutExpired:
                    self.p.kill()
                    self.p.wait(3)
        try:
            self._err.close()
        except OSError:
            pass

    def __repr__(self) -> str:
        return f"<Proc {self.name} pid={self.pid} {shlex.join(self.argv[-4:])}>"


class Client:
    """A READY/go/RUN client of bench/roles.py (or of a foreign peer's bench command);
    measures the server's CPU and context switches around each run."""

    def __init__(self, proc: Proc, server: "Proc | int | None" = None,
                 ready_timeout: float = 60.0) -> None:
        """``server``: our role (a Proc), or the pid of a foreign server process."""
        self.proc = proc
        self.server = server
        self.ready_timeout = ready_timeout
        self._ready = False

    def wait_ready(self) -> None:
        """Wait for the client's READY (dialed, warmed up) before timing anything else."""
        if not self._ready:
            self.proc.expect("READY", self.ready_timeout)
            self._ready = True

    def run(self, timeout: float) -> dict[str, float]:
        """One measured run: the client's ``RUN`` fields plus ``server_cpu``,
        ``server_nvcsw`` and ``server_nivcsw`` (0 without a server)."""
        self.wait_ready()
        s0 = self.server_usage()
        self.proc.send("go")
        line = self.proc.expect("RUN", timeout)
        s1 = self.server_usage()
        self._ready = False
        result = {k: float(v) for k, v in fields(line).items()}
        result["server_cpu"] = s1[0] - s0[0]
        result["server_nvcsw"] = float(s1[1] - s0[1])
        result["server_nivcsw"] = float(s1[2] - s0[2])
        return result

    def server_usage(self) -> tuple[float, int, int]:
        """The server's (CPU seconds, voluntary, involuntary switches); zeros if none."""
        if isinstance(self.server, Proc):
            return self.server.usage()
        if self.server:
            return proc_usage(self.server)
        return 0.0, 0, 0

    def close(self) -> None:
        try:
            if self.proc.p.poll() is None:
                self.proc.send("quit")
        except (OSError, ValueError):
            pass
        self.proc.close()


def median(values: list[float]) -> float:
    vals = [v for v in values if v == v]
    return statistics.median(vals) if vals else float("nan")


def spread(values: list[float]) -> str:
    vals = [v for v in values if v == v]
    if len(vals) < 2:
        return ""
    return f"{min(vals):,.0f}–{max(vals):,.0f}"
