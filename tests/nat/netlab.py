"""A network-namespace lab with NAT routers, for AutoNAT, relay and hole-punching tests.

Topology (docs/NAT-TESTS.md draws it)::

    "internet" 198.18.0.0/24 (bridge br0 in namespace `inet`, 198.18.0.1)
      ├─ public host i      198.18.0.(11+i)             namespace `pub<i>`
      └─ NAT router i       WAN 198.18.0.(101+i)        namespace `nat<i>`
           └─ private host i  10.(1+i).0.2, gateway 10.(1+i).0.1   namespace `priv<i>`

198.18.0.0/15 is the benchmarking range (RFC 2544: for testing interconnect devices,
never routed on the internet), so it is a deliberate "internet" that no real address
collides with. It is special-use: nodes must be told to count it as public
(``Node(public_networks=[lab.PUBLIC_NETWORK])``), and so must js peers. The private
sides use RFC 1918 space.

Each router masquerades what leaves ``wan0`` and forwards nothing inbound that it did
not see go out (``ct state established,related``). Its mapping is chosen per router:

* ``"eim"``: ``masquerade`` — endpoint-independent mapping, the kernel keeps the source
  port when it is free (a "full-cone-ish" home router; hole punching works);
* ``"symmetric"``: ``masquerade fully-random`` — a new random port for every
  connection (hole punching by port prediction fails).

``set_nat(i, kind)`` switches a router at run time. Routers shorten the conntrack
timeout of unreplied SYNs (``nf_conntrack_tcp_timeout_syn_sent``, 120 s -> 5 s): a
stale mapping of a failed first dial otherwise spoils a later simultaneous open.

API::

    with NetLab(nats=("eim", "symmetric"), public_hosts=1) as lab:
        lab.internet, lab.public[0], lab.nat[0], lab.private[0]   # Host(name, ns, ip)
        proc = lab.spawn(lab.private[0])        # tests/nat/run_node.py in that namespace
        node = proc.start_node(listen=[f"/ip4/{lab.private[0].ip}/tcp/0"],
                               public_networks=[lab.PUBLIC_NETWORK])
        node.dial(other.p2p_addr()); node.probe(timeout=10)       # see RemoteNode
        proc.call("tcp_connect", targets=[...])  # any runner command (run_node.py)
        lab.run(lab.nat[0], ["nft", "list", "ruleset"])           # a command in a namespace

:func:`lab_or_skip` builds one for a test module: it skips only when we are not root or
the kernel has no network namespaces, installs ``nftables`` (and ``iproute2``) with
apt-get when missing, and always cleans up. Names carry the pid and a random token,
so parallel runs do not collide; namespaces left by a killed run (its pid gone) are
removed by the next one.
"""

from __future__ import annotations

import json
import os
import queue
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import pytest

PUBLIC_NETWORK = "198.18.0.0/15"
RUNNER = Path(__file__).with_name("run_node.py")
NAT_RULES = {"eim": "masquerade", "symmetric": "masquerade fully-random"}
_PREFIX = "nlab-"
_SYN_SENT_TIMEOUT = 5


class LabUnavailable(Exception):
    """This machine cannot run the lab (not root, no network namespaces)."""


@dataclass(frozen=True)
class Host:
    """One namespace of the lab: its role name, namespace name and main IP."""

    name: str
    ns: str
    ip: str
    gateway: str | None = None


def _sh(argv: Sequence[str], *, input: str | None = None, check: bool = True,
        timeout: float = 30) -> subprocess.CompletedProcess:
    result = subprocess.run(list(argv), input=input, capture_output=True, text=True,
                            timeout=timeout)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({result.returncode}): "
                           f"{result.stderr.strip() or result.stdout.strip()}")
    return result


