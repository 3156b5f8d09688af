"""Runs nodes (and raw TCP probes) inside a network namespace for tests/nat/netlab.py.

Protocol: one JSON object per line on stdin, ``{"id": n, "cmd": name, ...args}``; one
answer per line on stdout, ``{"id": n, "ok": true, "result": ...}`` or
``{"id": n, "ok": false, "error": "..."}``. Commands are the ``COMMANDS`` table:
relay and hole-punching tests add theirs the same way (a function of ``(state, args)``
returning something JSON can encode). Diagnostics go to stderr.
"""

from __future__ import annotations

import json
import logging
import socket
import sys
import threading
import time
from typing import Any, Callable

from libp2p_stream_sync import Limits, Node, PeerId, RelayLimits, serve_echo


class State:
    """What the commands share: the nodes made so far and the TCP observers."""

    def __init__(self) -> None:
        self.nodes: list[Node] = []
        self.observed: list[list[str]] = []  # per observer socket: peer "ip:port"s
        self.lock = threading.Lock()

    def node(self, args: dict) -> Node:
        return self.nodes[args.get("node", 0)]


def cmd_start(state: State, args: dict) -> dict:
    kwargs = {k: v for k, v in args.items() if k not in ("id", "cmd")}
    if "limits" in kwargs:
        kwargs["limits"] = Limits(**kwargs["limits"])
    if "relay_service" in kwargs:
        kwargs["relay_service"] = RelayLimits(**kwargs["relay_service"])
    node = Node(**kwargs)
    state.nodes.append(node)
    return {"node": len(state.nodes) - 1, "peer_id": str(node.peer_id),
            "addrs": [str(a) for a in node.listen_addrs]}


def cmd_dial(state: State, args: dict) -> dict:
    node = state.node(args)
    peer = node.dial(args["addr"], timeout=args.get("timeout_s", 10))
    info = node.wait_identified(peer, timeout=args.get("timeout_s", 10))
    return {"peer_id": str(peer),
            "observed_addr": str(info.observed_addr) if info.observed_addr else None}


def cmd_probe(state: State, args: dict) -> dict:
    result = state.node(args).probe_reachability(
        args.get("servers"), timeout=args.get("timeout_s", 20),
        confirmations=args.get("confirmations", 3), version=args.get("version", 1))
    return {"status": result.status,
            "reachable_addrs": [str(a) for a in result.reachable_addrs],
            "asked": [str(a) for a in result.asked],
            "observations": [{"server": str(o.server), "outcome": o.outcome,
                              "addr": str(o.addr) if o.addr else None, "detail": o.detail}
                             for o in result.observations]}


def cmd_ping(state: State, args: dict) -> list[float]:
    return state.node(args).ping(args["peer"], count=args.get("count", 1), timeout=10)


def cmd_close(state: State, args: dict) -> None:
    state.node(args).close()


def cmd_tcp_observer(state: State, args: dict) -> list[int]:
    """Listen on ``count`` TCP ports of ``ip``; record each peer's ``ip:port``."""
    ports = []
    for _ in range(args.get("count", 1)):
        sock = socket.socket()
        sock.bind((args["ip"], 0))
        sock.listen(16)
        with state.lock:
            state.observed.append([])
            slot = state.observed[-1]
        ports.append(sock.getsockname()[1])
        threading.Thread(target=_observe, args=(state, sock, slot), daemon=True).start()
    return ports


def _observe(state: State, sock: socket.socket, slot: list[str]) -> None:
    while True:
        conn, peer = sock.accept()
        with state.lock:
            slot.append(f"{peer[0]}:{peer[1]}")
        conn.close()


def cmd_observed(state: State, args: dict) -> list[list[str]]:
    """What each observer saw; waits up to ``timeout_s`` until every one has seen at
    least ``min_each`` peers (accepts race with the connecting side's return)."""
    deadline = time.monotonic() + args.get("timeout_s", 2.0)
    while True:
        with state.lock:
            seen = [list(slot) for slot in state.observed]
        if all(len(slot) >= args.get("min_each", 0) for slot in seen) \
                or time.monotonic() >= deadline:
            return seen
        time.sleep(0.01)


