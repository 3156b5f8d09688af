"""Regenerate the py-libp2p certificate fixtures (not run by the tests).

Run with the Python of a venv holding py-libp2p 0.8.1 (tests/interop/.py-libp2p-venv):

    tests/interop/.py-libp2p-venv/bin/python tests/engines/data/make_py_libp2p_certs.py

It writes ``py_libp2p_<keytype>.pem``: a certificate made by py-libp2p's own
``libp2p.security.tls.certificate.generate_certificate`` (libp2p extension after
basicConstraints and keyUsage, valid for 100 years), followed by a comment line
``peer-id: <base58>`` naming the host key's peer id as py-libp2p computes it.
"""

import pathlib

from libp2p.crypto.ed25519 import create_new_key_pair as ed25519_pair
from libp2p.crypto.rsa import create_new_key_pair as rsa_pair
from libp2p.crypto.secp256k1 import create_new_key_pair as secp256k1_pair
from libp2p.peer.id import ID
from libp2p.security.tls.certificate import create_cert_template, generate_certificate

HERE = pathlib.Path(__file__).resolve().parent
# py-libp2p 0.8.1 cannot sign with an ECDSA host key (ECCPrivateKey.sign raises
# NotImplementedError), so there is no ECDSA fixture.
PAIRS = {"ed25519": ed25519_pair, "secp256k1": secp256k1_pair, "rsa": rsa_pair}

for name, make in PAIRS.items():
    pair = make()
    cert_pem, _key_pem = generate_certificate(pair.private_key, create_cert_template())
    peer = ID.from_pubkey(pair.public_key).to_base58()
    (HERE / f"py_libp2p_{name}.pem").write_text(cert_pem + f"peer-id: {peer}\n")
    print(name, peer)