def ensure_tools() -> None:
    """Install ``iproute2``/``nftables`` with apt-get when ``ip``/``nft`` are missing;
    RuntimeError when that fails (the lab cannot work without them)."""
    missing = [pkg for tool, pkg in (("ip", "iproute2"), ("nft", "nftables"))
               if shutil.which(tool) is None]
    if not missing:
        return
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = ["apt-get", "-o", "DPkg::Lock::Timeout=120", "install", "-y", *missing]
    result = subprocess.run(install, capture_output=True, text=True, env=env, timeout=600)
    if result.returncode != 0:
        subprocess.run(["apt-get", "-o", "DPkg::Lock::Timeout=120", "update"],
                       capture_output=True, env=env, timeout=600)
        result = subprocess.run(install, capture_output=True, text=True, env=env,
                                timeout=600)
    if result.returncode != 0 or any(shutil.which(t) is None for t in ("ip", "nft")):
        raise RuntimeError(f"could not install {missing} with apt-get: "
                           f"{result.stderr.strip()[-500:]}")


def check_support() -> None:
    """LabUnavailable unless we are root on a kernel with network namespaces."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        raise LabUnavailable("network-namespace tests need root")
    if not Path("/proc/self/ns/net").exists():
        raise LabUnavailable("this kernel has no network namespaces")
    if shutil.which("ip") is None:
        return  # ensure_tools installs it; the probe below then runs in NetLab.start
    probe = f"{_PREFIX}probe-{os.getpid()}-{secrets.token_hex(3)}"
    result = _sh(["ip", "netns", "add", probe], check=False)
    if result.returncode != 0:
        raise LabUnavailable(f"cannot create a network namespace: {result.stderr.strip()}")
    _sh(["ip", "netns", "del", probe], check=False)


def remove_stale_namespaces() -> None:
    """Delete lab namespaces whose creating process is gone (a killed run)."""
    listing = _sh(["ip", "netns", "list"], check=False).stdout
    for line in listing.splitlines():
        name = line.split()[0] if line.split() else ""
        if not name.startswith(_PREFIX):
            continue
        parts = name[len(_PREFIX):].split("-")
        pid = parts[1] if parts[0] == "probe" and len(parts) > 1 else parts[0]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            _sh(["ip", "netns", "del", name], check=False)


class NetLab:
    """The lab described in the module docstring. Use as a context manager."""

    PUBLIC_NETWORK = PUBLIC_NETWORK

    def __init__(self, nats: Sequence[str] = ("eim", "symmetric"),
                 public_hosts: int = 1, drop_unsolicited: bool = False) -> None:
        """``drop_unsolicited``: routers drop what reaches their WAN address unasked
        (a "stealth" home router) instead of answering RST: the far side of a TCP
        hole punch must not refuse the SYN that arrives before its own went out."""
        for kind in nats:
            if kind not in NAT_RULES:
                raise ValueError(f"unknown NAT kind {kind!r} (eim or symmetric)")
        self.token = f"{_PREFIX}{os.getpid()}-{secrets.token_hex(3)}"
        self.nat_kinds = list(nats)
        self.drop_unsolicited = drop_unsolicited
        self.internet = Host("inet", f"{self.token}-inet", "198.18.0.1")
        self.public = [Host(f"pub{i}", f"{self.token}-pub{i}", f"198.18.0.{11 + i}")
                       for i in range(public_hosts)]
        self.nat = [Host(f"nat{i}", f"{self.token}-nat{i}", f"198.18.0.{101 + i}")
                    for i in range(len(nats))]
        self.private = [Host(f"priv{i}", f"{self.token}-priv{i}", f"10.{1 + i}.0.2",
                             gateway=f"10.{1 + i}.0.1") for i in range(len(nats))]
        self._created: list[str] = []
        self._procs: list[NodeProcess] = []

    def __enter__(self) -> "NetLab":
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def namespaces(self) -> list[str]:
        """Every namespace this lab created (and will delete)."""
        return list(self._created)

    # -- building --------------------------------------------------------------------
    def start(self) -> None:
        """Create the namespaces, links, addresses, routes and NAT rules."""
        remove_stale_namespaces()
        for host in [self.internet, *self.public, *self.nat, *self.private]:
            _sh(["ip", "netns", "add", host.ns])
            self._created.append(host.ns)
            self._ip(host, "link", "set", "lo", "up")
        inet = self.internet
        self._ip(inet, "link", "add", "br0", "type", "bridge")
        self._ip(inet, "addr", "add", f"{inet.ip}/24", "dev", "br0")
        self._ip(inet, "link", "set", "br0", "up")
        for host in self.public:
            self._attach(host, "eth0")
        for i, router in enumerate(self.nat):
            self._attach(router, "wan0")
            private = self.private[i]
            self._ip(router, "link", "add", "lan0", "type", "veth", "peer", "name",
                     "eth0", "netns", private.ns)
            self._ip(router, "addr", "add", f"{private.gateway}/24", "dev", "lan0")
            self._ip(router, "link", "set", "lan0", "up")
            self._ip(private, "addr", "add", f"{private.ip}/24", "dev", "eth0")
            self._ip(private, "link", "set", "eth0", "up")
            self._ip(private, "route", "add", "default", "via", private.gateway)
            self.run(router, ["sysctl", "-qw", "net.ipv4.ip_forward=1"])
            self._load_rules(router, self.nat_kinds[i])
            self.run(router, ["sysctl", "-qw", "net.netfilter."
                              f"nf_conntrack_tcp_timeout_syn_sent={_SYN_SENT_TIMEOUT}"])

    def _ip(self, host: Host, *args: str) -> None:
        _sh(["ip", "-n", host.ns, *args])

    def _attach(self, host: Host, ifname: str) -> None:
        """Link ``host`` to the internet bridge as ``ifname`` with its IP."""
        port = f"v-{host.name}"
        self._ip(self.internet, "link", "add", port, "type", "veth", "peer", "name",
                 ifname, "netns", host.ns)
        self._ip(self.internet, "link", "set", port, "master", "br0", "up")
        self._ip(host, "addr", "add", f"{host.ip}/24", "dev", ifname)
        self._ip(host, "link", "set", ifname, "up")

    def _load_rules(self, router: Host, kind: str) -> None:
        rules = f"""
            table ip labnat {{
                chain postrouting {{
                    type nat hook postrouting priority srcnat; policy accept;
                    oifname "wan0" {NAT_RULES[kind]}
                }}
                chain forward {{
                    type filter hook forward priority filter; policy drop;
                    ct state established,related accept
                    iifname "lan0" oifname "wan0" accept
                }}
                {self._input_chain()}
            }}
        """
        self.run(router, ["nft", "-f", "-"], input=rules)

    def _input_chain(self) -> str:
        if not self.drop_unsolicited:
            return ""  # the router's own stack answers RST (ICMP for UDP)
        return """chain input {
                    type filter hook input priority filter; policy accept;
                    iifname "wan0" ct state established,related accept
                    iifname "wan0" drop
                }"""

    def set_nat(self, index: int, kind: str) -> None:
        """Switch router ``index`` to ``kind`` (``"eim"`` or ``"symmetric"``) for new
        connections."""
        if kind not in NAT_RULES:
            raise ValueError(f"unknown NAT kind {kind!r} (eim or symmetric)")
        self.run(self.nat[index], ["nft", "delete", "table", "ip", "labnat"])
        self._load_rules(self.nat[index], kind)
        self.nat_kinds[index] = kind

    # -- running things in namespaces --------------------------------------------------
    def run(self, host: Host, argv: Sequence[str], *, input: str | None = None,
            check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
        """Run ``argv`` in ``host``'s namespace; RuntimeError when it fails."""
        return _sh(["ip", "netns", "exec", host.ns, *argv], input=input, check=check,
                   timeout=timeout)

    def spawn(self, host: Host) -> "NodeProcess":
        """Start ``run_node.py`` in ``host``'s namespace (stopped by :meth:`close`)."""
        proc = NodeProcess(host, ["ip", "netns", "exec", host.ns, sys.executable,
                                  str(RUNNER)])
        self._procs.append(proc)
        return proc

    # -- cleaning up ---------------------------------------------------------------------
    def close(self) -> None:
        """Stop every process we spawned, then delete every namespace (and with them
        their links). Safe to call twice and after a failed start."""
        for proc in self._procs:
            proc.stop()
        self._procs.clear()
        for ns in reversed(self._created):
            _sh(["ip", "netns", "del", ns], check=False)
        self._created.clear()


