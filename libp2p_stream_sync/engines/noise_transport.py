"""The /noise transport: ChaCha20-Poly1305 frames after a completed handshake.

Wire format (libp2p noise spec, "Wire Format"): every Noise transport message is
``uint16_be(len) || ciphertext``, where ``ciphertext`` is the encrypted payload plus
a 16-byte tag and ``len <= 65535``. Each direction has its own key and a nonce
counter that starts at 0 and grows by one per frame.

This is the connection's hot path: each call allocates one output buffer and
encrypts or decrypts every frame straight into it with ``encrypt_into`` /
``decrypt_into`` through memoryviews; complete frames in the input are never
copied. Only a frame split across two reads is copied, once; the
``get_buffer``/``buffer_updated`` pair (for ``sock.recv_into``) avoids even that
by letting the next read land right behind the partial frame.
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
#: Default size of the buffer :meth:`NoiseTransport.get_buffer` hands out.
DEFAULT_RECV_BUFFER = 256 * 1024

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

    __slots__ = ("_send", "_recv", "send_nonce", "recv_nonce", "_rbuf", "_rstart", "_rend",
                 "_failed")

    def __init__(self, send_key: bytes, recv_key: bytes) -> None:
        self._send = ChaCha20Poly1305(send_key)
        self._recv = ChaCha20Poly1305(recv_key)
        #: Nonce of the next frame we encrypt / expect to decrypt.
        self.send_nonce = 0
        self.recv_nonce = 0
        # Received bytes not yet decrypted live in _rbuf[_rstart:_rend]: between calls
        # that is at most one partial frame (< 2 + 65535 bytes).
        self._rbuf = bytearray()
        self._rstart = 0
        self._rend = 0
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

    def receive_data(self, data: BytesLike) -> bytes | bytearray:
        """Feed received bytes; returns the plaintext of every frame completed by them.

        A partial frame at the end is copied and kept (at most one frame, < 64 KiB).
        Returns ``b""`` when no frame completed. A frame that fails authentication
        (tampered, replayed, reordered or truncated) raises :class:`DecryptionError`.
        """
        self._check_usable()
        view = _byte_view(data)
        try:
            return self._receive(view)
        except NoiseError as exc:
            self._failed = str(exc)
            raise

    def get_buffer(self, sizehint: int = DEFAULT_RECV_BUFFER) -> memoryview:
        """A writable buffer of at least ``sizehint`` bytes to receive into (zero-copy path).

        The asyncio ``BufferedProtocol`` pattern: ``n = sock.recv_into(t.get_buffer())``,
        then ``t.buffer_updated(n)``. Bytes land right behind any buffered partial
        frame, so frames split across reads are not copied again. Drop the view
        before the next call.
        """
        self._check_usable()
        self._reserve(max(sizehint, 1))
        return memoryview(self._rbuf)[self._rend:]

    def buffer_updated(self, nbytes: int) -> bytes | bytearray:
        """``nbytes`` were written at the start of the last :meth:`get_buffer` view.

        Returns the plaintext of every frame now complete, like :meth:`receive_data`.
        """
        self._check_usable()
        if not 0 <= nbytes <= len(self._rbuf) - self._rend:
            raise ValueError(f"buffer_updated({nbytes}) exceeds the buffer handed out")
        self._rend += nbytes
        view = memoryview(self._rbuf)
        frames: list[memoryview] = []
        try:
            pos, total = self._scan(view, self._rstart, self._rend, frames)
            self._rstart = pos
            plaintext = self._decrypt_all(frames, total)
        except NoiseError as exc:
            self._failed = str(exc)
            raise
        finally:
            del frames
            view.release()
        if self._rstart == self._rend:
            self._rstart = self._rend = 0
        return plaintext

    def _receive(self, view: memoryview) -> bytes | bytearray:
        frames: list[memoryview] = []  # ciphertexts (without length prefix) of complete frames
        total = 0  # their plaintext size
        pos = 0
        if self._rend > self._rstart:
            pos = self._complete_pending(view)
            if pos < 0:
                return b""
            buffered = memoryview(self._rbuf)
            _, total = self._scan(buffered, self._rstart, self._rend, frames)
        pos, more = self._scan(view, pos, len(view), frames)
        plaintext = self._decrypt_all(frames, total + more)
        del frames
        self._rstart = self._rend = 0  # the buffered frame, if any, was consumed
        if pos < len(view):
            self._keep(view[pos:])
        return plaintext

    @staticmethod
    def _scan(view: memoryview, pos: int, end: int, frames: list[memoryview]) -> tuple[int, int]:
        """Append every complete frame of ``view[pos:end]`` to ``frames``.

        Returns the position after the last complete frame and their plaintext size.
        """
        total = 0
        while end - pos >= 2:
            frame_len = (view[pos] << 8) | view[pos + 1]
            if frame_len < TAGLEN:
                raise DecryptionError(f"Noise frame of {frame_len} bytes is shorter than a tag")
            if end - pos - 2 < frame_len:
                break
            frames.append(view[pos + 2:pos + 2 + frame_len])
            total += frame_len - TAGLEN
            pos += 2 + frame_len
        return pos, total

    def _decrypt_all(self, frames: list[memoryview], total: int) -> bytes | bytearray:
        if not frames:
            return b""
        if self.recv_nonce + len(frames) > MAX_NONCE:
            raise NonceExhausted("Noise receive nonce space exhausted; close the connection")
        if len(frames) == 1:
            # decrypt() returns fresh bytes without the zero-fill of bytearray(total).
            return self._decrypt_one(frames[0])
        out = bytearray(total)
        with memoryview(out) as dst:
            at = 0
            for frame in frames:
                at = self._decrypt_into(frame, dst, at)
        return out

    def _complete_pending(self, view: memoryview) -> int:
        """Copy bytes from ``view`` behind the buffered partial frame until it is complete.

        Returns how many bytes of ``view`` were used, or -1 if the frame is still
        incomplete (then all of ``view`` was used).
        """
        self._reserve(2 + MAX_MESSAGE_LEN)
        pos = 0
        if self._rend - self._rstart < 2:
            pos = self._append(view, 0, 2 - (self._rend - self._rstart))
            if self._rend - self._rstart < 2:
                return -1
        buf = self._rbuf
        frame_len = (buf[self._rstart] << 8) | buf[self._rstart + 1]
        if frame_len < TAGLEN:
            raise DecryptionError(f"Noise frame of {frame_len} bytes is shorter than a tag")
        need = self._rstart + 2 + frame_len - self._rend
        taken = self._append(view, pos, need)
        return taken if taken - pos == need else -1

    def _append(self, view: memoryview, pos: int, count: int) -> int:
        """Copy up to ``count`` bytes of ``view[pos:]`` to the buffer end; returns the new pos."""
        take = min(count, len(view) - pos)
        self._rbuf[self._rend:self._rend + take] = view[pos:pos + take]
        self._rend += take
        return pos + take

    def _keep(self, rest: memoryview) -> None:
        """Buffer the partial frame ``rest`` (the buffer is empty)."""
        if len(self._rbuf) < len(rest):
            self._rbuf = bytearray(max(len(rest), 2 + MAX_MESSAGE_LEN))
        self._rbuf[:len(rest)] = rest
        self._rend = len(rest)

    def trim(self, keep: int) -> None:
        """Drop the receive buffer when it holds no partial frame and is over ``2 * keep``.

        An idle connection then costs no receive buffer; the next :meth:`get_buffer`
        allocates what it asks for.
        """
        if self._rstart == self._rend and len(self._rbuf) > 2 * keep:
            self._rbuf = bytearray()
            self._rstart = self._rend = 0

    def _reserve(self, free: int) -> None:
        """Make room for ``free`` bytes after the buffered data, moving it to the front."""
        pending = self._rend - self._rstart
        if len(self._rbuf) - self._rend >= free:
            return
        if len(self._rbuf) >= pending + free:
            # Same-size slice assignment: never resizes, so live views stay valid.
            self._rbuf[:pending] = self._rbuf[self._rstart:self._rend]
        else:
            # A new buffer rather than a resize, which a caller's leftover view would block.
            grown = bytearray(pending + free)
            grown[:pending] = self._rbuf[self._rstart:self._rend]
            self._rbuf = grown
        self._rstart, self._rend = 0, pending

    def _decrypt_one(self, frame: memoryview) -> bytes:
        try:
            plaintext = self._recv.decrypt(pack_nonce(self.recv_nonce), frame, None)
        except InvalidTag as exc:
            raise self._auth_failure() from exc
        self.recv_nonce += 1
        return plaintext

    def _decrypt_into(self, frame: memoryview, dst: memoryview, at: int) -> int:
        size = len(frame) - TAGLEN
        try:
            self._recv.decrypt_into(pack_nonce(self.recv_nonce), frame, None, dst[at:at + size])
        except InvalidTag as exc:
            raise self._auth_failure() from exc
        self.recv_nonce += 1
        return at + size

    def _auth_failure(self) -> DecryptionError:
        return DecryptionError(f"Noise frame {self.recv_nonce} failed authentication "
                               "(tampered, replayed or reordered)")

    def _check_usable(self) -> None:
        if self._failed is not None:
            raise NoiseError(f"Noise transport already failed: {self._failed}")
