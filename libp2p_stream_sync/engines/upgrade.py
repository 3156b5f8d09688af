"""The connection upgrade as a sans-IO engine: raw bytes in, a secure muxed session out.

Three steps, each driven by another engine:

1. multistream-select agrees on a security protocol from a table of
   :class:`SecurityProtocol` entries (:data:`NOISE`, :data:`TLS`);
2. that protocol's handshake runs (the engine shape of ``engines/noise.py``:
   ``data_to_send``, ``receive_data``, ``complete``, ``remote_peer_id``,
   ``selected_muxer``, ``to_transport``);
3. the muxer is agreed: early, inside the handshake (Noise extensions, TLS ALPN), or
   with multistream-select over the secure channel.

The caller writes :meth:`Upgrade.data_to_send` to the wire and feeds what it reads:
raw bytes to :meth:`receive_data` until :attr:`transport` is set, then decrypted bytes
to :meth:`receive_plain` (so that a caller may receive straight into the secure
transport's own buffer). Once :attr:`muxer_protocol` is set the upgrade is done;
:attr:`leftover` holds plaintext that already belongs to the muxer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from ..errors import DialError, ProtocolError
from ..identity import Keypair, PeerId
from .multistream import Agreed, MultistreamDialer, MultistreamListener, NegotiationFailed
from .noise import NoiseHandshake, NoiseIdentity
from .noise import PeerIdMismatch as NoisePeerIdMismatch
from .tls import PROTOCOL_ID as TLS_PROTOCOL_ID
from .tls import PeerIdMismatch as TlsPeerIdMismatch
from .tls import TlsHandshake, TlsIdentity


@dataclass(frozen=True)
class SecurityProtocol:
    """One security protocol: its multistream id and its handshake engine class,
    called as ``make_handshake(keypair, initiator=, expected_peer=, muxers=,
    identity=)``; ``make_identity(keypair)`` builds the per-node state every
    handshake shares (None: the handshake gets ``identity=None``)."""

    protocol_id: str
    make_handshake: Callable[..., Any]
    make_identity: Callable[[Keypair], Any] | None = None


#: The Noise XX handshake of the libp2p noise spec.
NOISE = SecurityProtocol("/noise", NoiseHandshake, NoiseIdentity)
#: libp2p's TLS 1.3 handshake (needs pyOpenSSL, the ``tls`` extra).
TLS = SecurityProtocol(TLS_PROTOCOL_ID, TlsHandshake, TlsIdentity)

#: What a handshake raises when the remote proves another peer id than the one
#: expected (each has ``expected`` and ``actual``).
PEER_MISMATCH_ERRORS: tuple[type[Exception], ...] = (NoisePeerIdMismatch, TlsPeerIdMismatch)


def prepare_identities(keypair: Keypair,
                       security: Sequence[SecurityProtocol]) -> dict[str, Any]:
    """The per-node state of each entry of ``security``, by protocol id (built once
    per node: e.g. Noise signs its static key here)."""
    return {entry.protocol_id: entry.make_identity(keypair)
            for entry in security if entry.make_identity is not None}


class Upgrade:
    """One connection's upgrade, from the first byte to an agreed muxer."""

    def __init__(self, keypair: Keypair, *, initiator: bool,
                 expected_peer: PeerId | None, security: Sequence[SecurityProtocol],
                 muxers: Sequence[str], identities: Mapping[str, Any] | None = None) -> None:
        if not security:
            raise ValueError("at least one security protocol is needed")
        self._keypair = keypair
        self._initiator = initiator
        self._expected_peer = expected_peer
        self._security = {entry.protocol_id: entry for entry in security}
        self._muxers = tuple(muxers)
        self._identities = identities or {}
        self._out: list[Any] = []
        self._handshake: Any = None
        #: The secure transport once the handshake completed (``encrypt``,
        #: ``receive_data``, ``get_buffer``/``buffer_updated``/``trim``).
        self.transport: Any = None
        self.remote_peer_id: PeerId | None = None
        self.security_protocol: str | None = None
        self.muxer_protocol: str | None = None
        #: Plaintext received after the agreement: the muxer's first input.
        self.leftover: Any = b""
        ids = list(self._security)
        self._select: Any = (MultistreamDialer(ids) if initiator
                             else MultistreamListener(self._security.__contains__))
        self._emit(self._select.data_to_send())

    @property
    def complete(self) -> bool:
        """True once the muxer is agreed."""
        return self.muxer_protocol is not None

    def data_to_send(self) -> list[Any]:
        """Take the wire chunks queued so far, in order (ciphertext once secure)."""
        out, self._out = self._out, []
        return out

    def receive_data(self, data: Any) -> None:
        """Bytes read from the wire before :attr:`transport` is set.

        Raises :class:`DialError` when no security protocol is agreed (or, dialing,
        when the remote's first answer is not multistream-select), and the
        handshake's ``ProtocolError`` (e.g. ``PeerIdMismatch``) on bad input."""
        if self._handshake is None:
            self._select_security(data)
        else:
            self._continue_handshake(data)

    def receive_plain(self, plain: Any) -> None:
        """Decrypted bytes once :attr:`transport` is set (muxer selection).

        Raises :class:`DialError` when no common muxer is agreed."""
        if self.complete:
            self.leftover = bytes(self.leftover) + bytes(plain)
            return
        try:
            result = self._select.receive_data(plain)
        except NegotiationFailed as exc:
            raise DialError("no common stream muxer") from exc
        self._emit_secure(self._select.data_to_send())
        if isinstance(result, Agreed):
            self._select = None
            self.muxer_protocol = result.protocol
            self.leftover = result.leftover

    # -- steps ------------------------------------------------------------------------
    def _select_security(self, data: Any) -> None:
        try:
            result = self._select.receive_data(data)
        except NegotiationFailed as exc:
            names = ", ".join(self._security)
            raise DialError(f"remote does not support {names}") from exc
        except ProtocolError as exc:
            if not self._initiator:
                raise
            # The remote's very first bytes: most likely another protocol (HTTP, SSH...).
            raise DialError(f"the remote is not a libp2p node? it did not answer "
                            f"multistream-select: {exc}") from exc
        self._emit(self._select.data_to_send())
        if isinstance(result, Agreed):
            self._select = None
            self.security_protocol = result.protocol
            entry = self._security[result.protocol]
            self._handshake = entry.make_handshake(
                self._keypair, initiator=self._initiator,
                expected_peer=self._expected_peer, muxers=self._muxers,
                identity=self._identities.get(result.protocol))
            self._emit(self._handshake.data_to_send())
            if result.leftover:
                self._continue_handshake(result.leftover)

    def _continue_handshake(self, data: Any) -> None:
        hs = self._handshake
        hs.receive_data(data)
        self._emit(hs.data_to_send())
        if not hs.complete:
            return
        self.remote_peer_id = hs.remote_peer_id
        transport, leftover = hs.to_transport()
        self.transport = transport
        muxer = hs.selected_muxer()
        if muxer is not None:
            self.muxer_protocol = muxer
        elif self._initiator:
            self._select = MultistreamDialer(list(self._muxers))
        else:
            self._select = MultistreamListener(self._muxers.__contains__)
        if self._select is not None:
            self._emit_secure(self._select.data_to_send())
        if leftover:
            plain = transport.receive_data(leftover)
            if plain:
                self.receive_plain(plain)

    def _emit(self, data: Any) -> None:
        if data:
            self._out.append(data)

    def _emit_secure(self, data: Any) -> None:
        if data:
            self._out.append(self.transport.encrypt(data))