class RunnerError(RuntimeError):
    """A runner command failed in the namespace process (its message and stderr tail)."""


class NodeProcess:
    """``run_node.py`` in a namespace, driven by JSON lines over stdin/stdout."""

    def __init__(self, host: Host, argv: list[str]) -> None:
        self.host = host
        self._stderr = tempfile.TemporaryFile(mode="w+")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self._proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=self._stderr, text=True, env=env)
        self._lines: queue.Queue = queue.Queue()
        self._next_id = 0
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def stderr_tail(self, size: int = 2000) -> str:
        """The last ``size`` characters the process wrote to stderr."""
        self._stderr.seek(0)
        return self._stderr.read()[-size:]

    def call(self, cmd: str, timeout: float = 30, **args: Any) -> Any:
        """Run one runner command; its result, or RunnerError."""
        self._next_id += 1
        request = dict(args, cmd=cmd, id=self._next_id)
        assert self._proc.stdin is not None
        try:
            self._proc.stdin.write(json.dumps(request) + "\n")
            self._proc.stdin.flush()
        except OSError as exc:
            raise RunnerError(f"{self.host.name}: runner gone ({exc}): "
                              f"{self.stderr_tail()}") from exc
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise RunnerError(f"{self.host.name}: {cmd} gave no answer in {timeout} s; "
                                  f"stderr: {self.stderr_tail()}") from None
            if line is None:
                raise RunnerError(f"{self.host.name}: runner exited during {cmd}: "
                                  f"{self.stderr_tail()}")
            reply = json.loads(line)
            if reply.get("id") != self._next_id:
                continue  # an answer to a call that timed out earlier
            if not reply["ok"]:
                raise RunnerError(f"{self.host.name}: {cmd}: {reply['error']}")
            return reply["result"]

    def start_node(self, **kwargs: Any) -> "RemoteNode":
        """Create a node in the process (``Node(**kwargs)``, ``limits`` as a dict)."""
        info = self.call("start", **kwargs)
        return RemoteNode(self, info["node"], info["peer_id"], info["addrs"])

    def stop(self) -> None:
        """Ask the process to exit; kill it if it does not within 5 s."""
        if self._proc.poll() is None:
            try:
                assert self._proc.stdin is not None
                self._proc.stdin.write(json.dumps({"cmd": "exit", "id": 0}) + "\n")
                self._proc.stdin.close()
                self._proc.wait(5)
            except (OSError, subprocess.TimeoutExpired):
                self._proc.kill()
                self._proc.wait(5)
        self._stderr.close()