def cmd_tcp_connect(state: State, args: dict) -> list[str]:
    """Connect to each ``[ip, port]`` of ``targets`` in turn, from local port
    ``source_port`` (0: any); ``"ok"`` or the error for each."""
    results = []
    for ip, port in args["targets"]:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.settimeout(args.get("timeout_s", 5))
        try:
            sock.bind(("0.0.0.0", args.get("source_port", 0)))
            sock.connect((ip, port))
            results.append("ok")
        except OSError as exc:
            results.append(f"{type(exc).__name__}: {exc}")
        finally:
            sock.close()
    return results


def cmd_reserve(state: State, args: dict) -> list[str]:
    """``add_relay``; our relayed addresses."""
    node = state.node(args)
    node.add_relay(args["relay"], timeout=args.get("timeout_s", 10))
    return [str(a) for a in node.listen_addrs if "p2p-circuit" in str(a)]


def cmd_serve_echo(state: State, args: dict) -> None:
    serve_echo(state.node(args).new_control())


def cmd_echo(state: State, args: dict) -> dict:
    """Open an echo stream to ``peer`` (``require_direct`` optional), send ``size``
    bytes, read them back; which connection it ran on."""
    stream = state.node(args).new_control().open_stream(
        args["peer"], "/echo/1.0.0", timeout=10, require_direct=args.get("direct", False))
    stream.settimeout(10)
    data = bytes(range(256)) * (args.get("size", 1024) // 256)
    stream.write(data)
    stream.close_write()
    ok = stream.readall() == data
    conn = stream.connection
    return {"ok": ok, "relayed": conn.relayed, "remote_addr": list(conn.remote_addr)}


def cmd_perf(state: State, args: dict) -> dict:
    """Perf ``upload`` bytes to ``peer`` and ``download`` back: the bytes moved, and
    whether the connection it ran on was relayed."""
    node = state.node(args)
    result = node.perf(args["peer"], args["upload"], args["download"], timeout=30)
    (conn,) = node.connections(PeerId.from_string(args["peer"]))
    return {"upload_bytes": result.upload_bytes, "download_bytes": result.download_bytes,
            "relayed": conn.relayed}


def cmd_connections(state: State, args: dict) -> list[dict]:
    """Our connections to ``peer``: relayed or not, who dialed, the remote address."""
    return [{"relayed": c.relayed, "initiator": c.initiator,
             "remote_addr": [str(x) for x in c.remote_addr]}
            for c in state.node(args).connections(PeerId.from_string(args["peer"]))]


def cmd_wait_direct(state: State, args: dict) -> bool:
    """Wait up to ``timeout_s`` for a direct connection to ``peer``."""
    node, peer = state.node(args), PeerId.from_string(args["peer"])
    deadline = time.monotonic() + args.get("timeout_s", 10)
    while node.usable_connection(peer, direct=True) is None:
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True


def cmd_hole_punches(state: State, args: dict) -> dict:
    """``hole_puncher.counts()``; ``dial_window`` sets its seconds per round."""
    puncher = state.node(args).hole_puncher
    if "dial_window" in args:
        puncher.dial_window = args["dial_window"]
    return puncher.counts()


def cmd_log_level(state: State, args: dict) -> None:
    """Set ``logger`` (a name) to ``level`` (e.g. "DEBUG") for diagnosis."""
    logging.getLogger(args["logger"]).setLevel(args["level"])


COMMANDS: dict[str, Callable[[State, dict], Any]] = {
    "log_level": cmd_log_level,
    "reserve": cmd_reserve, "serve_echo": cmd_serve_echo, "echo": cmd_echo,
    "perf": cmd_perf,
    "connections": cmd_connections, "wait_direct": cmd_wait_direct,
    "hole_punches": cmd_hole_punches,
    "start": cmd_start, "dial": cmd_dial, "probe": cmd_probe, "ping": cmd_ping,
    "close": cmd_close, "tcp_observer": cmd_tcp_observer, "observed": cmd_observed,
    "tcp_connect": cmd_tcp_connect,
}


def main() -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("multiaddr").setLevel(logging.WARNING)
    state = State()
    try:
        for line in sys.stdin:
            request = json.loads(line)
            if request["cmd"] == "exit":
                break
            try:
                reply = {"ok": True, "result": COMMANDS[request["cmd"]](state, request)}
            except Exception as exc:  # reported to the test, which fails with it
                logging.exception("command %s failed", request["cmd"])
                reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            reply["id"] = request.get("id")
            sys.stdout.write(json.dumps(reply) + "\n")
            sys.stdout.flush()
    finally:
        for node in state.nodes:
            node.close()


if __name__ == "__main__":
    main()
