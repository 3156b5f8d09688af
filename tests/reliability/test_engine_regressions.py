"""Regression tests for engine bugs found by fuzz/run.py."""

from __future__ import annotations

from libp2p_stream_sync.engines import muxer_events as mev
from libp2p_stream_sync.engines import yamux as yx


def _frame(ftype, flags, sid, length, payload=b""):
    return yx.HEADER.pack(0, ftype, flags, sid, length) + payload


def test_yamux_rejects_a_reused_stream_id():
    """fuzz: yamux seed=42 iteration=280. Open 3, data, RST, then SYN 3 again with a
    partial payload, all in one read: the batch had DataReceived(3) events of two
    different streams, so consuming the first one's bytes raised ValueError
    ("consumed 1000 bytes but only 0 are buffered") in the caller."""
    sess = yx.YamuxSession(False)
    wire = (_frame(yx.TYPE_WINDOW_UPDATE, yx.FLAG_SYN, 3, 0)
            + _frame(yx.TYPE_DATA, 0, 3, 1000, b"a" * 1000)
            + _frame(yx.TYPE_DATA, yx.FLAG_RST, 3, 0)
            + _frame(yx.TYPE_WINDOW_UPDATE, yx.FLAG_SYN, 3, 0)
            + _frame(yx.TYPE_DATA, 0, 3, 1000, b"b" * 768))
    events = sess.receive_data(wire)
    assert [type(e) for e in events] == [mev.StreamOpened, mev.DataReceived,
                                         mev.StreamReset, mev.SessionTerminated]
    assert "reuses stream id 3" in events[-1].reason
    assert sess.is_terminated


def test_yamux_accepts_increasing_ids_with_gaps():
    sess = yx.YamuxSession(False)
    events = sess.receive_data(_frame(yx.TYPE_WINDOW_UPDATE, yx.FLAG_SYN, 5, 0)
                               + _frame(yx.TYPE_DATA, yx.FLAG_RST, 5, 0)
                               + _frame(yx.TYPE_WINDOW_UPDATE, yx.FLAG_SYN, 11, 0))
    assert [type(e) for e in events] == [mev.StreamOpened, mev.StreamReset,
                                         mev.StreamOpened]
    assert not sess.is_terminated
