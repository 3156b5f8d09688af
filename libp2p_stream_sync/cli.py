"""``libp2p-stream`` / ``python -m libp2p_stream_sync``: a small libp2p command line.

Output contract (stdout, one line each, flushed)::

    listen ...  ->  LISTEN <multiaddr>/p2p/<peer id>      (one per address), then serves
    echo ...    ->  OK echo streams=K bytes=N seconds=S mbps=R
    ping ...    ->  OK ping rtt_ms=X
    perf ...    ->  OK perf upload_bytes=N download_bytes=M seconds=S mbps=R
    id ...      ->  OK id protocols=<comma-separated> agent=<agent version>
    peerid ...  ->  OK peerid <peer id>
    failure     ->  FAIL <reason>                          (exit status 1)

``mbps`` is MB (10^6 bytes) per second: for echo, the bytes echoed back (K x N) over
``seconds`` (dial included); for perf, upload + download over ``seconds`` (after the dial).

Usage errors exit with status 2 (argparse). Logs go to stderr; ``-v`` shows debug logs.
``echo`` and ``perf`` report progress on stderr about once a second (bytes so far and
MB/s) when stderr is a terminal, or always with ``--progress`` (``--no-progress``: never).

Client commands take a TCP multiaddr. With ``/p2p/<peer id>`` the remote must prove that
id; without it nobody is authenticated in advance (any key holder answering there is
accepted) and a ``note: ...`` line on stderr names the peer that answered. A bare peer
id is accepted too, but a fresh CLI node knows no address for it.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import re
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Sequence, TextIO

from ._version import __version__
from .control import DEFAULT_ACCEPT_CAPACITY
from .identity import Keypair, PeerId
from .limits import RelayLimits
from .node import Node
from .protocols import echo as echo_proto
from .transport import tcp

log = logging.getLogger("libp2p_stream_sync.cli")

DEFAULT_LISTEN = "/ip4/127.0.0.1/tcp/0"
DEFAULT_TIMEOUT = 30.0
#: Seconds `listen --relay` waits for each relay to grant a slot.
RELAY_TIMEOUT = 10.0
PROGRESS_INTERVAL = 1.0
_MUXER_CHOICES = {"yamux": ("yamux",), "mplex": ("mplex",), "both": ("yamux", "mplex")}
_SIZE_RE = re.compile(r"^\s*(\d+)\s*([kmg]?)(i?b)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


class CommandFailed(Exception):
    """A command failed in an expected way; the message becomes the FAIL line."""


# -- argument helpers ----------------------------------------------------------------------
def parse_size(text: str) -> int:
    """``"1024"``, ``"64K"``, ``"10M"``, ``"1G"`` (binary units; ``KiB``/``MB`` accepted)."""
    match = _SIZE_RE.match(text)
    if match is None:
        raise argparse.ArgumentTypeError(f"invalid size {text!r} (e.g. 1024, 64K, 10M, 1G)")
    return int(match.group(1)) * _SIZE_UNITS[match.group(2).lower()]


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} must be at least 1")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text} must be positive")
    return value


def _names_peer(address: str) -> bool:
    """Whether the dial authenticates a peer given in advance (``/p2p/`` or a peer id)."""
    target = tcp.peer_id_or_multiaddr(address)
    if isinstance(target, PeerId):
        return True
    parts = list(target.items())
    return bool(parts) and parts[-1][0].name in ("p2p", "ipfs")


def load_or_create_key(path: str) -> Keypair:
    """Load the key pair stored at ``path``, or create it (mode 0600) if absent."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        keypair = Keypair.generate()
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # created meanwhile by another process: use theirs
            return load_or_create_key(path)
        with os.fdopen(fd, "wb") as f:
            f.write(keypair.to_bytes())
        return keypair
    try:
        return Keypair.from_bytes(raw)
    except ValueError as exc:
        raise CommandFailed(f"cannot load key file {path}: {exc}") from exc


def _keypair(args: argparse.Namespace) -> Keypair | None:
    path = getattr(args, "key_file", None)
    return load_or_create_key(path) if path else None


# -- commands ----------------------------------------------------------------------------
def cmd_listen(args: argparse.Namespace) -> int:
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    listen = args.listen or [DEFAULT_LISTEN]
    relay_service = RelayLimits() if args.relay_service else None
    with Node(_keypair(args), listen=listen, muxers=_MUXER_CHOICES[args.muxer],
              enable_perf=args.perf, relay_service=relay_service) as node:
        server = _serve_echo(node, args.max_streams_per_peer)
        try:
            for relay in args.relay or ():
                node.add_relay(relay, timeout=RELAY_TIMEOUT)  # kept; raises when refused
            for addr in node.listen_addrs:
                print(f"LISTEN {addr}/p2p/{node.peer_id}", flush=True)
            while not stop.wait(0.5):
                pass
            log.info("signal received: shutting down")
        finally:
            server.close()
    return 0


