"""``python -m libp2p_stream_sync``: the ``libp2p-stream`` command line."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
