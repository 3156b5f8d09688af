"""libp2p_stream_sync: libp2p streams for plain, threaded Python.

The API follows rust-libp2p's ``libp2p-stream`` crate::

    with Node(listen=["/ip4/127.0.0.1/tcp/0"]) as node:
        control = node.new_control()
        with control.accept("/echo/1.0.0") as incoming:
            for peer, stream in incoming:
                ...
"""

__version__ = "0.1.0"

from .control import Control, IncomingStreams, StreamProtocol  # noqa: E402
from .errors import (AlreadyRegistered, DialError, IncompleteReadError,  # noqa: E402
                     OpenStreamError, PeerMismatchError, ProtocolError,
                     UnsupportedProtocol)
from .identity import Keypair, PeerId, PublicKey  # noqa: E402
from .node import Node  # noqa: E402
from .protocols.echo import serve_echo  # noqa: E402
from .protocols.identify import IdentifyInfo  # noqa: E402
from .protocols.perf import PerfResult  # noqa: E402
from .limits import Limits  # noqa: E402
from .stream import Stream  # noqa: E402

__all__ = [
    "AlreadyRegistered", "Control", "DialError", "IdentifyInfo", "IncomingStreams",
    "IncompleteReadError", "Keypair", "Limits", "Node", "OpenStreamError", "PeerId",
    "PeerMismatchError", "PerfResult", "ProtocolError", "PublicKey", "Stream",
    "StreamProtocol", "UnsupportedProtocol", "__version__", "serve_echo",
]
