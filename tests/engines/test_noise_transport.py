"""Noise transport frames: byte-exact encryption, splitting, buffering, hostile input."""

import array

import pytest
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from hypothesis import given, settings, strategies as st

from libp2p_stream_sync.engines.noise import (
    MAX_FRAME_PLAINTEXT, DecryptionError, NoiseError, NoiseTransport, NonceExhausted)
from libp2p_stream_sync.engines.noise_state import MAX_NONCE

K1 = bytes(range(32))
K2 = bytes(range(100, 132))


def nonce(n):
    return b"\x00\x00\x00\x00" + n.to_bytes(8, "little")


def pair():
    return NoiseTransport(K1, K2), NoiseTransport(K2, K1)


def frames_of(wire):
    """Split wire bytes into (length, body) frames."""
    out, pos = [], 0
    while pos < len(wire):
        n = int.from_bytes(wire[pos:pos + 2], "big")
        out.append((n, bytes(wire[pos + 2:pos + 2 + n])))
        pos += 2 + n
    assert pos == len(wire)
    return out


def test_frames_are_byte_exact():
    a, _ = pair()
    aead = ChaCha20Poly1305(K1)
    first = a.encrypt(b"hello")
    assert first == b"\x00\x15" + aead.encrypt(bytes(12), b"hello", None)
    # The nonce is 4 zero bytes then the little-endian counter.
    assert a.encrypt(b"world!") == b"\x00\x16" + aead.encrypt(nonce(1), b"world!", None)
    assert a.send_nonce == 2


def test_round_trip_both_ways():
    a, b = pair()
    assert b.receive_data(a.encrypt(b"abc")) == b"abc"
    assert a.receive_data(b.encrypt(bytearray(b"xyz"))) == b"xyz"
    assert b.receive_data(a.encrypt(memoryview(b"--abc--")[2:5])) == b"abc"


def test_non_byte_memoryview_input():
    a, b = pair()
    ints = array.array("I", [1, 2, 3])
    assert b.receive_data(memoryview(a.encrypt(ints)).cast("H")) == ints.tobytes()


@pytest.mark.parametrize("size, lengths", [
    (1, [17]),
    (MAX_FRAME_PLAINTEXT, [65535]),
    (MAX_FRAME_PLAINTEXT + 1, [65535, 17]),
    (2 * MAX_FRAME_PLAINTEXT, [65535, 65535]),
    (3 * MAX_FRAME_PLAINTEXT + 5, [65535, 65535, 65535, 21]),
])
def test_large_writes_split_at_65519(size, lengths):
    a, b = pair()
    data = bytes(i % 251 for i in range(size))
    wire = a.encrypt(data)
    assert [n for n, _ in frames_of(wire)] == lengths
    assert len(wire) == size + 18 * len(lengths)
    aead = ChaCha20Poly1305(K1)
    plain = b"".join(aead.decrypt(nonce(k), body, None) for k, (_, body) in enumerate(frames_of(wire)))
    assert plain == data
    assert b.receive_data(wire) == data
    assert a.send_nonce == b.recv_nonce == len(lengths)


def test_empty_write_sends_nothing():
    a, _ = pair()
    assert a.encrypt(b"") == b""
    assert a.send_nonce == 0


def test_zero_length_frames_are_accepted():
    a, b = pair()
    aead = ChaCha20Poly1305(K1)
    empty = b"\x00\x10" + aead.encrypt(nonce(0), b"", None)
    assert b.receive_data(empty) == b""
    assert b.recv_nonce == 1
    a.send_nonce = 1
    assert b.receive_data(a.encrypt(b"after")) == b"after"


def test_partial_frames_are_buffered():
    a, b = pair()
    wire = a.encrypt(b"x" * 70000) + a.encrypt(b"tail")
    assert b.receive_data(wire[:1]) == b""
    assert b.receive_data(wire[1:65536]) == b""
    assert b.receive_data(wire[65536:65537]) == b"x" * MAX_FRAME_PLAINTEXT
    assert b.receive_data(wire[65537:-3]) == b"x" * (70000 - MAX_FRAME_PLAINTEXT)
    assert b.receive_data(wire[-3:]) == b"tail"
    assert b.receive_data(b"") == b""


@settings(max_examples=60, deadline=None)
@given(st.lists(st.binary(max_size=3000), min_size=1, max_size=8),
       st.lists(st.integers(min_value=1, max_value=4000), min_size=1, max_size=20))
