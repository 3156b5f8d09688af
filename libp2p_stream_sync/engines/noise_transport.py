"""The /noise transport: ChaCha20-Poly1305 frames after a completed handshake.

Wire format (libp2p noise spec, "Wire Format"): every Noise transport message is
``uint16_be(len) || ciphertext``, where ``ciphertext`` is the encrypted payload plus
a 16-byte tag and ``len <= 65535``. Each direction has its own key and a nonce
counter that starts at 0 and grows by one per frame.

This is the connection's hot path: each call allocates one output buffer and
encrypts or decrypts every frame straight into it with ``encrypt_into`` /
``decrypt_into`` through memoryviews, so no frame is copied more than once.
"""

from __future__ import annotations

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from .noise_state import (
    MAX_MESSAGE_LEN, MAX_NONCE, TAGLEN, DecryptionError, NoiseError, NonceExhausted, pack_nonce,
)

#: Largest plaintext that fits one frame: 65535 - 16 bytes of tag.
MAX_FRAME_PLAINTEXT = MAX_MESSAGE_LEN - TAGLEN
_OVERHEAD = 2 + TAGLEN  # length prefix + tag, per frame

BytesLike = bytes | bytearray | memoryview


def _byte_view(data: BytesLike) -> memoryview:
    view = memoryview(data)
    return view if view.format == "B" and view.ndim == 1 else view.cast("B")


class NoiseTransport:
    """Encrypts outgoing and decrypts incoming /noise transport frames.

    Obtained from :meth:`.noise.NoiseHandshake.to_transport`. Not thread-safe (the
    reactor owns it). Any :class:`NoiseError` is fatal: the caller must close the
    connection, and further calls keep raising.
    """

    __slots__ = ("_send", "_recv", "send_nonce", "recv_nonce", "_pending", "_failed")

    def __init__(self, send_key: bytes, recv_key: bytes) -> None:
        self._send = ChaCha20Poly1305(send_key)
        self._recv = ChaCha20Poly1305(recv_key)
        #: Nonce of the next frame we encrypt / expect to decrypt.
        self.send_nonce = 0
        self.recv_nonce = 0
        self._pending = bytearray()  # an incomplete incoming frame, < 2 + 65535 bytes
        self._failed: str | None = None

    # -- outgoing ---------------------------------------------------------------

    def encrypt(self, plaintext: BytesLike) -> bytearray:
        """Encrypt ``plaintext`` into length-prefixed frames, ready for the wire.

        Input larger than 65519 bytes is split into several frames. Empty input
        yields an empty result (no frame is sent). Raises :class:`NonceExhausted`
        (before encrypting anything) if the frames would need the reserved nonce.
        """
        self._check_usable()
        src = _byte_view(plaintext)
        total = src.nbytes
        if total == 0:
            return bytearray()
        frames = -(-total // MAX_FRAME_PLAINTEXT)
        nonce = self.send_nonce
        if nonce + frames > MAX_NONCE:
            self._failed = "send nonce space exhausted"
            raise NonceExhausted("Noise send nonce space exhausted; close the connection")
        out = bytearray(total + frames * _OVERHEAD)
        encrypt_into = self._send.encrypt_into
        pos = 0
        with memoryview(out) as dst:
            for start in range(0, total, MAX_FRAME_PLAINTEXT):
                chunk = src[start:start + MAX_FRAME_PLAINTEXT]
                frame_len = len(chunk) + TAGLEN
                out[pos] = frame_len >> 8
                out[pos + 1] = frame_len & 0xFF
                pos += 2
                encrypt_into(pack_nonce(nonce), chunk, None, dst[pos:pos + frame_len])
                pos += frame_len
                nonce += 1
        self.send_nonce = nonce
        return out

    # -- incoming ---------------------------------------------------------------

    def receive_data(self, data: BytesLike) -> bytearray:
        """Feed received bytes; returns the plaintext of every frame completed by them.

        Partial frames are buffered (at most one frame, < 64 KiB). Returns an empty
        bytearray when no frame completed. A frame that fails authentication
        (tampered, replayed, reordered or truncated) raises :class:`DecryptionError`.
        """
        self._check_usable()
        view = _byte_view(data)
        try:
            return self._receive(view)
        except NoiseError as exc:
            self._failed = str(exc)
            raise

    def _receive(self, view: memoryview) -> bytearray:
        head: bytearray | None = None
        pos = 0
        if self._pending:
            pos = self._complete_pending(view)
            if pos < 0:
                return bytearray()
            head, self._pending = self._pending, bytearray()
        # First pass: find the complete frames, so the output is allocated once.
        frames: list[tuple[int, int]] = []
        total = len(head) - 2 - TAGLEN if head is not None else 0
        end = len(view)
        while end - pos >= 2:
            frame_len = (view[pos] << 8) | view[pos + 1]
            if frame_len < TAGLEN:
                raise DecryptionError(f"Noise frame of {frame_len} bytes is shorter than a tag")
            if end - pos - 2 < frame_len:
                break
            frames.append((pos + 2, frame_len))
            total += frame_len - TAGLEN
            pos += 2 + frame_len
        if pos < end:
            self._pending = bytearray(view[pos:])
        if self.recv_nonce + len(frames) + (head is not None) > MAX_NONCE:
            raise NonceExhausted("Noise receive nonce space exhausted; close the connection")
        out = bytearray(total)
        with memoryview(out) as dst:
            at = 0
            if head is not None:
                at = self._decrypt(memoryview(head)[2:], dst, 0)
            for start, frame_len in frames:
                at = self._decrypt(view[start:start + frame_len], dst, at)
        return out

    def _complete_pending(self, view: memoryview) -> int:
        """Move bytes from ``view`` into the pending frame until it is complete.

        Returns how many bytes of ``view`` were used, or -1 if the frame is still
        incomplete (then all of ``view`` was used).
        """
        pending = self._pending
        pos = 0
        if len(pending) < 2:
            pos = min(2 - len(pending), len(view))
            pending += view[:pos]
            if len(pending) < 2:
                return -1
        frame_len = (pending[0] << 8) | pending[1]
        if frame_len < TAGLEN:
            raise DecryptionError(f"Noise frame of {frame_len} bytes is shorter than a tag")
        need = 2 + frame_len - len(pending)
        take = min(need, len(view) - pos)
        pending += view[pos:pos + take]
        return pos + take if take == need else -1

    def _decrypt(self, frame: memoryview, dst: memoryview, at: int) -> int:
        size = len(frame) - TAGLEN
        try:
            self._recv.decrypt_into(pack_nonce(self.recv_nonce), frame, None, dst[at:at + size])
        except InvalidTag as exc:
            raise DecryptionError(
                f"Noise frame {self.recv_nonce} failed authentication "
                "(tampered, replayed or reordered)") from exc
        self.recv_nonce += 1
        return at + size

    def _check_usable(self) -> None:
        if self._failed is not None:
            raise NoiseError(f"Noise transport already failed: {self._failed}")