def _serve_echo(node: Node, per_peer: int | None) -> echo_proto.EchoServer:
    """Echo with the default per-peer shares, or with one peer allowed ``per_peer``
    streams served and ``max(64, per_peer)`` waiting (accept queue and backlog)."""
    if per_peer is None:
        return echo_proto.serve_echo(node.new_control())
    return echo_proto.serve_echo(node.new_control(), max_streams_per_peer=per_peer,
                                 capacity=max(DEFAULT_ACCEPT_CAPACITY, 4 * per_peer))


def _client_node(args: argparse.Namespace) -> Node:
    return Node(_keypair(args), muxers=_MUXER_CHOICES[args.muxer])


def _connect(node: Node, args: argparse.Namespace) -> PeerId:
    """Dial the command's address; say who answered when the address named nobody."""
    peer = node.dial(args.multiaddr, timeout=args.timeout)
    if not _names_peer(args.multiaddr):
        print(f"note: {args.multiaddr} names no peer (no /p2p/<peer id>), so whoever "
              f"answered was accepted: peer {peer}", file=sys.stderr, flush=True)
    return peer


def cmd_echo(args: argparse.Namespace) -> int:
    total = args.streams * args.bytes
    with _client_node(args) as node, _progress(args, "echo", total) as progress:
        start = time.monotonic()
        peer = _connect(node, args)
        deadline = start + args.timeout
        control = node.new_control()

        def one_stream(_: int) -> None:
            data = os.urandom(args.bytes)
            echoed = echo_proto.echo_roundtrip(
                control, peer, data, timeout=max(0.001, deadline - time.monotonic()),
                progress=progress.add if progress else None)
            if echoed != data:
                raise CommandFailed(f"echo mismatch: sent {len(data)} bytes, "
                                    f"got {len(echoed)} different bytes back")

        with ThreadPoolExecutor(args.streams) as pool:
            for _ in pool.map(one_stream, range(args.streams)):
                pass
        seconds = time.monotonic() - start
    print(f"OK echo streams={args.streams} bytes={args.bytes} seconds={seconds:.3f} "
          f"mbps={_mbps(total, seconds)}", flush=True)
    return 0


def cmd_ping(args: argparse.Namespace) -> int:
    with _client_node(args) as node:
        peer = _connect(node, args)
        rtts = node.ping(peer, count=args.count, timeout=args.timeout)
    rtt_ms = sum(rtts) / len(rtts) * 1000.0
    print(f"OK ping rtt_ms={rtt_ms:.3f}", flush=True)
    return 0


def cmd_perf(args: argparse.Namespace) -> int:
    with _client_node(args) as node:
        peer = _connect(node, args)
        with _progress(args, "perf", args.upload + args.download) as progress:
            result = node.perf(peer, args.upload, args.download, timeout=args.timeout,
                               progress=progress.update_perf if progress else None)
    moved = result.upload_bytes + result.download_bytes
    print(f"OK perf upload_bytes={result.upload_bytes} "
          f"download_bytes={result.download_bytes} seconds={result.seconds:.3f} "
          f"mbps={_mbps(moved, result.seconds)}", flush=True)
    return 0


def cmd_id(args: argparse.Namespace) -> int:
    with _client_node(args) as node:
        peer = _connect(node, args)
        info = node.wait_identified(peer, timeout=args.timeout)
    protocols = ",".join(sorted(info.protocols))
    print(f"OK id protocols={protocols} agent={info.agent_version}", flush=True)
    return 0


def cmd_peerid(args: argparse.Namespace) -> int:
    keypair = _keypair(args) or Keypair.generate()
    print(f"OK peerid {keypair.peer_id}", flush=True)
    return 0


def _mbps(moved: int, seconds: float) -> str:
    """MB (10^6 bytes) per second, as the OK lines print it."""
    return f"{moved / seconds / 1e6:.2f}" if seconds > 0 else "0.00"


class ProgressReport:
    """Reports ``<label>: <moved> of <total> MB, <rate> MB/s, <seconds> s`` on ``out``.

    A background thread writes a report every ``interval`` seconds from the start;
    :meth:`close` writes the last one. On a terminal each report redraws one line;
    elsewhere each report is a line of its own. :meth:`add` and :meth:`update_perf`
    (the perf client's ``progress`` callback) may be called from any thread.
    """

    def __init__(self, label: str, total: int, out: TextIO,
                 interval: float = PROGRESS_INTERVAL) -> None:
        self.label = label
        self.total = total
        self.moved = 0
        self._out = out
        self._redraw = out.isatty()
        self._interval = interval
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._start = time.monotonic()
        self._thread = threading.Thread(target=self._run, daemon=True, name="progress")
        self._thread.start()

    def add(self, n: int) -> None:
        """Count ``n`` more bytes moved."""
        with self._lock:
            self.moved += n

    def update_perf(self, uploaded: int, downloaded: int) -> None:
        """Set the bytes moved so far from a perf run's counters."""
        with self._lock:
            self.moved = uploaded + downloaded

    def line(self) -> str:
        """The current report, without line ending."""
        seconds = time.monotonic() - self._start
        with self._lock:
            moved = self.moved
        return (f"{self.label}: {moved / 1e6:.1f} of {self.total / 1e6:.1f} MB, "
                f"{_mbps(moved, seconds)} MB/s, {seconds:.1f} s")

    def close(self) -> None:
        """Stop the reporting thread and write the final report."""
        self._stop.set()
        self._thread.join()
        self._write(end="\n")

    def __enter__(self) -> "ProgressReport":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._write(end="" if self._redraw else "\n")

    def _write(self, end: str) -> None:
        start = "\r\x1b[K" if self._redraw else ""
        self._out.write(f"{start}{self.line()}{end}")
        self._out.flush()


