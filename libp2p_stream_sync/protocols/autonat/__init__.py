"""AutoNAT v1 (``/libp2p/autonat/1.0.0``) and v2 (``/libp2p/autonat/2/...``): are
we reachable from the outside?

:class:`AutoNAT` is what the node holds: the clients (always there, they cost nothing
until :meth:`probe` is called; v2 starts accepting dial-back streams on its first
probe) and, when enabled, the servers of both versions, which share one dial-back
rate limit. ``messages``/``v2_messages`` are the pure codecs, ``server``/``client``
and ``v2_server``/``v2_client`` the roles, ``targets`` what both servers may dial.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, Sequence

from ...ipscope import IpScope
from .client import DEFAULT_CONFIRMATIONS, AutoNATClient, Observation, Reachability
from .messages import PROTOCOL
from .server import RATE_WINDOW, AutoNATServer, RateLimiter
from .v2_client import AutoNATv2Client, V2ClientHost
from .v2_messages import DIAL_REQUEST_PROTOCOL
from .v2_server import AutoNATv2Server, V2Host

if TYPE_CHECKING:
    from ...control import PeerLike

__all__ = ["AutoNAT", "Observation", "Reachability", "PROTOCOL"]


class AutoNATHost(V2ClientHost, V2Host, Protocol):
    """What AutoNAT needs of its node: the clients' and the servers' needs."""

    def serve_on_reactor(self, protocol: str, handler: Any) -> None: ...


class AutoNAT:
    """A node's AutoNAT: ``serve`` registers the server (off by default, as in
    go-libp2p: serving makes us dial whoever asks, within rate limits)."""

    def __init__(self, host: AutoNATHost, scope: IpScope, *, serve: bool = False) -> None:
        self.client = AutoNATClient(host, scope)
        self.client_v2 = AutoNATv2Client(host)
        self.client.add_version(2, DIAL_REQUEST_PROTOCOL, self.client_v2.ask)
        self.server: AutoNATServer | None = None
        self.server_v2: AutoNATv2Server | None = None
        if serve:
            limits = host.limits
            rate = RateLimiter(limits.max_autonat_dialbacks_per_peer,
                               limits.max_autonat_dialbacks, RATE_WINDOW)
            self.server = AutoNATServer(host, scope, rate)
            self.server_v2 = AutoNATv2Server(host, scope, rate)
            host.serve_on_reactor(PROTOCOL, self.server.on_stream)
            host.serve_on_reactor(DIAL_REQUEST_PROTOCOL, self.server_v2.on_stream)

    def reachability(self) -> Reachability:
        """The last probe's verdict (``unknown`` before the first)."""
        return self.client.reachability()

    def probe(self, servers: "Sequence[PeerLike] | None" = None,
              timeout: float | None = 30.0,
              confirmations: int = DEFAULT_CONFIRMATIONS, version: int = 1
              ) -> Reachability:
        """Run a probe (:meth:`AutoNATClient.probe`)."""
        return self.client.probe(servers, timeout, confirmations, version)
