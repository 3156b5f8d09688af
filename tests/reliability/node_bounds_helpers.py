"""Helpers for the node-level resource-bound tests: attacker nodes that open
negotiated streams and go silent, hostile identify pushes, honest round trips."""

from __future__ import annotations

import time

from multiaddr import Multiaddr

from libp2p_stream_sync import Keypair, Node, OpenStreamError
from libp2p_stream_sync.protocols import identify
from libp2p_stream_sync.protocols.echo import echo_roundtrip


def open_silent(node: Node, peer: str, protocol: str, count: int,
                timeout: float = 5.0) -> list:
    """Open up to ``count`` streams of ``protocol`` to ``peer`` and send nothing; the
    streams that opened (the node may reset some at once: that is its business)."""
    control = node.new_control()
    streams = []
    for _ in range(count):
        try:
            streams.append(control.open_stream(peer, protocol, timeout=timeout))
        except OpenStreamError:
            pass
    return streams


def timed_echo(node: Node, peer: str, size: int = 1024, timeout: float = 5.0) -> float:
    """One honest echo round trip (fails loudly); the seconds it took."""
    data = bytes(range(256)) * (size // 256)
    start = time.monotonic()
    assert echo_roundtrip(node.new_control(), peer, data, timeout=timeout) == data
    return time.monotonic() - start


def fat_push(keypair: Keypair, addresses: int) -> bytes:
    """An identify push of at most 8 KiB packed with distinct /ip4 addresses."""
    addrs = [Multiaddr(f"/ip4/10.{i >> 8 & 255}.{i & 255}.1").to_bytes()
             for i in range(addresses)]
    return identify.encode_message(public_key=keypair.public_key.to_protobuf(),
                                   listen_addrs=addrs, observed_addr=None, protocols=[],
                                   limit=identify.MAX_RECEIVE_SIZE)


def send_push(node: Node, peer: str, message: bytes) -> bool:
    """Push ``message`` to ``peer``; False when the node refused or reset it."""
    try:
        stream = node.new_control().open_stream(peer, identify.PUSH_PROTOCOL, timeout=5)
        stream.settimeout(5)
        stream.write(message)
        stream.close()
        return True
    except OSError:
        return False
