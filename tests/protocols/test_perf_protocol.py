"""perf: byte counts both ways, the wire format, and a server that cheats."""

from __future__ import annotations

import struct
import threading

import pytest

from libp2p_stream_sync import UnsupportedProtocol
from libp2p_stream_sync.protocols import perf

import protocol_helpers

connected = protocol_helpers.connected  # fixtures
nodes = protocol_helpers.nodes


@pytest.mark.parametrize("up,down", [(0, 0), (1, 0), (0, 1), (3 << 20, 5 << 20 | 7)])
def test_perf_moves_the_requested_bytes(connected, up, down):
    a, b = connected
    seen = []
    result = b.perf(a.peer_id, up, down, timeout=10,
                    progress=lambda u, d: seen.append((u, d)))
    assert (result.upload_bytes, result.download_bytes) == (up, down)
    assert result.seconds > 0
    if up or down:
        assert seen[-1] == (up, down)


def test_perf_needs_enable_perf(nodes):
    a, b = nodes(), nodes()
    b.dial(f"{a.listen_addrs[0]}/p2p/{a.peer_id}", timeout=5)
    with pytest.raises(UnsupportedProtocol) as info:
        b.perf(a.peer_id, 10, 10, timeout=5)
    assert info.value.protocol == "/perf/1.0.0"


def _fake_server(node, send_extra: int, record: list) -> threading.Thread:
    """A hand-written perf server on the public API: checks the header, cheats on size."""
    incoming = node.new_control().accept(perf.PROTOCOL)

    def run() -> None:
        with incoming:
            _, stream = incoming.get(timeout=5)
            stream.settimeout(5)
            header = stream.read_exactly(8)
            (size,) = struct.unpack(">Q", header)
            record.append((header, len(stream.readall())))
            stream.write(b"\x00" * (size + send_extra))
            stream.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("extra", [-1, 1])
def test_wrong_download_size_is_an_error_and_wire_format_is_big_endian(nodes, extra):
    a, b = nodes(), nodes()
    record: list = []
    thread = _fake_server(a, extra, record)
    with pytest.raises(perf.PerfError, match="asked for 1000 bytes"):
        b.perf(f"{a.listen_addrs[0]}/p2p/{a.peer_id}", 12345, 1000, timeout=5)
    thread.join(5)
    assert record == [(struct.pack(">Q", 1000), 12345)]


def test_negative_sizes_are_rejected(connected):
    a, b = connected
    with pytest.raises(ValueError):
        b.perf(a.peer_id, -1, 0, timeout=5)


def test_perf_times_out(nodes):
    a, b = nodes(), nodes()
    incoming = a.new_control().accept(perf.PROTOCOL)  # accepts but never answers
    with pytest.raises(TimeoutError):
        b.perf(f"{a.listen_addrs[0]}/p2p/{a.peer_id}", 0, 10, timeout=0.5)
    incoming.close()
