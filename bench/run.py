#!/usr/bin/env python3
"""libp2p_stream_sync benchmark suite (issues #6, #17): one command, one Markdown table.

    python3 bench/run.py                 # everything, a few minutes
    python3 bench/run.py --quick         # smoke version, about a minute
    python3 bench/run.py --only throughput,rtt --runs 3
    python3 bench/run.py --list

Every figure comes from two (or more) processes over loopback TCP, measured side by
side in this one run: the rounds of related benchmarks are interleaved (round 1 of
each, then round 2 of each, ...), every figure is the median of its rounds, and the
ratios divide figures of the same run. The table goes to stdout and bench/RESULTS.md.

Benchmarks (names for --only / --skip):
  throughput  perf 256 MiB up + 256 MiB down, ours<->ours, yamux and mplex, beside the
              ceilings: raw TCP (blocking sendall/recv_into 256 KiB) and a bare
              ChaCha20-Poly1305 encrypt -> send -> receive -> decrypt pipeline of
              65519-byte frames (encrypt_into/decrypt_into, reused buffers, batched
              sends); CPU seconds per GB of both processes
  interop     perf against js-libp2p 2.x and py-libp2p 0.8.1 (ours as client and as
              server), and js<->js, py<->py, ours<->ours at the same size
  opens       streams opened per second on one connection (open + negotiate +
              1-byte echo + close), 1 and 8 threads
  rtt         16-byte round trip on an open echo stream vs raw TCP (two processes)
  handshakes  TCP + Noise + muxer handshakes per second accepted by one node
  interop_ops stream opens (1 and 8 concurrent openers) and 16-byte round trips with
              js-libp2p and py-libp2p clients and servers (js<->js, py<->py, ours->js,
              js->ours, ...) beside ours<->ours, TCP + Noise + yamux, with the CPU per
              operation of both processes
  scale       1,000 idle connections and 10,000 idle streams: RSS per connection /
              stream in the server process, time to establish them
  quic        QUIC (/quic-v1) beside TCP + Noise + yamux in the same run: perf
              throughput (1200- and 1452-byte datagrams), js-libp2p's and py-libp2p's
              QUIC perf (theirs and against ours), stream opens per second, 16-byte
              round trip, handshakes per second (lean engine dialers); CPU per op
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import (BENCH, ROOT, BenchError, Client, Proc, fields, median,  # noqa: E402
                      spread)

MiB = 1 << 20
ALL = ("throughput", "interop", "opens", "rtt", "handshakes", "interop_ops", "scale",
       "quic")


# -- result rows --------------------------------------------------------------------------
@dataclass
class Row:
    num: str
    name: str
    value: float
    unit: str
    fmt: str = ",.0f"
    runs: list[float] = field(default_factory=list)
    ref: str = ""            # same-run reference (ceiling / baseline) text
    ratio: str = ""          # ratio text
    target: str = ""         # e.g. ">= 500 MB/s"
    met: bool | None = None
    shortfall: str = ""

    def status(self) -> str:
        if self.met is None:
            return ""
        return "met" if self.met else f"**missed** ({self.shortfall})"

    def measured(self) -> str:
        if self.value != self.value:
            return "n/a"
        text = f"{self.value:{self.fmt}} {self.unit}"
        s = spread(self.runs) if self.fmt == ",.0f" else ""
        if s and len(self.runs) > 1:
            text += f" ({s})"
        return text


def check_min(row: Row, target: float, what: str = "") -> Row:
    """Target: value >= target."""
    row.target = row.target or f"≥ {target:,.0f} {what or row.unit}"
    if row.value == row.value:
        row.met = row.value >= target
        if not row.met:
            row.shortfall = f"{row.value / target:.0%} of target, −{target - row.value:,.0f}"
    return row


def check_max(row: Row, value: float, target: float, text: str, unit: str = "") -> Row:
    """Target: value <= target (value may be a ratio)."""
    row.target = text
    if value == value:
        row.met = value <= target
        if not row.met:
            row.shortfall = f"{value / target:.1f}× the limit{unit}"
    return row


def per_op(runs: list[dict], key: str, count: str | float, scale: float = 1.0) -> list[float]:
    """``run[key] / run[count] * scale`` for every run (count: a field name or a number)."""
    out = []
    for x in runs:
        n = x[count] if isinstance(count, str) else count
        out.append(x[key] / n * scale if n else float("nan"))
    return out


def switches(runs: list[dict], count: str | float, prefix: str = "") -> str:
    """Context switches per operation of one process: ``V vol + I invol``."""
    vol = median(per_op(runs, prefix + "nvcsw", count))
    invol = median(per_op(runs, prefix + "nivcsw", count))
    return f"{vol:.2f} vol + {invol:.2f} invol"


def cost_rows(what: str, op: str, runs: list[dict], count: str | float,
              target_us: float | None,
              sides: tuple[str, str] = ("client process", "server process"),
              apply_target: tuple[bool, bool] = (True, True)) -> list[Row]:
    """Issue #17 rows: CPU µs per ``op`` of each side, with its context switches."""
    rows = []
    for side, prefix, apply in ((sides[0], "", apply_target[0]),
                                (sides[1], "server_", apply_target[1])):
        cpu = per_op(runs, prefix + "cpu", count, 1e6)
        row = Row("17", f"{what}: CPU per {op}, {side}", median(cpu), "µs",
                  runs=cpu, ref=f"context switches per {op}: "
                                f"{switches(runs, count, prefix)}")
        if target_us is not None and apply:
            check_max(row, row.value, target_us, f"≤ {target_us:,.0f} µs")
        rows.append(row)
    return rows


#: The stacks measured beside TCP + Noise (transport+security, over yamux).
STACKS = ("tcp+tls", "ws+noise", "ws+tls")


def op_figure(op: str, r: dict) -> float:
    """interop_ops figure of one run: opens per second, or the round-trip median (µs)."""
    return r["median_us"] if op == "rtt" else r["opens"] / r["seconds"]


def foreign_env(kind: str) -> dict[str, str]:
    """Environment for a js / py peer process (as tests/interop/peers.py runs them)."""
    env = dict(os.environ)
    if kind == "py":  # keep the project's environment out of the py-libp2p venv
        for var in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONUSERBASE"):
            env.pop(var, None)
        env["PYTHONUNBUFFERED"] = "1"
        env["PYTHONNOUSERSITE"] = "1"
    else:
        env.pop("NODE_OPTIONS", None)
    return env