@dataclass
class RemoteNode:
    """A node inside a :class:`NodeProcess`; methods are runner commands."""

    proc: NodeProcess
    index: int
    peer_id: str
    addrs: list[str] = field(default_factory=list)

    def p2p_addr(self, i: int = 0) -> str:
        """Listen address ``i`` with ``/p2p/<peer id>``."""
        return f"{self.addrs[i]}/p2p/{self.peer_id}"

    def call(self, cmd: str, timeout: float = 30, **args: Any) -> Any:
        """A runner command on this node."""
        return self.proc.call(cmd, timeout=timeout, node=self.index, **args)

    def dial(self, addr: str, timeout: float = 10) -> dict:
        """Dial ``addr`` and wait for identify; ``{"peer_id", "observed_addr"}``."""
        return self.call("dial", timeout=timeout + 15, addr=addr, timeout_s=timeout)

    def probe(self, servers: list[str] | None = None, timeout: float = 20,
              confirmations: int = 3, version: int = 1) -> dict:
        """``probe_reachability`` as a dict (status, reachable_addrs, observations,
        asked)."""
        return self.call("probe", timeout=timeout + 15, servers=servers,
                         timeout_s=timeout, confirmations=confirmations, version=version)


def lab_or_skip(**kwargs: Any) -> NetLab:
    """A started :class:`NetLab` (close it!), or ``pytest.skip`` with the reason when
    this machine cannot run one (not root, no network namespaces)."""
    try:
        check_support()
    except LabUnavailable as exc:
        pytest.skip(str(exc))
    ensure_tools()
    lab = NetLab(**kwargs)
    try:
        lab.start()
    except BaseException:
        lab.close()
        raise
    return lab
