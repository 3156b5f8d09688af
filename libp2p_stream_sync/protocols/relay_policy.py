"""When a node holds its relay slots: ``Node(relays=[...], reserve=...)``.

* ``"always"`` (the default): reserve on every relay at start and keep the slots
  (:meth:`RelayClient.keep_trying`).
* ``"when-private"``: on a worker, right after start and then every
  :data:`PROBE_INTERVAL` seconds, ask AutoNAT (v1, then v2 when v1 gave no verdict)
  whether we can be dialed, with the relays and the connected peers that serve AutoNAT
  as servers. Private, or no public address of ours to ask about at all (then nobody
  outside can dial us directly): reserve on the relays not held yet. Public: release
  the slots. Unknown: leave them as they are.
"""

from __future__ import annotations

import logging
from typing import Any, Iterable, Protocol, Sequence

from multiaddr import Multiaddr

from ..control import PeerLike
from ..errors import ProtocolError
from ..identity import PeerId
from .autonat.client import PRIVATE, PUBLIC, Reachability
from .autonat.messages import PROTOCOL as AUTONAT_V1
from .autonat.v2_messages import DIAL_REQUEST_PROTOCOL as AUTONAT_V2

log = logging.getLogger(__name__)

#: The values ``Node(reserve=...)`` takes.
RESERVE_MODES = ("always", "when-private")
#: Seconds between two reachability probes of a ``"when-private"`` node.
PROBE_INTERVAL = 300.0
#: Seconds one probe (one AutoNAT version) may take.
PROBE_TIMEOUT = 30.0
#: Servers whose answers make a verdict (fewer when fewer are known).
CONFIRMATIONS = 3


class PolicyHost(Protocol):
    """What the policy needs of its node (public ``Node`` methods)."""

    relay_client: Any

    @property
    def reactor(self) -> Any: ...

    @property
    def closed(self) -> bool: ...

    def connected_peers(self) -> list[PeerId]: ...

    def peer_protocols(self, peer: PeerId) -> list[str]: ...

    def run_in_worker(self, fn: Any, *args: Any, peer: PeerId | None = None) -> Any: ...

    def probe_reachability(self, servers: Sequence[PeerLike] | None, timeout: float | None,
                           confirmations: int, version: int) -> Reachability: ...


def needs_relay(verdict: Reachability) -> bool | None:
    """True: reserve (private, or no public address to ask about); False: release
    (public); None: no verdict, keep what we hold."""
    if verdict.status == PUBLIC:
        return False
    if verdict.status == PRIVATE or not verdict.asked:
        return True
    return None


class RelayPolicy:
    """Holds the node's ``relays=`` slots as its ``reserve`` mode says (module doc)."""

    def __init__(self, host: PolicyHost, mode: str, relays: Iterable[Multiaddr]) -> None:
        """``relays`` as :meth:`RelayClient.checked_relays` returns them; ValueError for
        a ``mode`` not in :data:`RESERVE_MODES`."""
        if mode not in RESERVE_MODES:
            raise ValueError(f"reserve must be one of {RESERVE_MODES}, not {mode!r}")
        self._host, self.mode, self.relays = host, mode, list(relays)
        #: Seconds between probes (``"when-private"``).
        self.interval = PROBE_INTERVAL

    def start(self) -> None:
        """Begin: reserve now (``"always"``) or probe now and then (``"when-private"``)."""
        if self.mode == "always":
            self._host.relay_client.keep_trying_all(self.relays)
        elif self.relays:
            self._host.reactor.call_soon(self._schedule)

    def _schedule(self) -> None:
        """Reactor: run one probe on a worker (later again when the pool is full)."""
        if not self._host.closed and self._host.run_in_worker(self._round) is None:
            self._host.reactor.call_later(self.interval, self._schedule)

    def _round(self) -> None:
        """Worker: probe, act on the verdict, and schedule the next round."""
        try:
            if not self._host.closed:
                self.apply(needs_relay(self.probe()))
        finally:
            if not self._host.closed:
                self._host.reactor.call_later(self.interval, self._schedule)

    def probe(self) -> Reachability:
        """Blocking: the AutoNAT verdict, asking the relays and the connected peers that
        serve AutoNAT (v1 first, v2 when v1 has no verdict)."""
        servers: list[PeerLike] = list(self.relays)
        relay_ids = {_relay_id(relay) for relay in self.relays}
        for version, protocol in ((1, AUTONAT_V1), (2, AUTONAT_V2)):
            peers = [p for p in self._host.connected_peers()
                     if p not in relay_ids and protocol in self._host.peer_protocols(p)]
            asked = servers + peers
            verdict = self._host.probe_reachability(
                asked, PROBE_TIMEOUT, min(CONFIRMATIONS, len(asked)), version)
            if needs_relay(verdict) is not None:
                return verdict
        return verdict

    def apply(self, need: bool | None) -> None:
        """Blocking: reserve on the relays not held (``need``), or release the held ones
        (``need is False``); a relay that refuses is logged and asked next round."""
        client = self._host.relay_client
        held = {r.relay for r in client.reservations()}
        for relay in self.relays:
            relay_id = _relay_id(relay)
            if need and relay_id not in held:
                try:
                    client.reserve(relay, keep=True)
                except (OSError, ValueError, ProtocolError) as exc:
                    log.warning("relay %s: no reservation (%s)", relay, exc)
            elif need is False and relay_id in held:
                client.release(relay_id)


def _relay_id(relay: Multiaddr) -> PeerId:
    """The peer a checked relay address names (its ``/p2p/`` part)."""
    return PeerId.from_string(relay.value_for_protocol("p2p"))