def mbps(r: dict) -> float:
    return r["bytes"] / r["seconds"] / 1e6


def ratio(a: float, b: float) -> float:
    return a / b if b and b == b and a == a else float("nan")


# -- runner -------------------------------------------------------------------------------
class Suite:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.quick = args.quick
        self.runs = args.runs or (2 if self.quick else 5)
        self.rows: list[Row] = []
        self.notes: list[str] = []
        self.procs: list[Proc] = []

    def log(self, text: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)

    def server(self, role: str, *args: object, expect: str = "LISTEN") -> tuple[Proc, str]:
        proc = Proc.role(role, *args)
        self.procs.append(proc)
        line = proc.expect(expect, 30)
        return proc, line.split()[1]

    def client(self, role: str, *args: object, server: Proc | None = None) -> Client:
        proc = Proc.role(role, *args)
        self.procs.append(proc)
        return Client(proc, server)

    def cleanup(self) -> None:
        for proc in reversed(self.procs):
            try:
                proc.close(wait=3)
            except Exception:
                pass
        self.procs.clear()

    # -- 1, 3, 8: throughput, ceilings, CPU per GB -------------------------------------------
    def bench_throughput(self) -> None:
        size = (64 if self.quick else 256) * MiB
        muxers = ["yamux", "mplex"]
        tcp_srv, tcp_port = self.server("tcp-server", "--mode", "sink", expect="PORT")
        aead_srv, aead_port = self.server("aead-server", expect="PORT")
        cases: dict[str, Client] = {
            "tcp": self.client("tcp-send", "--port", tcp_port, "--bytes", 2 * size,
                               server=tcp_srv),
            "aead": self.client("aead-send", "--port", aead_port, "--bytes", 2 * size,
                                server=aead_srv),
        }
        for m in muxers:
            srv, ma = self.server("node-server", "--muxer", m)
            cases[m] = self.client("node-perf", "--addr", ma, "--muxer", m,
                                   "--upload", size, "--download", size, server=srv)
        stack_size = size // 4  # WebSocket moves 3-4x slower: keep the run short
        for stack in STACKS:
            transport, security = stack.split("+")
            srv, ma = self.server("node-server", "--muxer", "yamux", "--transport",
                                  transport, "--security", security)
            cases[stack] = self.client("node-perf", "--addr", ma, "--muxer", "yamux",
                                       "--security", security, "--upload", stack_size,
                                       "--download", stack_size, server=srv)
        results: dict[str, list[dict]] = {k: [] for k in cases}
        for r in range(self.runs):
            for name, client in cases.items():
                results[name].append(client.run(timeout=180))
            self.log(f"throughput round {r + 1}/{self.runs}: " + ", ".join(
                f"{k} {mbps(v[-1]):,.0f} MB/s" for k, v in results.items()))
        for c in cases.values():
            c.close()
        rate = {k: median([mbps(x) for x in v]) for k, v in results.items()}
        cpu_gb = {k: median([(x["cpu"] + x["server_cpu"]) / (x["bytes"] / 1e9) for x in v])
                  for k, v in results.items()}
        self.throughput = rate
        mib = size // MiB
        for m in muxers:
            row = Row("1", f"perf ours⇄ours, {m}, {mib} MiB up + {mib} MiB down, 2 processes",
                      rate[m], "MB/s", runs=[mbps(x) for x in results[m]],
                      ref=f"raw TCP {rate['tcp']:,.0f}; AEAD pipeline {rate['aead']:,.0f}",
                      ratio=f"{ratio(rate[m], rate['tcp']):.0%} of TCP, "
                            f"{ratio(rate[m], rate['aead']):.0%} of AEAD")
            self.rows.append(check_min(row, 500))
        smib = stack_size // MiB
        for stack in STACKS:
            self.rows.append(Row(
                "1", f"perf ours⇄ours, {stack} + yamux, {smib} MiB up + {smib} MiB down, "
                     f"2 processes", rate[stack], "MB/s",
                runs=[mbps(x) for x in results[stack]],
                ref=f"tcp+noise + yamux {rate['yamux']:,.0f}",
                ratio=f"{ratio(rate[stack], rate['yamux']):.0%} of tcp+noise"))
        self.rows.append(Row("3", "ceiling: raw Python TCP loopback, sendall/recv_into 256 KiB",
                             rate["tcp"], "MB/s", runs=[mbps(x) for x in results["tcp"]],
                             ref="PERF-FACTS: ≈ 3,200–3,900"))
        self.rows.append(Row("3", "ceiling: ChaCha20-Poly1305 65519-byte frames, encrypt → "
                                  "send → recv → decrypt, 2 processes",
                             rate["aead"], "MB/s", runs=[mbps(x) for x in results["aead"]],
                             ref="PERF-FACTS: ≈ 1,600"))
        for m in muxers:
            self.rows.append(Row(
                "8", f"CPU per GB moved, perf ours⇄ours {m} (client + server process)",
                cpu_gb[m], "CPU s/GB", fmt=",.2f",
                ref=f"raw TCP {cpu_gb['tcp']:.2f}; AEAD pipeline {cpu_gb['aead']:.2f}",
                ratio=f"{ratio(cpu_gb[m], cpu_gb['aead']):.1f}× AEAD pipeline"))
        self.cleanup()

    # -- 2: interop ----------------------------------------------------------------------------
    def bench_interop(self) -> None:
        sys.path.insert(0, str(ROOT / "tests" / "interop"))
        import peers  # type: ignore

        size = (16 if self.quick else 64) * MiB
        runs = 1 if self.quick else self.runs
        muxers = self.args.interop_muxers.split(",")
        kinds = []
        for kind, ensure in (("js", peers.ensure_js_peer), ("py", peers.ensure_py_peer)):
            try:
                ensure()
                kinds.append(kind)
            except Exception as exc:  # noqa: BLE001
                self.notes.append(f"interop: {kind} peer unavailable: {exc}")
        for m in muxers:
            listeners: dict[str, object] = {}
            our_srv, our_ma = self.server("node-server", "--muxer", m)
            ours = self.client("node-perf", "--addr", our_ma, "--muxer", m,
                               "--upload", size, "--download", size, server=our_srv)
            ours_to: dict[str, Client] = {}
            for kind in kinds:
                lp = peers.PeerProcess(kind, m)
                lp.start()
                listeners[kind] = lp
                ours_to[kind] = self.client("node-perf", "--addr", lp.multiaddr, "--muxer", m,
                                            "--upload", size, "--download", size)

            def foreign(kind: str, ma: str) -> float:
                cp = peers.run_peer_command(kind, ["perf", ma, "--muxer", m, "--upload",
                                                   str(size), "--download", str(size)],
                                            timeout=180)
                res = peers.parse_result(cp.stdout)
                if not res.ok:
                    raise BenchError(f"{kind} perf to {ma}: {res.line} "
                                     f"{cp.stderr[-500:]}")
                f = res.fields
                return (int(f["upload_bytes"]) + int(f["download_bytes"])) / \
                    float(f["seconds"]) / 1e6

            pairs: dict[str, list[float]] = {"ours⇄ours": []}
            for kind in kinds:
                for key in (f"ours→{kind}", f"{kind}→ours", f"{kind}⇄{kind}"):
                    pairs[key] = []
            for r in range(runs):
                pairs["ours⇄ours"].append(mbps(ours.run(180)))
                for kind in kinds:
                    for key, fn in ((f"ours→{kind}", lambda: mbps(ours_to[kind].run(180))),
                                    (f"{kind}→ours", lambda: foreign(kind, our_ma)),
                                    (f"{kind}⇄{kind}",
                                     lambda: foreign(kind, listeners[kind].multiaddr))):
                        try:
                            pairs[key].append(fn())
                        except Exception as exc:  # noqa: BLE001
                            pairs[key].append(float("nan"))
                            self.notes.append(f"interop {m} {key}: {str(exc)[:300]}")
                self.log(f"interop {m} round {r + 1}/{runs}: " + ", ".join(
                    f"{k} {v[-1]:,.0f}" for k, v in pairs.items()))
            ours.close()
            for c in ours_to.values():
                c.close()
            for lp in listeners.values():
                lp.stop()
            self.cleanup()
            med = {k: median(v) for k, v in pairs.items()}
            mib = size // MiB
            for kind in kinds:
                base = med[f"{kind}⇄{kind}"]
                need = 2.0 if kind == "js" else 2.5
                self.rows.append(Row(
                    "2", f"perf {kind}⇄{kind} ({kind} client and server), {m}, "
                         f"{mib}+{mib} MiB", base, "MB/s", runs=pairs[f"{kind}⇄{kind}"],
                    ref="their own baseline"))
                for key in (f"ours→{kind}", f"{kind}→ours"):
                    self.rows.append(Row(
                        "2", f"perf {key.replace('→', ' client → ')} server, {m}",
                        med[key], "MB/s", runs=pairs[key],
                        ref=f"{kind}⇄{kind} {base:,.0f}",
                        ratio=f"{ratio(med[key], base):.2f}×"))
                rr = ratio(med["ours⇄ours"], base)
                row = Row("2", f"perf ours⇄ours vs {kind}⇄{kind}, {m}, {mib}+{mib} MiB",
                          med["ours⇄ours"], "MB/s", runs=pairs["ours⇄ours"],
                          ref=f"{kind}⇄{kind} {base:,.0f}", ratio=f"{rr:.2f}×",
                          target=f"≥ {need:g}× {kind}")
                if rr == rr:
                    row.met = rr >= need
                    row.shortfall = f"{rr:.2f}× < {need:g}×, need {need * base:,.0f} MB/s"
                self.rows.append(row)
        self.notes.append(
            "interop MB/s = (upload + download bytes) / the `seconds` each perf client "
            "reports: ours and js time from opening the perf stream to the end (after the "
            "dial, no process start); py-libp2p's `PerfService.measure_performance` times "
            "its own stream open as well. None includes process start.")

    # -- 17: stream opens and round trips against js-libp2p and py-libp2p ----------------------
    def bench_interop_ops(self) -> None:
        sys.path.insert(0, str(ROOT / "tests" / "interop"))
        import peers  # type: ignore

        seconds = 1.0 if self.quick else 2.0
        count = 500 if self.quick else 2000
        runs = 1 if self.quick else min(self.runs, 3)
        ops = {"open1": ("--threads", 1), "open8": ("--threads", 8), "rtt": ()}
        srv, ma = self.server("node-server", "--muxer", "yamux", "--echo-mode", "serve_echo",
                              "--echo-threads", 64)

        def ours(op: str, addr: str, server: "Proc | int") -> Client:
            if op == "rtt":
                return self.client("node-rtt", "--addr", addr, "--count", count, server=server)
            return self.client("node-opens", "--addr", addr, *ops[op], "--seconds", seconds,
                               server=server)

        def theirs(kind: str, op: str, addr: str, server: "Proc | int") -> Client:
            if op == "rtt":
                extra = ["rtt", addr, "--count", str(count)]
            else:
                extra = ["opens", addr, "--concurrency", op[4:], "--seconds", str(seconds)]
            proc = Proc(peers.peer_argv(kind) + extra + ["--muxer", "yamux"],
                        f"{kind}-{op}", env=foreign_env(kind))
            self.procs.append(proc)
            return Client(proc, server, ready_timeout=90)

        base = {op: ours(op, ma, srv) for op in ops}
        for kind in ("js", "py"):
            try:
                lp = peers.PeerProcess(kind, "yamux").start()
            except Exception as exc:  # noqa: BLE001
                self.notes.append(f"interop_ops: {kind} peer unavailable: {exc}")
                continue
            try:
                pairs = {"ours⇄ours": base,
                         f"{kind}⇄{kind}": {op: theirs(kind, op, lp.multiaddr, lp.proc.pid)
                                            for op in ops},
                         f"ours→{kind}": {op: ours(op, lp.multiaddr, lp.proc.pid)
                                          for op in ops},
                         f"{kind}→ours": {op: theirs(kind, op, ma, srv) for op in ops}}
                for clients in pairs.values():  # no warm-up may overlap a measured run
                    for c in clients.values():
                        c.wait_ready()
                res: dict[tuple[str, str], list[dict]] = {
                    (p, op): [] for p in pairs for op in ops}
                for r in range(runs):
                    for op in ops:
                        for pair, clients in pairs.items():
                            res[(pair, op)].append(clients[op].run(seconds + count / 100 + 60))
                    self.log(f"interop_ops {kind} round {r + 1}/{runs}: " + ", ".join(
                        f"{p} {op} {op_figure(op, v[-1]):,.0f}" for (p, op), v in res.items()))
                for pair, clients in pairs.items():
                    if pair != "ours⇄ours":
                        for c in clients.values():
                            c.close()
            finally:
                lp.stop()
            self._interop_ops_rows(kind, res, seconds, count)
        for c in base.values():
            c.close()
        self.cleanup()

    def _interop_ops_rows(self, kind: str, res: dict, seconds: float, count: int) -> None:
        """Rows for one foreign kind: each op, each pair, ratio to kind⇄kind."""
        names = {"open1": "stream opens (open + negotiate + 1-byte echo + close), "
                          "1 opener, TCP + Noise + yamux",
                 "open8": "stream opens (open + negotiate + 1-byte echo + close), "
                          "8 concurrent openers, TCP + Noise + yamux",
                 "rtt": f"16-byte round trip on an open echo stream, median of {count}, "
                        "TCP + Noise + yamux"}
        for op, name in names.items():
            theirs = res[(f"{kind}⇄{kind}", op)]
            base = median([op_figure(op, x) for x in theirs])
            for pair in ("ours⇄ours", f"{kind}⇄{kind}", f"ours→{kind}", f"{kind}→ours"):
                runs = res[(pair, op)]
                n = "opens" if op != "rtt" else float(count)
                cli = median(per_op(runs, "cpu", n, 1e6))
                srv = median(per_op(runs, "server_cpu", n, 1e6))
                value = median([op_figure(op, x) for x in runs])
                errs = sum(x.get("errors", 0) for x in runs)
                row = Row("17", f"{name}: {pair} (client→server)", value,
                          "µs" if op == "rtt" else "/s",
                          fmt=",.1f" if op == "rtt" else ",.0f",
                          runs=[op_figure(op, x) for x in runs],
                          ref=f"CPU per {'round trip' if op == 'rtt' else 'open'}: client "
                              f"{cli:,.0f} µs, server {srv:,.0f} µs; switches client "
                              f"{switches(runs, n)}, server {switches(runs, n, 'server_')}"
                              + (f"; {errs:.0f} errors" if errs else ""))
                if pair != f"{kind}⇄{kind}":
                    q = ratio(value, base)
                    row.ratio = f"{q:.2f}× {kind}⇄{kind}"
                if pair == "ours⇄ours":
                    ahead = q < 1 if op == "rtt" else q > 1
                    row.target = f"ahead of {kind}⇄{kind}"
                    if q == q:
                        row.met = ahead
                        row.shortfall = f"{q:.2f}× {kind}⇄{kind}"
                self.rows.append(row)

    # -- 4: stream opens -------------------------------------------------------------------------
    def bench_opens(self) -> None:
        seconds = 1.0 if self.quick else 2.0
        modes = ("standard", "lazy")
        clients: dict[tuple[str, int], Client] = {}
        srv, ma = self.server("node-server", "--muxer", "yamux", "--echo-mode", "serve_echo",
                              "--echo-threads", 64)
        for mode in modes:
            for t in (1, 8):
                extra = ("--lazy",) if mode == "lazy" else ()
                clients[(mode, t)] = self.client("node-opens", "--addr", ma, "--threads", t,
                                                 "--seconds", seconds, *extra, server=srv)
        for c in clients.values():
            c.wait_ready()
        res: dict[tuple[str, int], list[dict]] = {k: [] for k in clients}
        for r in range(self.runs):
            for k, c in clients.items():
                res[k].append(c.run(seconds + 60))
            self.log(f"opens round {r + 1}: " + ", ".join(
                f"{m} {t} thr {v[-1]['opens'] / v[-1]['seconds']:,.0f}/s"
                for (m, t), v in res.items()))
        for c in clients.values():
            c.close()
        self.cleanup()
        for mode in modes:
            for t, target in ((1, 5000), (8, 10000)):
                runs = res[(mode, t)]
                rates = [x["opens"] / x["seconds"] for x in runs]
                cli = median([x["cpu"] / max(1, x["opens"]) * 1e6 for x in runs])
                srv_cpu = median([x["server_cpu"] / max(1, x["opens"]) * 1e6 for x in runs])
                errs = sum(x["errors"] for x in runs)
                if mode == "standard":
                    what = "open_stream waits for the protocol to be confirmed"
                else:
                    what = "open_stream(lazy=True): 0-RTT negotiation (diagnostic)"
                row = Row("4", f"stream opens on one connection (open + negotiate + 1-byte "
                               f"echo + close), {t} thread{'s' if t > 1 else ''}, yamux, "
                               f"serve_echo server; {what}", median(rates), "/s", runs=rates,
                          ref=f"CPU per open: client {cli:,.0f} µs, server {srv_cpu:,.0f} µs"
                              + (f"; {errs:.0f} errors" if errs else ""))
                if mode == "standard":
                    check_min(row, target, "/s")
                else:
                    base = median([x["opens"] / x["seconds"] for x in res[("standard", t)]])
                    row.ratio = f"{ratio(row.value, base):.2f}× standard"
                self.rows.append(row)
        for t, target in ((1, 3000), (8, 5000)):
            runs = res[("standard", t)]
            what = (f"stream open (open + negotiate + 1-byte echo + close), {t} opener "
                    f"thread{'s' if t > 1 else ''}, yamux")
            rates = [x["opens"] / x["seconds"] for x in runs]
            row = Row("17", f"{what}: opens per second", median(rates), "/s", runs=rates,
                      ref=f"median open latency {median([x['median_us'] for x in runs]):,.0f}"
                          f" µs")
            self.rows.append(check_min(row, target, "/s"))
            self.rows.extend(cost_rows(what, "open", runs, "opens", 200))

    # -- 5: round trip ---------------------------------------------------------------------------
    def bench_rtt(self) -> None:
        count = 500 if self.quick else 2000
        srv, ma = self.server("node-server", "--muxer", "yamux")
        tsrv, port = self.server("tcp-server", "--mode", "echo", expect="PORT")
        ours = self.client("node-rtt", "--addr", ma, "--count", count, server=srv)
        raw = self.client("tcp-rtt", "--port", port, "--count", count, server=tsrv)
        ours.wait_ready()
        raw.wait_ready()
        ro, rr = [], []
        for r in range(self.runs):
            ro.append(ours.run(120))
            rr.append(raw.run(120))
        ours.close()
        raw.close()
        self.cleanup()
        n = float(count)
        cpu_o = median([(x["cpu"] + x["server_cpu"]) / n * 1e6 for x in ro])
        cpu_r = median([(x["cpu"] + x["server_cpu"]) / n * 1e6 for x in rr])
        mo, po = median([x["median_us"] for x in ro]), median([x["p99_us"] for x in ro])
        mr, pr = median([x["median_us"] for x in rr]), median([x["p99_us"] for x in rr])
        q = ratio(mo, mr)
        row = Row("5", f"16-byte round trip on an open echo stream, yamux, median "
                       f"({count} per run)", mo, "µs", fmt=",.1f",
                  ref=f"raw TCP median {mr:,.1f} µs; CPU per round trip (both processes) "
                      f"{cpu_o:,.0f} µs vs raw TCP {cpu_r:,.0f} µs", ratio=f"{q:.1f}×")
        self.rows.append(check_max(row, q, 2.0, "median ≤ 2× raw TCP"))
        self.rows.append(Row("5", "16-byte round trip on an open echo stream, yamux, p99",
                             po, "µs", fmt=",.1f", ref=f"raw TCP p99 {pr:,.1f} µs",
                             ratio=f"{ratio(po, pr):.1f}×"))
        what = "16-byte round trip on an open echo stream, yamux"
        row = Row("17", f"{what}: median", mo, "µs", fmt=",.1f",
                  ref=f"raw TCP median {mr:,.1f} µs", ratio=f"{q:.1f}× raw TCP")
        self.rows.append(check_max(row, mo, 150, "≤ 150 µs"))
        both = [(x["cpu"] + x["server_cpu"]) / n * 1e6 for x in ro]
        row = Row("17", f"{what}: CPU per round trip, client + server process", median(both),
                  "µs", runs=both, ref=f"raw TCP {cpu_r:,.0f} µs (context switches per "
                                       f"round trip: client {switches(rr, n)}, server "
                                       f"{switches(rr, n, 'server_')})")
        self.rows.append(check_max(row, row.value, 250, "≤ 250 µs (both)"))
        self.rows.extend(cost_rows(what, "round trip", ro, n, None))

    # -- 6: handshakes ---------------------------------------------------------------------------
    def bench_handshakes(self) -> None:
        for security in ("noise", "tls"):
            self._bench_handshakes(security)

    def _bench_handshakes(self, security: str) -> None:
        seconds = 1.5 if self.quick else 3.0
        nproc = 2
        threads = 4
        srv, ma = self.server("node-server", "--muxer", "yamux", "--security", security)
        port = ma.split("/")[4]
        clients = [self.client("lean-dial", "--port", port, "--threads", threads,
                               "--seconds", seconds, "--security", security)
                   for _ in range(nproc)]
        for c in clients:
            c.wait_ready()
        rates, lat, srv_cpu, cli_cpu = [], [], [], []
        per_run: list[dict] = []  # issue #17 figures, in Client.run's keys
        for r in range(self.runs):
            srv.send("stats")
            s0 = fields(srv.expect("STATS", 10))
            t0 = time.perf_counter()
            for c in clients:
                c.proc.send("go")
            outs = [fields(c.proc.expect("RUN", seconds + 60)) for c in clients]
            elapsed = time.perf_counter() - t0
            for c in clients:
                c.proc.expect("READY", 30)
            srv.send("stats")
            s1 = fields(srv.expect("STATS", 10))
            accepted = int(s1["ready"]) - int(s0["ready"])
            dur = max(float(o["seconds"]) for o in outs)
            rates.append(accepted / dur)
            lat.append(median([float(o["median_ms"]) for o in outs]))
            srv_cpu.append((float(s1["cpu"]) - float(s0["cpu"])) / max(1, accepted) * 1e6)
            cli_cpu.append(sum(float(o["cpu"]) for o in outs) / max(1, accepted) * 1e6)
            per_run.append({"accepted": accepted, **{
                k: sum(float(o[k]) for o in outs) for k in ("cpu", "nvcsw", "nivcsw")}, **{
                f"server_{k}": float(s1[k]) - float(s0[k]) for k in ("cpu", "nvcsw", "nivcsw")
            }})
            self.log(f"{security} handshakes round {r + 1}: {rates[-1]:,.0f}/s accepted "
                     f"(elapsed {elapsed:.1f}s)")
        srv.send("stats")
        rss_after = int(fields(srv.expect("STATS", 10))["rss"])
        for c in clients:
            c.close()
        self.cleanup()
        name = "Noise XX" if security == "noise" else "TLS 1.3"
        row = Row("6", f"connections accepted per second by one node (TCP + {name} + "
                       f"yamux), {nproc}×{threads} lean dialing threads in {nproc} processes",
                  median(rates), "/s", runs=rates,
                  ref=f"server CPU {median(srv_cpu):,.0f} µs/conn, dialers "
                      f"{median(cli_cpu):,.0f} µs/conn; handshake median "
                      f"{median(lat):.1f} ms; server RSS after {rss_after / MiB:,.0f} MiB")
        self.rows.append(check_min(row, 800, "/s") if security == "noise" else row)
        what = f"handshake (TCP + {name} + yamux), accepted by one node"
        row = Row("17", f"{what}: connections per second", median(rates), "/s", runs=rates,
                  ref=f"handshake median {median(lat):.1f} ms (dialer side)")
        self.rows.append(check_min(row, 1000, "/s") if security == "noise" else row)
        self.rows.extend(cost_rows(what, "connection", per_run, "accepted", 600,
                                   sides=(f"{nproc} lean dialer processes together",
                                          "server process"),
                                   apply_target=(False, security == "noise")))

    # -- 9: QUIC beside TCP ---------------------------------------------------------------------
    def bench_quic(self) -> None:
        sys.path.insert(0, str(ROOT / "tests" / "interop"))
        import peers  # type: ignore

        tcp_size = (32 if self.quick else 64) * MiB
        quic_size = (4 if self.quick else 16) * MiB
        runs = 1 if self.quick else self.runs
        servers = {"tcp": self.server("node-server", "--muxer", "yamux"),
                   "quic": self.server("node-server", "--transport", "quic"),
                   "quic1452": self.server("node-server", "--transport", "quic",
                                           "--quic-datagram", 1452)}
        perf: dict[str, Client] = {}
        for name, (srv, ma) in servers.items():
            size = tcp_size if name == "tcp" else quic_size
            extra = ("--quic-datagram", 1452) if name == "quic1452" else ()
            perf[name] = self.client("node-perf", "--addr", ma, "--upload", size,
                                     "--download", size, *extra, server=srv)
        quic = peers.Stack("quic")
        foreign_listeners: dict[str, object] = {}
        for kind, ensure in (("js", peers.ensure_js_peer), ("py", peers.ensure_py_peer)):
            try:
                ensure()
                lp = peers.PeerProcess(kind, "yamux", stack=quic)
                lp.start()
                foreign_listeners[kind] = lp
                perf[f"ours→{kind}"] = self.client("node-perf", "--addr", lp.multiaddr,
                                                   "--upload", quic_size,
                                                   "--download", quic_size)
            except Exception as exc:  # noqa: BLE001
                self.notes.append(f"quic: {kind} peer unavailable: {exc}")
        our_quic_ma = servers["quic"][1]

        def foreign(kind: str, ma: str) -> float:
            cp = peers.run_peer_command(kind, ["perf", ma, "--muxer", "yamux", "--upload",
                                               str(quic_size), "--download", str(quic_size)],
                                        timeout=300, stack=quic)
            res = peers.parse_result(cp.stdout)
            if not res.ok:
                raise BenchError(f"{kind} QUIC perf to {ma}: {res.line} {cp.stderr[-300:]}")
            f = res.fields
            return (int(f["upload_bytes"]) + int(f["download_bytes"])) / \
                float(f["seconds"]) / 1e6

        rates: dict[str, list[float]] = {k: [] for k in perf}
        cpu_gb: dict[str, list[float]] = {k: [] for k in perf}
        for kind in foreign_listeners:
            rates[f"{kind}⇄{kind}"] = []
            rates[f"{kind}→ours"] = []
        for r in range(runs):
            for name, client in perf.items():
                x = client.run(300)
                rates[name].append(mbps(x))
                cpu_gb[name].append((x["cpu"] + x["server_cpu"]) / (x["bytes"] / 1e9))
            for kind, lp in foreign_listeners.items():
                for key, ma in ((f"{kind}⇄{kind}", lp.multiaddr), (f"{kind}→ours", our_quic_ma)):
                    try:
                        rates[key].append(foreign(kind, ma))
                    except Exception as exc:  # noqa: BLE001
                        rates[key].append(float("nan"))
                        self.notes.append(f"quic {key}: {str(exc)[:300]}")
            self.log(f"quic throughput round {r + 1}/{runs}: " + ", ".join(
                f"{k} {v[-1]:,.1f}" for k, v in rates.items()))
        for c in perf.values():
            c.close()
        for lp in foreign_listeners.values():
            lp.stop()
        med = {k: median(v) for k, v in rates.items()}
        cpu = {k: median(v) for k, v in cpu_gb.items()}
        tmib, qmib = tcp_size // MiB, quic_size // MiB
        self.rows.append(Row("9", f"perf ours⇄ours, TCP + Noise + yamux, {tmib}+{tmib} MiB "
                                  f"(the QUIC reference of this run)", med["tcp"], "MB/s",
                             runs=rates["tcp"], ref=f"CPU {cpu['tcp']:,.1f} s/GB"))
        for name, what in (("quic", "1200-byte datagrams (default)"),
                           ("quic1452", "1452-byte datagrams")):
            row = Row("9", f"perf ours⇄ours, QUIC, {what}, {qmib}+{qmib} MiB", med[name],
                      "MB/s", fmt=",.1f", runs=rates[name], ref=f"CPU {cpu[name]:,.1f} s/GB",
                      ratio=f"{ratio(med[name], med['tcp']):.0%} of TCP+Noise+yamux",
                      target="≥ 50% of TCP+Noise+yamux")
            q = ratio(med[name], med["tcp"])
            if q == q:
                row.met = q >= 0.5
                row.shortfall = f"{q:.0%} < 50%: per-datagram cost of aioquic (README)"
            self.rows.append(row)
        for kind in foreign_listeners:
            base = med[f"{kind}⇄{kind}"]
            self.rows.append(Row("9", f"perf {kind}⇄{kind} over QUIC, {qmib}+{qmib} MiB",
                                 base, "MB/s", fmt=",.1f", runs=rates[f"{kind}⇄{kind}"],
                                 ref="their own QUIC"))
            for key in (f"ours→{kind}", f"{kind}→ours"):
                self.rows.append(Row("9", f"perf {key.replace('→', ' client → ')} server, "
                                          f"QUIC", med[key], "MB/s", fmt=",.1f",
                                     runs=rates[key],
                                     ref=f"{kind}⇄{kind} {base:,.1f}",
                                     ratio=f"{ratio(med[key], base):.2f}×"))
            row = Row("9", f"perf ours⇄ours QUIC vs {kind}⇄{kind} QUIC", med["quic"], "MB/s",
                      fmt=",.1f",
                      ref=f"{kind}⇄{kind} {base:,.1f}",
                      ratio=f"{ratio(med['quic'], base):.2f}×", target=f"ahead of {kind}")
            q = ratio(med["quic"], base)
            if q == q:
                row.met = q > 1
                row.shortfall = f"{q:.2f}× of {kind}"
            self.rows.append(row)
        self._quic_small_ops(servers)
        self.cleanup()
        self._quic_handshakes()

    def _quic_small_ops(self, servers: dict) -> None:
        """Stream opens per second and the 16-byte round trip, QUIC beside TCP."""
        seconds = 1.0 if self.quick else 2.0
        count = 500 if self.quick else 2000
        opens: dict[str, Client] = {}
        rtts: dict[str, Client] = {}
        for name in ("tcp", "quic"):
            srv, ma = servers[name]
            opens[name] = self.client("node-opens", "--addr", ma, "--seconds", seconds,
                                      server=srv)
            rtts[name] = self.client("node-rtt", "--addr", ma, "--count", count, server=srv)
        ores: dict[str, list[dict]] = {k: [] for k in opens}
        rres: dict[str, list[dict]] = {k: [] for k in rtts}
        for r in range(self.runs):
            for name in opens:
                ores[name].append(opens[name].run(seconds + 60))
                rres[name].append(rtts[name].run(120))
            self.log(f"quic small ops round {r + 1}: " + ", ".join(
                f"{k} {v[-1]['opens'] / v[-1]['seconds']:,.0f} opens/s, "
                f"{rres[k][-1]['median_us']:,.0f} µs" for k, v in ores.items()))
        for c in list(opens.values()) + list(rtts.values()):
            c.close()
        rate = {k: median([x["opens"] / x["seconds"] for x in v]) for k, v in ores.items()}
        per = {k: median([(x["cpu"] + x["server_cpu"]) / max(1, x["opens"]) * 1e6 for x in v])
               for k, v in ores.items()}
        rtt = {k: median([x["median_us"] for x in v]) for k, v in rres.items()}
        rcpu = {k: median([(x["cpu"] + x["server_cpu"]) / count * 1e6 for x in v])
                for k, v in rres.items()}
        for name, label in (("tcp", "TCP + Noise + yamux"), ("quic", "QUIC")):
            ref = "" if name == "tcp" else f"; TCP {rate['tcp']:,.0f}/s"
            self.rows.append(Row("9", f"stream opens per second (open + negotiate + 1-byte "
                                      f"echo + close), 1 thread, {label}", rate[name], "/s",
                                 runs=[x["opens"] / x["seconds"] for x in ores[name]],
                                 ref=f"CPU per open (both processes) {per[name]:,.0f} µs"
                                     + ref))
        for name, label in (("tcp", "TCP + Noise + yamux"), ("quic", "QUIC")):
            ref = "" if name == "tcp" else f"; TCP {rtt['tcp']:,.1f} µs"
            self.rows.append(Row("9", f"16-byte round trip on an open echo stream, {label}, "
                                      f"median", rtt[name], "µs", fmt=",.1f",
                                 runs=[x["median_us"] for x in rres[name]],
                                 ref=f"CPU per round trip (both processes) "
                                     f"{rcpu[name]:,.0f} µs" + ref))

    def _quic_handshakes(self) -> None:
        seconds = 1.5 if self.quick else 3.0
        srv, ma = self.server("node-server", "--transport", "quic")
        port = ma.split("/")[4]
        clients = [self.client("quic-dial", "--port", port, "--threads", 4,
                               "--seconds", seconds) for _ in range(2)]
        rates, lat, srv_cpu = [], [], []
        for r in range(self.runs):
            srv.send("stats")
            s0 = fields(srv.expect("STATS", 10))
            for c in clients:
                c.proc.expect("READY", 60)
                c.proc.send("go")
            outs = [fields(c.proc.expect("RUN", seconds + 60)) for c in clients]
            time.sleep(0.2)  # the last Finished reach the server
            srv.send("stats")
            s1 = fields(srv.expect("STATS", 10))
            accepted = int(s1["ready"]) - int(s0["ready"])
            rates.append(accepted / max(float(o["seconds"]) for o in outs))
            lat.append(median([float(o["median_ms"]) for o in outs]))
            srv_cpu.append((float(s1["cpu"]) - float(s0["cpu"])) / max(1, accepted) * 1e6)
            self.log(f"quic handshakes round {r + 1}: {rates[-1]:,.0f}/s accepted")
        for c in clients:
            c.close()
        self.cleanup()
        self.rows.append(Row("9", "QUIC connections accepted per second by one node "
                                  "(TLS 1.3 + libp2p certificate), 2×4 lean engine dialers",
                             median(rates), "/s", runs=rates,
                             ref=f"server CPU {median(srv_cpu):,.0f} µs/conn; handshake "
                                 f"median {median(lat):.1f} ms"))

    # -- 7: scale --------------------------------------------------------------------------------
    def bench_scale(self) -> None:
        nconn = 200 if self.quick else 1000
        nstream = 2000 if self.quick else 10000
        holders = 4
        # connections
        srv, ma = self.server("node-server", "--muxer", "yamux")
        srv.send("gc"), srv.expect("GC", 10)
        srv.send("stats")
        s0 = fields(srv.expect("STATS", 10))
        t0 = time.perf_counter()
        hs = [Proc.role("hold-conns", "--addr", ma, "--count",
                        nconn // holders + (1 if i < nconn % holders else 0), "--threads", 8,
                        name=f"hold-conns-{i}") for i in range(holders)]
        self.procs.extend(hs)
        held = [fields(h.expect("HELD", 300)) for h in hs]
        wall = time.perf_counter() - t0
        conns = sum(int(h["conns"]) for h in held)
        dur = max(float(h["seconds"]) for h in held)
        time.sleep(2.0)  # let identify and window updates settle
        srv.send("gc"), srv.expect("GC", 10)
        srv.send("stats")
        s1 = fields(srv.expect("STATS", 10))
        per_conn = (int(s1["rss"]) - int(s0["rss"])) / max(1, int(s1["conns"]))
        fails = sum(int(h["failures"]) for h in held)
        self.cleanup()
        tm_conn, top = self._tracemalloc_conns(min(nconn, 200))
        row = Row("7", f"memory per idle connection, {s1['conns']} connections "
                       f"(server RSS delta / count)", per_conn / 1024, "KiB", fmt=",.1f",
                  ref=f"established in {dur:.1f} s ({conns / dur:,.0f}/s; {holders} client "
                      f"processes with one Node per connection; {wall:.1f} s incl. process "
                      f"start); server threads {s0['threads']} → {s1['threads']}"
                      + (f"; {fails} failed" if fails else ""))
        self.rows.append(check_max(row, per_conn / 1024, 64, "≤ 64 KiB"))
        self.rows.append(Row("7", "Python heap per idle connection (tracemalloc in the server, "
                                  "separate run of 200 connections)", tm_conn / 1024, "KiB",
                             fmt=",.1f", ref="largest allocation sites in the notes"))
        self.notes.append("tracemalloc, largest allocation sites in a server holding 200 "
                          "idle connections (bytes): " + top)
        # streams
        srv, ma = self.server("node-server", "--muxer", "yamux", "--max-streams", nstream + 1000)
        hold = Proc.role("hold-streams", "--addr", ma, "--conns", 4, "--streams", nstream)
        self.procs.append(hold)
        hold.expect("CONNECTED", 60)
        time.sleep(1.0)
        srv.send("gc"), srv.expect("GC", 10)
        srv.send("stats")
        s0 = fields(srv.expect("STATS", 10))
        hold.send("go")
        h = fields(hold.expect("HELD", 300))
        time.sleep(2.0)
        srv.send("gc"), srv.expect("GC", 10)
        srv.send("stats")
        s1 = fields(srv.expect("STATS", 10))
        n = int(s1["held"])
        per_stream = (int(s1["rss"]) - int(s0["rss"])) / max(1, n)
        self.cleanup()
        dur = float(h["seconds"])
        row = Row("7", f"memory per idle stream, {n:,} streams over 4 connections "
                       f"(server RSS delta / count)", per_stream / 1024, "KiB", fmt=",.2f",
                  ref=f"opened in {dur:.1f} s ({int(h['streams']) / dur:,.0f}/s, 4 threads)"
                      + (f"; {h['failures']} failed" if h["failures"] != "0" else ""))
        self.rows.append(check_max(row, per_stream / 1024, 8, "≤ 8 KiB"))

    def _tracemalloc_conns(self, n: int) -> tuple[float, str]:
        srv, ma = self.server("node-server", "--muxer", "yamux")
        srv.send("tracemalloc-start"), srv.expect("TM", 10)
        srv.send("gc"), srv.expect("GC", 10)
        srv.send("tracemalloc")
        m0 = int(fields(srv.expect("TM", 10))["current"])
        h = Proc.role("hold-conns", "--addr", ma, "--count", n, "--threads", 8)
        self.procs.append(h)
        h.expect("HELD", 300)
        time.sleep(1.5)
        srv.send("gc"), srv.expect("GC", 10)
        srv.send("stats")
        conns = int(fields(srv.expect("STATS", 10))["conns"])
        srv.send("tracemalloc")
        m1 = int(fields(srv.expect("TM", 10))["current"])
        srv.send("tracemalloc-top")
        top = srv.expect("TOP", 60)[4:]
        self.cleanup()
        return (m1 - m0) / max(1, conns), top

    # -- report ----------------------------------------------------------------------------------
    def table(self) -> str:
        lines = ["| # | benchmark | measured (median; range) | same-run reference | ratio "
                 "| target | status |",
                 "|---|---|---|---|---|---|---|"]
        for r in self.rows:
            lines.append(f"| {r.num} | {r.name} | {r.measured()} | {r.ref} | {r.ratio} | "
                         f"{r.target} | {r.status()} |")
        return "\n".join(lines)

    def header(self, started: float, elapsed: float) -> str:
        try:
            commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                                    capture_output=True, text=True, timeout=10).stdout.strip()
            dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no",
                                    "libp2p_stream_sync"], cwd=ROOT, capture_output=True,
                                   text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            commit, dirty = "?", ""
        try:
            import cryptography
            crypto = cryptography.__version__
        except ImportError:
            crypto = "?"
        load = " / ".join(f"{x:.1f}" for x in os.getloadavg())
        when = datetime.datetime.fromtimestamp(started).strftime("%Y-%m-%d %H:%M")
        uncommitted = " + uncommitted library changes" if dirty else ""
        return (f"Run {when}, `python3 bench/run.py {' '.join(sys.argv[1:])}`, "
                f"{elapsed:.0f} s; commit {commit}{uncommitted}; "
                f"{os.cpu_count()} CPUs, Python {platform.python_version()}, cryptography "
                f"{crypto}; load average at the end {load}; {self.runs} rounds per figure "
                f"unless noted. MB = 10^6 bytes; perf MB/s = (upload + download) / seconds.")


