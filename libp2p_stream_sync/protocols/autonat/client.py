"""The AutoNAT v1 client: ask several servers to dial us back and turn their answers
into a verdict (:class:`Reachability`).

The addresses we ask about are our listen addresses and, for every IP that peers
observed us at (identify), that IP with each listen address's port and transport:
behind a NAT our listen address is private and only the observed IP can be dialed at
all. An observed IP counts once :data:`MIN_OBSERVERS` distinct peers report it (as
go-libp2p does: one peer alone could steer our probes), or when it is one of our own
(a listen IP, or an IP of this host under a wildcard listener). Only public addresses
(``IpScope``) are asked about.

Verdict (the spec: "more than 3 peers" either way; go- and rust-libp2p settle at a
confidence of 3): ``public`` once ``confirmations`` distinct servers reached us,
``private`` once as many could not and none could, ``unknown`` otherwise (too few
answers, refusals, errors). A server named twice is asked once.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable, Protocol, Sequence

from multiaddr import Multiaddr

from ...errors import DecodeError, UnsupportedProtocol
from ...identity import PeerId
from ...ipscope import IpScope, ip_of, with_ip
from ...timeouts import MAX_UNBOUNDED_WAIT, check_timeout, deadline_after
from ...transport.tcp import peer_id_or_multiaddr
from .messages import PROTOCOL, Status, decode_response, encode_dial
from .streams import read_message

if TYPE_CHECKING:
    from ...control import Control, PeerLike
    from ...stream import Stream
    from ..identify import IdentifyInfo

log = logging.getLogger(__name__)

#: Candidate addresses sent in one request at most.
MAX_CANDIDATES = 16
#: Servers asked in parallel by one probe.
MAX_PARALLEL = 8
#: Default number of agreeing servers a verdict needs.
DEFAULT_CONFIRMATIONS = 3
#: Distinct peers that must report an observed IP before we ask about it.
MIN_OBSERVERS = 2

PUBLIC, PRIVATE, UNKNOWN = "public", "private", "unknown"
REACHABLE, UNREACHABLE, REFUSED, FAILED = "reachable", "unreachable", "refused", "failed"


@dataclass(frozen=True)
class Observation:
    """One server's answer. ``outcome``: ``"reachable"`` (it dialed ``addr``),
    ``"unreachable"`` (``E_DIAL_ERROR``), ``"refused"`` (any other status) or
    ``"failed"`` (no answer: unsupported, timeout, broken stream); ``detail`` says
    more."""

    server: "PeerId | str"
    outcome: str
    addr: Multiaddr | None = None
    detail: str = ""


@dataclass(frozen=True)
class Reachability:
    """A verdict: ``status`` is ``"public"``, ``"private"`` or ``"unknown"``;
    ``reachable_addrs`` the addresses servers reached; ``observations`` every
    server's answer; ``asked`` the candidate addresses sent; ``checked_at`` the
    ``time.time()`` of the probe (None: never probed)."""

    status: str = UNKNOWN
    reachable_addrs: tuple[Multiaddr, ...] = ()
    observations: tuple[Observation, ...] = ()
    asked: tuple[Multiaddr, ...] = ()
    checked_at: float | None = None


class ClientHost(Protocol):
    """What the client needs of its node (public :class:`Node` methods)."""

    peer_id: PeerId

    def direct_listen_addrs(self) -> list[Multiaddr]: ...

    def connected_peers(self) -> list[PeerId]: ...

    def identify_info(self, peer: "PeerId | str") -> "IdentifyInfo | None": ...

    def new_control(self) -> "Control": ...


def server_key(server: "PeerId | str | Multiaddr") -> "PeerId | str":
    """The peer a server names (a PeerId, a peer id string, a multiaddr ending in
    ``/p2p/<id>``), or its text when it names none: servers with one key are one."""
    try:
        target = peer_id_or_multiaddr(server)
        if isinstance(target, PeerId):
            return target
        named = [value for proto, value in target.items() if proto.name in ("p2p", "ipfs")]
        return PeerId.from_string(named[-1]) if named else str(server)
    except Exception:  # malformed: the ask will say so; the multiaddr package raises
        return str(server)  # assorted types


def distinct(servers: Iterable["PeerLike"]) -> list["PeerLike"]:
    """``servers`` in order, without those naming a peer named before (:func:`server_key`)."""
    seen: set = set()
    found = []
    for server in servers:
        key = server_key(server)
        if key not in seen:
            seen.add(key)
            found.append(server)
    return found


def verdict(observations: Sequence[Observation], confirmations: int) -> str:
    """``"public"``, ``"private"`` or ``"unknown"`` (rule in the module docstring)."""
    reached = len({server_key(o.server) for o in observations if o.outcome == REACHABLE})
    failed = len({server_key(o.server) for o in observations if o.outcome == UNREACHABLE})
    if reached >= confirmations:
        return PUBLIC
    if failed >= confirmations and reached == 0:
        return PRIVATE
    return UNKNOWN


def candidate_addrs(listen: Iterable[Multiaddr], observed_ips: Iterable[str],
                    scope: IpScope) -> list[Multiaddr]:
    """Public addresses worth asking about: listen addresses, and each observed IP
    with each listen address of its IP version (at most :data:`MAX_CANDIDATES`)."""
    listen = [ma for ma in listen if ip_of(ma) is not None]
    found: list[Multiaddr] = [ma for ma in listen if scope.is_public(ip_of(ma) or "")]
    for ip in observed_ips:
        if not scope.is_public(ip):
            continue
        version = ipaddress.ip_address(ip).version
        found += [with_ip(ma, ip) for ma in listen
                  if ipaddress.ip_address(ip_of(ma) or "").version == version]
    unique = list(dict.fromkeys(found))
    return unique[:MAX_CANDIDATES]


#: ``ask(server, addrs, deadline) -> Observation``: one request of one version.
Asker = Callable[["PeerLike", Sequence[Multiaddr], float], Observation]


class AutoNATClient:
    """Probes our reachability through AutoNAT servers; keeps the last verdict.
    Version 1 is built in; :meth:`add_version` adds another (v2)."""

    def __init__(self, host: ClientHost, scope: IpScope) -> None:
        self._host = host
        self.scope = scope
        self._last = Reachability()  # replaced whole: readers need no lock
        self._versions: dict[int, tuple[str, Asker]] = {1: (PROTOCOL, self.ask)}

    def add_version(self, version: int, protocol: str, ask: Asker) -> None:
        """Probe with ``version`` by asking servers of ``protocol`` with ``ask``."""
        self._versions[version] = (protocol, ask)

    def reachability(self) -> Reachability:
        """The verdict of the last :meth:`probe` (``unknown`` before the first)."""
        return self._last

    def candidates(self) -> list[Multiaddr]:
        """The addresses a probe would ask about now (module docstring)."""
        reporters: dict[str, set[PeerId]] = {}
        for peer in self._host.connected_peers():
            info = self._host.identify_info(peer)
            ip = ip_of(info.observed_addr) if info and info.observed_addr else None
            if ip is not None:
                reporters.setdefault(ip, set()).add(peer)
        listen = self._host.direct_listen_addrs()
        observed = [ip for ip, peers in reporters.items()
                    if len(peers) >= MIN_OBSERVERS or is_our_ip(ip, listen)]
        return candidate_addrs(listen, observed, self.scope)

    def servers(self, protocol: str = PROTOCOL) -> list[PeerId]:
        """Connected peers that said (identify) they serve ``protocol``."""
        found = []
        for peer in self._host.connected_peers():
            info = self._host.identify_info(peer)
            if info is not None and protocol in info.protocols:
                found.append(peer)
        return found

    def probe(self, servers: "Sequence[PeerLike] | None" = None,
              timeout: float | None = 30.0,
              confirmations: int = DEFAULT_CONFIRMATIONS, version: int = 1
              ) -> Reachability:
        """Ask ``servers`` (default: :meth:`servers` of that ``version``, at most
        :data:`MAX_PARALLEL`) to dial us back, all at once; return and keep the
        verdict. ``version`` 1 (``/libp2p/autonat/1.0.0``) or 2 (AutoNAT v2: each
        server tests one address and proves it with our nonce).

        ``timeout`` bounds the whole probe (``None``: it still ends after
        ``timeouts.MAX_UNBOUNDED_WAIT``). Servers that do not answer in time
        count as ``failed``. ``ValueError`` for ``confirmations`` below 1 or an unknown
        ``version``.
        """
        if confirmations < 1:
            raise ValueError("confirmations must be at least 1")
        if version not in self._versions:
            raise ValueError(f"unknown AutoNAT version {version!r} "
                             f"({' or '.join(map(str, sorted(self._versions)))})")
        protocol, ask = self._versions[version]
        deadline = deadline_after(check_timeout(timeout), cap=MAX_UNBOUNDED_WAIT)
        chosen = distinct(servers) if servers is not None \
            else self.servers(protocol)[:MAX_PARALLEL]
        asked = self.candidates()
        if not chosen or not asked:
            detail = "no AutoNAT server" if not chosen else "no public address to ask about"
            nobody = tuple(Observation(s, FAILED, None, detail) for s in chosen)
            result = Reachability(UNKNOWN, (), nobody, tuple(asked), time.time())
            self._last = result
            return result
        with ThreadPoolExecutor(min(MAX_PARALLEL, len(chosen)),
                                thread_name_prefix="libp2p-autonat") as pool:
            observations = list(pool.map(lambda s: ask(s, asked, deadline), chosen))
        reached = tuple(dict.fromkeys(o.addr for o in observations
                                      if o.outcome == REACHABLE and o.addr is not None))
        result = Reachability(verdict(observations, confirmations), reached,
                              tuple(observations), tuple(asked), time.time())
        log.info("AutoNAT: %s (%s)", result.status,
                 ", ".join(f"{o.server}: {o.outcome}" for o in observations))
        self._last = result
        return result

    def ask(self, server: "PeerLike", addrs: Sequence[Multiaddr],
            deadline: float) -> Observation:
        """Blocking: one request to ``server``; never raises for the server's faults."""
        stream = open_request(self._host, server, PROTOCOL, "AutoNAT", deadline)
        if isinstance(stream, Observation):
            return stream
        peer: Any = stream.peer_id or server
        try:
            stream.settimeout(max(0.001, deadline - time.monotonic()))
            stream.write(encode_dial(self._host.peer_id.to_bytes(),
                                     [ma.to_bytes() for ma in addrs]))
            response = decode_response(read_message(stream, deadline))
        except (OSError, DecodeError) as exc:
            stream.reset()
            return Observation(peer, FAILED, None, f"no answer: {exc}")
        try:
            stream.close()
        except OSError:
            pass  # the answer is in: a lost FIN does not change it
        if response.status == Status.OK:
            reached = _decoded(response.addr)
            # Only an address we asked about is one we know to be ours.
            return Observation(peer, REACHABLE, reached if reached in addrs else None,
                               response.text)
        outcome = UNREACHABLE if response.status == Status.E_DIAL_ERROR else REFUSED
        name = getattr(response.status, "name", str(response.status))
        return Observation(peer, outcome, None, f"{name} {response.text}".strip())


