"""bench/run.py's per-operation cost figures (issue #17): CPU and context switches per
operation of each process, and the js / py peers' bench commands it drives."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests" / "interop"))

from _harness import Client, Proc, proc_usage  # noqa: E402

SWITCHES = r"(\d+\.\d+) vol \+ (\d+\.\d+) invol"


def _rows(text: str) -> dict[str, list[str]]:
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 7 and cells[0] == "17":
            rows[cells[1]] = cells
    return rows


def _micros(cell: str) -> float:
    m = re.match(r"([\d,]+(?:\.\d+)?) µs", cell)
    assert m, cell
    return float(m.group(1).replace(",", ""))


def test_quick_run_reports_cost_per_operation_per_side(tmp_path: Path) -> None:
    out = tmp_path / "results.md"
    cp = subprocess.run([sys.executable, str(ROOT / "bench" / "run.py"), "--quick", "--runs",
                         "1", "--only", "rtt,handshakes", "--output", str(out)],
                        capture_output=True, text=True, timeout=50, cwd=ROOT)
    assert cp.returncode == 0, cp.stderr[-3000:]
    rows = _rows(out.read_text())
    rtt = "16-byte round trip on an open echo stream, yamux"
    for side in ("client", "server"):
        cells = rows[f"{rtt}: CPU per round trip, {side} process"]
        assert 0 < _micros(cells[2]) < 100_000
        vol, invol = map(float, re.search(SWITCHES, cells[3]).groups())
        assert vol > 0.5, cells  # every round trip blocks at least once on each side
        assert invol >= 0
    both = rows[f"{rtt}: CPU per round trip, client + server process"]
    assert both[5] == "≤ 250 µs (both)"
    assert both[6] == "met" or both[6].startswith("**missed**")
    assert rows[f"{rtt}: median"][5] == "≤ 150 µs"
    hs = "handshake (TCP + Noise XX + yamux), accepted by one node"
    server = rows[f"{hs}: CPU per connection, server process"]
    assert server[5] == "≤ 600 µs" and 0 < _micros(server[2])
    assert re.search(SWITCHES, server[3])
    assert rows[f"{hs}: connections per second"][5] == "≥ 1,000 /s"
    tls = "handshake (TCP + TLS 1.3 + yamux), accepted by one node"
    assert _micros(rows[f"{tls}: CPU per connection, server process"][2]) > 0


def test_proc_usage_counts_switches_of_all_threads() -> None:
    import threading
    import time

    before = proc_usage(_pid())
    threads = [threading.Thread(target=time.sleep, args=(0.01,)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    cpu, vol, invol = proc_usage(_pid())
    assert cpu >= before[0] and invol >= before[2]
    assert vol > before[1]  # the main thread blocked in join()


def _pid() -> int:
    import os
    return os.getpid()


@pytest.mark.parametrize("kind", ["js", "py"])
def test_peer_bench_commands_report_runs_and_usage(kind: str) -> None:
    import peers
    from run import foreign_env

    peers.ensure_js_peer() if kind == "js" else peers.ensure_py_peer()
    server = Proc.role("node-server", "--muxer", "yamux")
    clients = []
    try:
        addr = server.expect("LISTEN", 30).split()[1]
        for cmd in (["rtt", addr, "--count", "50"],
                    ["opens", addr, "--concurrency", "2", "--seconds", "0.3"]):
            proc = Proc(peers.peer_argv(kind) + cmd + ["--muxer", "yamux"], f"{kind}-{cmd[0]}",
                        env=foreign_env(kind))
            clients.append(Client(proc, server, ready_timeout=40))
        rtt, opens = (c.run(30) for c in clients)
        assert rtt["count"] == 50 and rtt["median_us"] > 0 and rtt["cpu"] > 0
        assert rtt["nvcsw"] + rtt["nivcsw"] > 0 and rtt["server_cpu"] > 0
        assert rtt["server_nvcsw"] >= 50  # our server blocks once per echo at least
        assert opens["opens"] > 0 and opens["errors"] == 0 and opens["seconds"] >= 0.3
        assert opens["server_cpu"] > 0 and opens["median_us"] > 0
    finally:
        for c in clients:
            c.close()
        server.close()
