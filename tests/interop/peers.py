"""Install and launch the real libp2p peer programs used by the interop tests.

Two peer programs share one command-line contract (see README.md here):

* ``js``: ``js/peer.mjs`` on js-libp2p 2.x (Node >= 20), installed with
  ``npm ci`` from the committed ``js/package-lock.json``;
* ``py``: ``py/peer.py`` on py-libp2p, installed into its own virtual
  environment ``.py-libp2p-venv`` from ``py/requirements.txt`` (never into
  the project's environment).

Public helpers:

* :func:`ensure_js_peer` / :func:`ensure_py_peer` -- idempotent installs (a
  stamp file holds the hash of the lock / requirements file, so an installed
  tree costs one hash and a stat); concurrent installs are serialized with an
  ``fcntl`` file lock, so parallel test workers are safe.
* :class:`PeerProcess` -- context manager running ``listen`` and parsing its
  ``LISTEN <multiaddr>`` line.
* :class:`ListenerPool` -- listeners shared by many tests, started on first
  use, one per (kind, muxer, stack).
* :func:`run_peer_command` -- run a client command (echo, ping, id, perf,
  open) to completion.
* :func:`parse_result` -- split a result line ``OK echo streams=1 ...`` into
  its words and ``key=value`` fields.
* :class:`Stack` -- the transport + security a cell runs over (``tcp`` /
  ``ws`` / ``quic``, ``noise`` / ``tls``), passed to PeerProcess and
  run_peer_command; :data:`STACKS` lists them all, :func:`peers_interoperate`
  says which pairs of peer programs can use a stack with each other.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

HERE = Path(__file__).resolve().parent
JS_DIR = HERE / "js"
PY_DIR = HERE / "py"
JS_PEER = JS_DIR / "peer.mjs"
PY_PEER = PY_DIR / "peer.py"
JS_LOCK = JS_DIR / "package-lock.json"
JS_PACKAGE = JS_DIR / "package.json"
JS_STAMP = JS_DIR / "node_modules" / ".interop-install-stamp"
PY_REQUIREMENTS = PY_DIR / "requirements.txt"
PY_VENV = HERE / ".py-libp2p-venv"
PY_STAMP = PY_VENV / ".interop-install-stamp"
INSTALL_LOCK = HERE / ".install.lock"

KINDS = ("js", "py")
TRANSPORTS = ("tcp", "ws", "quic")
SECURITIES = ("noise", "tls")
MIN_NODE_MAJOR = 20
INSTALL_TIMEOUT = 900  # seconds, for one npm ci / pip install

EXIT_OK = 0
EXIT_FAIL = 1
EXIT_UNSUPPORTED = 3
EXIT_HARNESS_TIMEOUT = 124  # run_peer_command's own limit hit (peer killed)


class PeerSetupError(RuntimeError):
    """A peer program could not be installed (missing tool, failed install)."""


class PeerStartError(RuntimeError):
    """A listener did not come up (no LISTEN line in time, or it exited)."""


# ------------------------------------------------------------------- stacks --

# transport -> (loopback listen address, LISTEN line address pattern)
_LISTEN = {
    "tcp": ("/ip4/127.0.0.1/tcp/0", r"/ip4/127\.0\.0\.1/tcp/\d+"),
    "ws": ("/ip4/127.0.0.1/tcp/0/ws", r"/ip4/127\.0\.0\.1/tcp/\d+/ws"),
    "quic": ("/ip4/127.0.0.1/udp/0/quic-v1", r"/ip4/127\.0\.0\.1/udp/\d+/quic-v1"),
}


@dataclass(frozen=True)
class Stack:
    """The transport and security one connection uses.

    QUIC has its own TLS 1.3 handshake, so a QUIC stack has no separate
    security (``security`` is ignored, ``args()`` omits ``--security``).
    """

    transport: str = "tcp"
    security: str = "noise"

    def __post_init__(self) -> None:
        if self.transport not in TRANSPORTS:
            raise ValueError(f"unknown transport {self.transport!r} (one of {TRANSPORTS})")
        if self.security not in SECURITIES:
            raise ValueError(f"unknown security {self.security!r} (one of {SECURITIES})")

    @property
    def id(self) -> str:
        """Short name for test ids: 'tcp-noise', 'ws-tls', 'quic'."""
        return "quic" if self.transport == "quic" else f"{self.transport}-{self.security}"

    @property
    def listen_addr(self) -> str:
        """The loopback address a listener of this stack binds (port 0)."""
        return _LISTEN[self.transport][0]

    @property
    def uses_tls(self) -> bool:
        """True when the handshake is TLS 1.3 (``/tls/1.0.0`` or QUIC's own)."""
        return self.transport == "quic" or self.security == "tls"

    def args(self) -> list[str]:
        """The peer programs' command-line options selecting this stack."""
        if self.transport == "quic":
            return ["--transport", "quic"]
        return ["--transport", self.transport, "--security", self.security]


DEFAULT_STACK = Stack()
STACKS = (Stack("tcp", "noise"), Stack("tcp", "tls"), Stack("ws", "noise"),
          Stack("ws", "tls"), Stack("quic"))


def peers_interoperate(kind_a: str, kind_b: str, stack: Stack) -> bool:
    """Whether peer programs ``kind_a`` and ``kind_b`` can connect over ``stack``.

    Only js <-> py over ``/tls/1.0.0`` cannot: js-libp2p's TLS reads the
    libp2p key only from the *first* certificate extension, where py-libp2p
    puts BasicConstraints (README "Quirks").  QUIC's TLS works between them.
    """
    return not ({kind_a, kind_b} == {"js", "py"} and stack.security == "tls"
                and stack.transport != "quic")


# ------------------------------------------------------------------ install --

def _sha256(*paths: Path, extra: str = "") -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(p.name.encode() + b"\0")
        h.update(p.read_bytes())
        h.update(b"\0")
    h.update(extra.encode())
    return h.hexdigest()


@contextlib.contextmanager
def _install_lock() -> Iterator[None]:
    """Exclusive inter-process lock around installs (parallel test workers)."""
    INSTALL_LOCK.parent.mkdir(parents=True, exist_ok=True)
    with open(INSTALL_LOCK, "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _run_install(cmd: Sequence[str], cwd: Path, what: str,
                 env: dict[str, str] | None = None) -> None:
    try:
        cp = subprocess.run(list(cmd), cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                            capture_output=True, text=True, timeout=INSTALL_TIMEOUT)
    except subprocess.TimeoutExpired as exc:
        raise PeerSetupError(f"{what}: `{' '.join(cmd)}` timed out after "
                             f"{INSTALL_TIMEOUT}s") from exc
    except OSError as exc:
        raise PeerSetupError(f"{what}: cannot run `{' '.join(cmd)}`: {exc}") from exc
    if cp.returncode != 0:
        tail = "\n".join((cp.stdout + cp.stderr).strip().splitlines()[-40:])
        raise PeerSetupError(f"{what}: `{' '.join(cmd)}` failed with exit code "
                             f"{cp.returncode}:\n{tail}")


def node_executable() -> str:
    """Path of a usable ``node`` (>= MIN_NODE_MAJOR), or PeerSetupError."""
    node = shutil.which("node")
    if node is None:
        raise PeerSetupError(
            "the js interop peer needs Node.js >= 20 (`node` is not on PATH); "
            "install Node.js (e.g. Debian's `nodejs` and `npm` packages)")
    try:
        version = subprocess.run([node, "--version"], capture_output=True, text=True,
                                 timeout=30).stdout.strip()
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PeerSetupError(f"cannot run `{node} --version`: {exc}") from exc
    m = re.match(r"v(\d+)\.", version)
    if not m or int(m.group(1)) < MIN_NODE_MAJOR:
        raise PeerSetupError(f"the js interop peer needs Node.js >= {MIN_NODE_MAJOR}, "
                             f"found {version or 'unknown version'} at {node}")
    return node


_js_ready: Path | None = None
_py_ready: Path | None = None


def ensure_js_peer() -> Path:
    """Make sure js/node_modules matches js/package-lock.json; return peer.mjs.

    Runs ``npm ci`` when node_modules is missing or its stamp (hash of
    package.json + package-lock.json) differs.  Raises PeerSetupError with a
    clear message when node/npm are unavailable or the install fails.
    """
    global _js_ready
    if _js_ready is not None:
        return _js_ready
    node_executable()
    npm = shutil.which("npm")
    if npm is None:
        raise PeerSetupError("the js interop peer needs npm (not on PATH) to install "
                             "js-libp2p from tests/interop/js/package-lock.json")
    want = _sha256(JS_PACKAGE, JS_LOCK)
    if _read(JS_STAMP) != want:
        with _install_lock():
            if _read(JS_STAMP) != want:  # another worker may have done it
                _run_install([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
                             JS_DIR, "installing the js interop peer")
                JS_STAMP.write_text(want + "\n")
    _js_ready = JS_PEER
    return JS_PEER


def _venv_python(venv: Path = PY_VENV) -> Path:
    return venv / "bin" / "python"


def ensure_py_peer() -> Path:
    """Make sure the py-libp2p venv matches py/requirements.txt; return its python.

    Creates ``tests/interop/.py-libp2p-venv`` with the interpreter running the
    tests and pip installs the pinned requirements into it when the venv is
    missing or its stamp (hash of requirements.txt + Python version) differs.
    """
    global _py_ready
    if _py_ready is not None:
        return _py_ready
    want = _sha256(PY_REQUIREMENTS, extra=sys.version)
    python = _venv_python()
    if _read(PY_STAMP) != want or not python.exists():
        with _install_lock():
            if _read(PY_STAMP) != want or not python.exists():
                if PY_VENV.exists():
                    shutil.rmtree(PY_VENV)
                _run_install([sys.executable, "-m", "venv", str(PY_VENV)], HERE,
                             "creating the py-libp2p venv (needs the venv/ensurepip "
                             "module, Debian: python3-venv)")
                env = dict(os.environ)
                env.pop("PIP_USER", None)
                env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
                _run_install([str(python), "-m", "pip", "install", "--no-input",
                              "-r", str(PY_REQUIREMENTS)],
                             HERE, "installing py-libp2p into its venv", env=env)
                PY_STAMP.write_text(want + "\n")
    _py_ready = python
    return python


def peer_argv(kind: str) -> list[str]:
    """The command prefix that runs peer program ``kind`` ('js' or 'py')."""
    if kind == "js":
        return [node_executable(), str(ensure_js_peer())]
    if kind == "py":
        return [str(ensure_py_peer()), str(PY_PEER)]
    raise ValueError(f"unknown peer kind {kind!r} (expected one of {KINDS})")


def _peer_env(kind: str) -> dict[str, str]:
    env = dict(os.environ)
    if kind == "py":
        # Keep the project's environment out of the py-libp2p venv.
        for var in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONUSERBASE"):
            env.pop(var, None)
        env["PYTHONUNBUFFERED"] = "1"
        env["PYTHONNOUSERSITE"] = "1"
    else:
        env.pop("NODE_OPTIONS", None)
    return env


# ----------------------------------------------------------------- results --

@dataclass
class PeerResult:
    """A result line split up: ``OK echo streams=1 bytes=5`` ->
    status='OK', words=['echo'], fields={'streams': '1', 'bytes': '5'}."""

    status: str
    words: list[str] = field(default_factory=list)
    fields: dict[str, str] = field(default_factory=dict)
    line: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "OK"


def result_line(stdout: str) -> str:
    """The last non-empty line of a peer's stdout ('' if none)."""
    lines = [ln.strip() for ln in (stdout or "").splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def parse_result(text: str) -> PeerResult:
    """Parse a result line (or a whole stdout, whose last line is used).

    ``fields`` keeps ``key=value`` words; for ``id``, ``protocols`` stays the
    comma-separated string (split it with ``.split(',')``).  FAIL reasons land
    in ``words``.
    """
    line = result_line(text)
    parts = line.split()
    if not parts:
        return PeerResult(status="", line=line)
    res = PeerResult(status=parts[0], line=line)
    for i, word in enumerate(parts[1:], start=1):
        key, sep, value = word.partition("=")
        # agent=... may contain spaces (js: "js-libp2p/2.10.0 node/20.20.2"):
        # the agent field is last on the line, so it takes the rest.
        if sep and key == "agent":
            res.fields[key] = " ".join([value] + parts[i + 1:])
            break
        if sep and re.fullmatch(r"[a-z_]+", key):
            res.fields[key] = value
        else:
            res.words.append(word)
    return res


# ----------------------------------------------------------------- running --

def run_peer_command(kind: str, args: Sequence[str], timeout: float = 60.0,
                     stack: Stack = DEFAULT_STACK) -> subprocess.CompletedProcess:
    """Run a client command of peer ``kind`` and return its CompletedProcess.

    ``args`` is the command line after the program, e.g.
    ``["echo", ma, "--muxer", "yamux", "--bytes", "1024", "--streams", "2"]``;
    ``stack``'s ``--transport``/``--security`` options are appended (the
    dialed multiaddr must be of that transport).
    Unless ``args`` already has ``--timeout``, ``--timeout <timeout>`` is added
    so the peer gives up by itself and prints ``FAIL timeout ...``.  Should
    the process still be running ``timeout + 15`` s later it is killed and the
    result has returncode 124 (EXIT_HARNESS_TIMEOUT) with a ``FAIL`` line
    appended to stdout.  stdout/stderr are text.
    """
    argv = peer_argv(kind) + [str(a) for a in args] + stack.args()
    if "--timeout" not in args:
        argv += ["--timeout", f"{timeout:g}"]
    try:
        return subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, timeout=timeout + 15, env=_peer_env(kind))
    except subprocess.TimeoutExpired as exc:
        def _text(b: bytes | str | None) -> str:
            if b is None:
                return ""
            return b.decode(errors="replace") if isinstance(b, bytes) else b
        stdout = _text(exc.stdout)
        stdout += f"\nFAIL harness timeout: {kind} peer killed after {timeout + 15:g}s\n"
        return subprocess.CompletedProcess(argv, EXIT_HARNESS_TIMEOUT, stdout,
                                           _text(exc.stderr))


class PeerProcess:
    """Run peer ``kind`` in ``listen`` mode for the duration of a ``with`` block.

    >>> with PeerProcess("js", "yamux") as peer:
    ...     run_peer_command("py", ["ping", peer.multiaddr, "--muxer", "yamux"])

    ``multiaddr`` is the full ``/ip4/127.0.0.1/tcp/N/p2p/<id>`` address (for
    ``stack`` ws: ``.../tcp/N/ws/p2p/<id>``, quic: ``.../udp/N/quic-v1/p2p/<id>``)
    and ``peer_id`` its id.  The listener's stdin is a pipe kept open for the
    block (the peer exits when it closes); on exit stdin is closed, then
    SIGTERM, then SIGKILL.  ``stderr_text()`` returns what it logged so far;
    ``returncode`` is set after exit.
    """

    def __init__(self, kind: str, muxer: str, extra_args: Sequence[str] = (),
                 start_timeout: float = 30.0, stop_timeout: float = 10.0,
                 perf: bool = True, stack: Stack = DEFAULT_STACK):
        if kind not in KINDS:
            raise ValueError(f"unknown peer kind {kind!r} (expected one of {KINDS})")
        self.kind = kind
        self.muxer = muxer
        self.extra_args = list(extra_args)
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.perf = perf
        self.stack = stack
        self.proc: subprocess.Popen | None = None
        self.multiaddr: str = ""
        self.peer_id: str = ""
        self.returncode: int | None = None
        self._stderr_file = None
        self._stderr_cache = ""

    # -- lifecycle --
    def start(self) -> "PeerProcess":
        argv = peer_argv(self.kind) + ["listen", "--muxer", self.muxer]
        if self.perf:
            argv.append("--perf")
        argv += self.stack.args() + self.extra_args
        self._stderr_file = tempfile.TemporaryFile(mode="w+b")
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self._stderr_file, env=_peer_env(self.kind),
                                     start_new_session=True)
        line = self._read_listen_line()
        address = _LISTEN[self.stack.transport][1]
        m = re.fullmatch(rf"LISTEN ({address}/p2p/(\S+))", line)
        if not m:
            self.stop()
            raise PeerStartError(f"{self.kind} listener printed {line!r} instead of "
                                 f"'LISTEN <multiaddr>'{self._stderr_suffix()}")
        self.multiaddr, self.peer_id = m.group(1), m.group(2)
        return self

    def _read_listen_line(self) -> str:
        assert self.proc is not None and self.proc.stdout is not None
        box: list[bytes] = []
        reader = threading.Thread(target=lambda: box.append(self.proc.stdout.readline()),
                                  daemon=True)
        reader.start()
        reader.join(self.start_timeout)
        if reader.is_alive() or not box or not box[0]:
            alive = self.proc.poll() is None
            self.stop()
            why = (f"no LISTEN line within {self.start_timeout:g}s" if alive
                   else f"exited with code {self.returncode} before printing LISTEN")
            raise PeerStartError(f"{self.kind} listener ({self.muxer}, {self.stack.id}) {why}"
                                 f"{self._stderr_suffix()}")
        return box[0].decode(errors="replace").strip()

    def stop(self) -> int | None:
        proc = self.proc
        if proc is None:
            return self.returncode
        if proc.poll() is None:
            with contextlib.suppress(OSError):
                if proc.stdin is not None:
                    proc.stdin.close()
            try:
                proc.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(OSError):
                    proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(OSError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.kill()
                    proc.wait(5)
        for stream in (proc.stdin, proc.stdout):
            with contextlib.suppress(OSError, ValueError):
                if stream is not None:
                    stream.close()
        self.returncode = proc.returncode
        return self.returncode

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stderr_text(self) -> str:
        if self._stderr_file is None:
            return self._stderr_cache
        try:
            pos = self._stderr_file.tell()
            self._stderr_file.seek(0)
            data = self._stderr_file.read()
            self._stderr_file.seek(pos)
        except (OSError, ValueError):
            return ""
        return data.decode(errors="replace")

    def _stderr_suffix(self, limit: int = 4000) -> str:
        text = self.stderr_text().strip()
        if not text:
            return ""
        return "\n--- listener stderr (tail) ---\n" + text[-limit:]

    def __enter__(self) -> "PeerProcess":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()
        if self._stderr_file is not None:
            self._stderr_cache = self.stderr_text()
            with contextlib.suppress(OSError):
                self._stderr_file.close()
            self._stderr_file = None

    def __repr__(self) -> str:
        return (f"PeerProcess({self.kind!r}, {self.muxer!r}, stack={self.stack.id!r}, "
                f"multiaddr={self.multiaddr!r})")


class ListenerPool:
    """Listeners shared by many tests: one PeerProcess per (kind, muxer, stack).

    >>> with ListenerPool() as pool:
    ...     peer = pool.get("js", "yamux", Stack("quic"))   # started on first use

    ``get`` raises PeerStartError if that listener has died since it was
    started (with its stderr).  ``close()`` stops them all and returns one
    description (with stderr) per listener that did not exit with 0.
    """

    def __init__(self) -> None:
        self._running: dict[tuple[str, str, Stack], PeerProcess] = {}

    def get(self, kind: str, muxer: str, stack: Stack = DEFAULT_STACK) -> PeerProcess:
        """The running listener for (kind, muxer, stack), started if need be."""
        key = (kind, muxer, stack)
        peer = self._running.get(key)
        if peer is None:
            peer = PeerProcess(kind, muxer, stack=stack).start()
            self._running[key] = peer
        elif not peer.alive():
            raise PeerStartError(f"{kind} {muxer} {stack.id} listener died (code "
                                 f"{peer.proc.poll() if peer.proc else None})"
                                 f"{peer._stderr_suffix()}")
        return peer

    def close(self) -> list[str]:
        """Stop every listener; describe those that did not exit with 0."""
        bad = []
        for (kind, muxer, stack), peer in self._running.items():
            peer.__exit__(None, None, None)
            if peer.returncode != 0:
                bad.append(f"{kind} {muxer} {stack.id} listener exited with "
                           f"{peer.returncode}:\n{peer.stderr_text()[-2000:]}")
        self._running.clear()
        return bad

    def __enter__(self) -> "ListenerPool":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def wait_until(predicate, timeout: float, interval: float = 0.05) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())