def open_request(host: ClientHost, server: "PeerLike", protocol: str, name: str,
                 deadline: float) -> "Stream | Observation":
    """Blocking: a stream to ``server`` for ``protocol`` (AutoNAT ``name``), or the
    ``failed`` :class:`Observation` saying why there is none."""
    try:
        return host.new_control().open_stream(
            server, protocol, timeout=max(0.001, deadline - time.monotonic()))
    except UnsupportedProtocol:
        return Observation(server, FAILED, None, f"does not serve {name}")
    except (OSError, ValueError) as exc:
        return Observation(server, FAILED, None, f"cannot open a stream: {exc}")


def is_our_ip(ip: str, listen: Iterable[Multiaddr]) -> bool:
    """Whether ``ip`` is one of our listen IPs, or an IP of this host while we listen
    on the wildcard of its version (binding to it succeeds only then)."""
    version = ipaddress.ip_address(ip).version
    listen_ips = [ipaddress.ip_address(found) for found in map(ip_of, listen) if found]
    if ipaddress.ip_address(ip) in listen_ips:
        return True
    if not any(found.is_unspecified and found.version == version for found in listen_ips):
        return False
    family = socket.AF_INET6 if version == 6 else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind((ip, 0))
    except OSError:
        return False
    return True


def _decoded(raw: bytes | None) -> Multiaddr | None:
    if raw is None:
        return None
    try:
        ma = Multiaddr(raw)
        str(ma)
        return ma
    except Exception:  # the multiaddr package raises assorted types
        return None