def test_any_split_of_the_stream_round_trips(messages, cuts):
    a, b = pair()
    wire = b"".join(a.encrypt(m) for m in messages)
    got = bytearray()
    pos = 0
    for cut in cuts * (len(wire) // max(1, sum(cuts)) + 1):
        got += b.receive_data(wire[pos:pos + cut])
        pos += cut
        if pos >= len(wire):
            break
    got += b.receive_data(wire[pos:])
    assert got == b"".join(messages)


def test_flipped_bit_raises_and_transport_stays_failed():
    a, b = pair()
    wire = bytearray(a.encrypt(b"important"))
    wire[5] ^= 0x20
    with pytest.raises(DecryptionError):
        b.receive_data(wire)
    with pytest.raises(NoiseError):
        b.receive_data(a.encrypt(b"more"))
    with pytest.raises(NoiseError):
        b.encrypt(b"reply")


def test_flipped_length_prefix_raises():
    a, b = pair()
    wire = bytearray(a.encrypt(b"abc") + a.encrypt(b"defgh"))
    wire[1] += 1  # first frame now claims one byte of the next frame
    with pytest.raises(DecryptionError):
        b.receive_data(wire)


def test_replayed_frame_is_rejected():
    a, b = pair()
    frame = a.encrypt(b"once")
    assert b.receive_data(frame) == b"once"
    with pytest.raises(DecryptionError):
        b.receive_data(frame)


def test_reordered_frames_are_rejected():
    a, b = pair()
    first, second = a.encrypt(b"1"), a.encrypt(b"2")
    with pytest.raises(DecryptionError):
        b.receive_data(second + first)


def test_frame_from_the_wrong_direction_is_rejected():
    a, _ = pair()
    with pytest.raises(DecryptionError):
        a.receive_data(a.encrypt(b"echo"))


@pytest.mark.parametrize("length", [0, 1, 15])
def test_frame_shorter_than_a_tag_is_rejected(length):
    _, b = pair()
    with pytest.raises(DecryptionError):
        b.receive_data(length.to_bytes(2, "big") + bytes(length))
    _, b = pair()
    b.receive_data(b"\x00")  # the same, via the pending-frame path
    with pytest.raises(DecryptionError):
        b.receive_data(bytes([length]))


def test_send_nonce_exhaustion():
    a, b = pair()
    a.send_nonce = b.recv_nonce = MAX_NONCE - 1
    assert b.receive_data(a.encrypt(b"last")) == b"last"
    with pytest.raises(NonceExhausted):
        a.encrypt(b"one too many")
    assert a.send_nonce == MAX_NONCE


def test_multi_frame_write_past_the_last_nonce_encrypts_nothing():
    a, _ = pair()
    a.send_nonce = MAX_NONCE - 1
    with pytest.raises(NonceExhausted):
        a.encrypt(bytes(MAX_FRAME_PLAINTEXT + 1))
    assert a.send_nonce == MAX_NONCE - 1


def test_receive_nonce_exhaustion():
    a, b = pair()
    b.recv_nonce = MAX_NONCE
    with pytest.raises(NonceExhausted):
        b.receive_data(a.encrypt(b"x"))


@settings(max_examples=200)
@given(st.binary(max_size=400), st.integers(min_value=0, max_value=400))
def test_arbitrary_bytes_only_raise_noise_error(data, cut):
    _, b = pair()
    try:
        b.receive_data(data[:cut])
        b.receive_data(data[cut:])
    except NoiseError:
        pass


# -- the zero-copy receive path (get_buffer / buffer_updated) ------------------------------

def feed_via_buffer(transport, data, sizehint=1000):
    """Write ``data`` through get_buffer/buffer_updated as recv_into would."""
    got, pos = bytearray(), 0
    while pos < len(data):
        view = transport.get_buffer(sizehint)
        assert len(view) >= sizehint
        n = min(len(view), sizehint, len(data) - pos)
        view[:n] = data[pos:pos + n]
        del view
        got += transport.buffer_updated(n)
        pos += n
    return got


@pytest.mark.parametrize("sizehint", [1, 7, 65537, 256 * 1024])
def test_buffer_path_round_trips(sizehint):
    a, b = pair()
    messages = [b"a" * 100, b"", bytes(200000), b"z"]
    wire = b"".join(a.encrypt(m) for m in messages)
    assert feed_via_buffer(b, wire, sizehint) == b"".join(messages)
    assert b.recv_nonce == a.send_nonce


@settings(max_examples=60, deadline=None)
@given(st.lists(st.binary(max_size=70000), min_size=1, max_size=5),
       st.lists(st.tuples(st.booleans(), st.integers(min_value=1, max_value=80000)),
                min_size=1, max_size=10))
def test_buffer_path_and_receive_data_interleave(messages, steps):
    a, b = pair()
    wire = b"".join(a.encrypt(m) for m in messages)
    got, pos, k = bytearray(), 0, 0
    while pos < len(wire):
        use_buffer, size = steps[k % len(steps)]
        k += 1
        chunk = wire[pos:pos + size]
        got += feed_via_buffer(b, chunk, size) if use_buffer else b.receive_data(chunk)
        pos += len(chunk)
    assert got == b"".join(messages)


def test_buffer_path_rejects_tampering_and_overflow():
    a, b = pair()
    wire = bytearray(a.encrypt(b"secret"))
    wire[-1] ^= 1
    with pytest.raises(DecryptionError):
        feed_via_buffer(b, wire)
    with pytest.raises(NoiseError):
        b.get_buffer()
    _, c = pair()
    view = c.get_buffer(10)
    with pytest.raises(ValueError):
        c.buffer_updated(len(view) + 1)
