"""libp2p_stream_sync: libp2p streams for plain, threaded Python.

The API follows rust-libp2p's ``libp2p-stream`` crate::

    with Node(listen=["/ip4/127.0.0.1/tcp/0"]) as node:
        control = node.new_control()
        with control.accept("/echo/1.0.0") as incoming:
            for peer, stream in incoming:
                ...
"""

from ._version import __version__
from .control import Control, IncomingStreams, StreamProtocol
from .errors import (AlreadyRegistered, DialError, IncompleteReadError,
                     OpenStreamError, PeerMismatchError, ProtocolError,
                     UnsupportedProtocol)
from .identity import Keypair, PeerId, PublicKey
from .node import Node
from .protocols.autonat import Observation, Reachability
from .protocols.echo import serve_echo
from .protocols.identify import IdentifyInfo
from .protocols.perf import PerfResult
from .limits import Limits, RelayLimits
from .stream import Stream
from .transport.circuit import RelayRefused

__all__ = [
    "AlreadyRegistered", "Control", "DialError", "IdentifyInfo", "IncomingStreams",
    "IncompleteReadError", "Keypair", "Limits", "Node", "Observation", "OpenStreamError",
    "PeerId", "PeerMismatchError", "PerfResult", "ProtocolError", "PublicKey",
    "Reachability", "RelayLimits", "RelayRefused", "Stream",
    "StreamProtocol", "UnsupportedProtocol", "__version__", "serve_echo",
]
