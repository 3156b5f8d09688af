"""What a node's connections call up (:class:`~.interfaces.ConnectionOwner`): the
identity and settings, the protocol registry, the muxer factory and the inbound-stream
accounting."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Sequence

from .budget import BufferBudget
from .connection import YAMUX
from .engines.mplex import MplexSession
from .engines.upgrade import SecurityProtocol, prepare_identities
from .engines.yamux import YamuxSession
from .logthrottle import LogThrottle

if TYPE_CHECKING:
    from .conntable import ConnectionTable
    from .identity import Keypair, PeerId
    from .interfaces import Muxer
    from .limits import Limits
    from .reactor import Reactor
    from .registry import ProtocolRegistry

#: The node's parts log under the node's name, as before the split (README "Logging").
log = logging.getLogger("libp2p_stream_sync.node")


class NodeOwner:
    """The node as its connections see it (:class:`~.interfaces.ConnectionOwner`):
    the only calls a connection makes up. Most methods are the protocol registry's;
    this class counts inbound streams per peer and in all (reactor thread only) and
    makes muxer engines."""

    def __init__(self, keypair: "Keypair", limits: "Limits", muxers: Sequence[str],
                 security: Sequence[SecurityProtocol], reactor: "Reactor",
                 registry: "ProtocolRegistry", table: "ConnectionTable") -> None:
        self.keypair = keypair
        self.limits = limits
        self.muxers = tuple(muxers)
        self.security = tuple(security)
        self.security_identities = prepare_identities(keypair, security)
        self.buffer_budget = BufferBudget(limits.max_peer_buffer, limits.max_node_buffer)
        self.reactor = reactor
        self.protocol_supported = registry.supports
        self.supported_protocols = registry.protocols
        self.inbound_stream = registry.deliver
        self.inbound_stream_finished = registry.finished
        self.connection_closed = table.connection_closed
        self._inbound_streams = 0
        self._inbound_streams_by_peer: dict[PeerId, int] = {}
        self._refusals = LogThrottle()

    def make_muxer(self, protocol: str, initiator: bool) -> "Muxer":
        """A new muxer engine for ``protocol`` (yamux or mplex), bounded by the limits."""
        limits = self.limits
        if protocol == YAMUX:
            return YamuxSession(initiator, now=time.monotonic(),
                                max_window=limits.max_stream_buffer,
                                max_streams=limits.max_streams_per_connection,
                                max_pending_inbound=limits.yamux_backlog,
                                keepalive_interval=limits.keepalive_interval,
                                keepalive_timeout=limits.keepalive_timeout,
                                zero_copy=True)  # Noise hands out fresh buffers
        return MplexSession(initiator, max_streams=limits.max_streams_per_connection,
                            max_buffered_per_stream=limits.max_stream_buffer)

    def admit_inbound_stream(self, peer: PeerId) -> bool:
        """Count a new inbound stream of ``peer``; False beyond
        ``Limits.max_inbound_streams_per_peer`` or ``Limits.max_inbound_streams``."""
        limits = self.limits
        mine = self._inbound_streams_by_peer.get(peer, 0)
        if (mine >= limits.max_inbound_streams_per_peer
                or self._inbound_streams >= limits.max_inbound_streams):
            if self._refusals.ready(peer):
                log.warning("resetting new streams from %s: it has %d open, the node %d "
                            "(bounds %d per peer, %d in all)", peer, mine,
                            self._inbound_streams, limits.max_inbound_streams_per_peer,
                            limits.max_inbound_streams)
            return False
        self._inbound_streams_by_peer[peer] = mine + 1
        self._inbound_streams += 1
        return True

    def inbound_stream_gone(self, peer: PeerId) -> None:
        """An inbound stream :meth:`admit_inbound_stream` counted is gone."""
        self._inbound_streams -= 1
        left = self._inbound_streams_by_peer.get(peer, 0) - 1
        if left > 0:
            self._inbound_streams_by_peer[peer] = left
        else:
            self._inbound_streams_by_peer.pop(peer, None)
