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

from libp2p_stream_sync import Limits, Node


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


COMMANDS: dict[str, Callable[[State, dict], Any]] = {
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