def _progress(args: argparse.Namespace, label: str, total: int
              ) -> "ProgressReport | contextlib.nullcontext[None]":
    """A :class:`ProgressReport` on stderr if ``--progress`` or a terminal asks for one."""
    wanted = args.progress if args.progress is not None else sys.stderr.isatty()
    if not wanted:
        return contextlib.nullcontext()
    return ProgressReport(label, total, sys.stderr)


# -- parser ------------------------------------------------------------------------------
def _common(verbose_default: Any) -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("-v", "--verbose", action="store_true", default=verbose_default,
                        help="debug logs on stderr")
    return parent


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every subcommand."""
    parser = argparse.ArgumentParser(
        prog="libp2p-stream", parents=[_common(False)],
        description="libp2p streams from the command line (libp2p_stream_sync).")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = _common(argparse.SUPPRESS)

    def add(name: str, handler: Callable[[argparse.Namespace], int], help: str,
            client: bool = True) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=[common], help=help, description=help)
        p.set_defaults(handler=handler)
        if client:
            p.add_argument("multiaddr",
                           help="peer address, e.g. /ip4/1.2.3.4/tcp/4001/p2p/12D3... "
                                "(without /p2p/ any peer answering there is accepted)")
            p.add_argument("--timeout", type=_positive_float, default=DEFAULT_TIMEOUT,
                           help=f"seconds (default {DEFAULT_TIMEOUT:g})")
        if name != "peerid":
            p.add_argument("--muxer", choices=sorted(_MUXER_CHOICES), default="both",
                           help="stream muxer(s) to offer (default both, yamux first)")
        if name in ("listen", "peerid"):
            p.add_argument("--key-file", metavar="PATH",
                           help="private key file (created with mode 0600 if absent)")
        return p

    listen = add("listen", cmd_listen, "listen and serve echo, ping and identify",
                 client=False)
    listen.add_argument("--listen", action="append", metavar="MULTIADDR",
                        help=f"address to listen on (repeatable; default {DEFAULT_LISTEN})")
    listen.add_argument("--perf", action="store_true", help="also serve /perf/1.0.0")
    listen.add_argument("--relay", action="append", metavar="MULTIADDR",
                        help="reserve a slot on this circuit relay (.../p2p/<id>; "
                             "repeatable) and listen through it (.../p2p-circuit)")
    listen.add_argument("--relay-service", action="store_true",
                        help="serve as a circuit relay v2 (default RelayLimits)")
    listen.add_argument("--max-streams-per-peer", type=_positive_int, metavar="N",
                        help="echo streams one peer may have served at once, and "
                             "waiting (at least 64); further ones are reset, logged at "
                             "WARNING (default: 16 served, 64 waiting)")

    echo = add("echo", cmd_echo, "send random bytes on echo streams and check them")
    echo.add_argument("--bytes", type=parse_size, default=1024, metavar="N",
                      help="bytes per stream (K/M/G suffixes; default 1024)")
    echo.add_argument("--streams", type=_positive_int, default=1, metavar="K",
                      help="concurrent streams (default 1)")
    _add_progress_option(echo)

    ping = add("ping", cmd_ping, "measure round-trip time with /ipfs/ping/1.0.0")
    ping.add_argument("--count", type=_positive_int, default=1, metavar="C",
                      help="round trips (default 1; the mean is printed)")

    perf = add("perf", cmd_perf, "measure throughput with /perf/1.0.0")
    perf.add_argument("--upload", type=parse_size, required=True, metavar="N")
    perf.add_argument("--download", type=parse_size, required=True, metavar="M")
    _add_progress_option(perf)

    add("id", cmd_id, "show a peer's identify protocols and agent version")
    add("peerid", cmd_peerid, "print the peer id of a key file (or of a new key)",
        client=False)
    return parser


def _add_progress_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help="report bytes and MB/s on stderr about once a second "
                             "(default: only when stderr is a terminal)")


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger().setLevel(logging.WARNING)
    logging.getLogger("libp2p_stream_sync").setLevel(
        logging.DEBUG if verbose else logging.WARNING)
    logging.getLogger("multiaddr").setLevel(logging.WARNING)


def _reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, TimeoutError) and "time" not in text.lower():
        text = f"timed out: {text}"
    return " ".join(text.split())


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 1 failure, 2 usage)."""
    args = build_parser().parse_args(argv)
    _setup_logging(bool(getattr(args, "verbose", False)))
    try:
        return args.handler(args)
    except KeyboardInterrupt:
        print("FAIL interrupted", flush=True)
        return 1
    except Exception as exc:  # every failure becomes one FAIL line
        log.debug("command failed", exc_info=True)
        print(f"FAIL {_reason(exc)}", flush=True)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
