"""libp2p_stream_sync: libp2p streams for plain, threaded Python."""

__version__ = "0.1.0"
