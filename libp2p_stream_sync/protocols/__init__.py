"""Built-in protocols: identify, ping, perf.

:class:`BuiltinProtocols` is mixed into :class:`~libp2p_stream_sync.node.Node`; it
registers the built-in handlers and adds the node methods that use them.
"""

from __future__ import annotations

from . import identify


class BuiltinProtocols:
    """Node methods and handlers for the built-in protocols."""

    def _install_builtins(self, *, enable_perf: bool = False) -> None:
        self._register_internal(identify.PROTOCOL, identify.respond)  # type: ignore[attr-defined]
