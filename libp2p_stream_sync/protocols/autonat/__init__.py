"""AutoNAT v1 (``/libp2p/autonat/1.0.0``): are we reachable from the outside?

:class:`AutoNAT` is what the node holds: the client (always there, it costs nothing
until :meth:`probe` is called) and, when enabled, the server. ``messages`` is the
pure codec, ``server`` and ``client`` the two roles.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, Sequence

from ...ipscope import IpScope
from .client import (DEFAULT_CONFIRMATIONS, AutoNATClient, ClientHost, Observation,
                     Reachability)
from .messages import PROTOCOL
from .server import AutoNATServer, ServerHost

if TYPE_CHECKING:
    from ...control import PeerLike

__all__ = ["AutoNAT", "Observation", "Reachability", "PROTOCOL"]


class AutoNATHost(ClientHost, ServerHost, Protocol):
    """What AutoNAT needs of its node: the client's and the server's needs."""

    def serve_on_reactor(self, protocol: str, handler: Any) -> None: ...


class AutoNAT:
    """A node's AutoNAT: ``serve`` registers the server (off by default, as in
    go-libp2p: serving makes us dial whoever asks, within rate limits)."""

    def __init__(self, host: AutoNATHost, scope: IpScope, *, serve: bool = False) -> None:
        self.client = AutoNATClient(host, scope)
        self.server: AutoNATServer | None = None
        if serve:
            self.server = AutoNATServer(host, scope)
            host.serve_on_reactor(PROTOCOL, self.server.on_stream)

    def reachability(self) -> Reachability:
        """The last probe's verdict (``unknown`` before the first)."""
        return self.client.reachability()

    def probe(self, servers: "Sequence[PeerLike] | None" = None,
              timeout: float | None = 30.0,
              confirmations: int = DEFAULT_CONFIRMATIONS) -> Reachability:
        """Run a probe (:meth:`AutoNATClient.probe`)."""
        return self.client.probe(servers, timeout, confirmations)