def main() -> int:
    epilog = "Benchmarks (" + __doc__.split("Benchmarks (", 1)[1]
    p = argparse.ArgumentParser(description="libp2p_stream_sync benchmark suite",
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=epilog)
    p.add_argument("--quick", action="store_true", help="smoke version (about a minute)")
    p.add_argument("--only", help=f"comma-separated subset of {','.join(ALL)}")
    p.add_argument("--skip", help="comma-separated benchmarks to leave out")
    p.add_argument("--runs", type=int, help="rounds per figure (default 5, quick 2)")
    p.add_argument("--interop-muxers", default="yamux",
                   help="muxers for the interop benchmark (default yamux; yamux,mplex)")
    p.add_argument("--output", default=str(BENCH / "RESULTS.md"),
                   help="Markdown file to write ('' for none)")
    p.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    args = p.parse_args()
    if args.list:
        print("\n".join(ALL))
        return 0
    chosen = [b for b in (args.only.split(",") if args.only else ALL)]
    skipped = set(args.skip.split(",")) if args.skip else set()
    unknown = (set(chosen) | skipped) - set(ALL)
    if unknown:
        p.error(f"unknown benchmark(s) {sorted(unknown)}; choose from {', '.join(ALL)}")
    if args.skip:
        chosen = [b for b in chosen if b not in args.skip.split(",")]
    suite = Suite(args)
    started = time.time()
    failed = []
    for name in ALL:
        if name not in chosen:
            continue
        suite.log(f"--- {name}")
        t0 = time.perf_counter()
        try:
            getattr(suite, f"bench_{name}")()
        except Exception as exc:  # noqa: BLE001
            failed.append(name)
            suite.notes.append(f"{name} FAILED: {str(exc).splitlines()[0][:300]}")
            traceback.print_exc()
        finally:
            suite.cleanup()
        suite.log(f"    {name}: {time.perf_counter() - t0:.0f} s")
    text = ("# libp2p_stream_sync benchmarks\n\n" + suite.header(started, time.time() - started)
            + "\n\n" + suite.table() + "\n")
    if suite.notes:
        text += "\nNotes:\n" + "".join(f"- {n}\n" for n in suite.notes)
    print(text)
    if args.output:
        Path(args.output).write_text(text)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
