"""Every test vector of the libp2p peer-ids spec (peer-ids/peer-ids.md).

The key vectors are the spec's hex-encoded protobuf ``PrivateKey``/``PublicKey``
messages; the spec says the public key must be derivable from the private key. The
expected peer ids below were cross-checked against js-libp2p (@libp2p/peer-id 5.1).
"""

import pytest

from libp2p_stream_sync.identity import (
    EcdsaPublicKey,
    Ed25519PublicKey,
    Keypair,
    KeyType,
    PeerId,
    PublicKey,
    RsaPublicKey,
    Secp256k1PublicKey,
)

ED25519_PRIVATE = bytes.fromhex(
    "080112407e0830617c4a7de83925dfb2694556b12936c477a0e1feb2e148ec9da60fee7d1ed1e8fa"
    "e2c4a144b8be8fd4b47bf3d3b34b871c3cacf6010f0e42d474fce27e"
)

ED25519_PUBLIC = bytes.fromhex(
    "080112201ed1e8fae2c4a144b8be8fd4b47bf3d3b34b871c3cacf6010f0e42d474fce27e"
)

SECP256K1_PRIVATE = bytes.fromhex(
    "0802122053dadf1d5a164d6b4acdb15e24aa4c5b1d3461bdbd42abedb0a4404d56ced8fb"
)

SECP256K1_PUBLIC = bytes.fromhex(
    "08021221037777e994e452c21604f91de093ce415f5432f701dd8cd1a7a6fea0e630bfca99"
)

ECDSA_PRIVATE = bytes.fromhex(
    "08031279307702010104203e5b1fe9712e6c314942a750bd67485de3c1efe85b1bfb520ae8f9ae3d"
    "fa4a4ca00a06082a8648ce3d030107a14403420004de3d300fa36ae0e8f5d530899d83abab44abf3"
    "161f162a4bc901d8e6ecda020e8b6d5f8da30525e71d6851510c098e5c47c646a597fb4dcec034e9"
    "f77c409e62"
)

ECDSA_PUBLIC = bytes.fromhex(
    "0803125b3059301306072a8648ce3d020106082a8648ce3d03010703420004de3d300fa36ae0e8f5"
    "d530899d83abab44abf3161f162a4bc901d8e6ecda020e8b6d5f8da30525e71d6851510c098e5c47"
    "c646a597fb4dcec034e9f77c409e62"
)

RSA_PRIVATE = bytes.fromhex(
    "080012ae123082092a0201000282020100e1beab071d08200bde24eef00d049449b07770ff991025"
    "7b2d7d5dda242ce8f0e2f12e1af4b32d9efd2c090f66b0f29986dbb645dae9880089704a94e5066d"
    "594162ae6ee8892e6ec70701db0a6c445c04778eb3de1293aa1a23c3825b85c6620a2bc3f82f9b0c"
    "309bc0ab3aeb1873282bebd3da03c33e76c21e9beb172fd44c9e43be32e2c99827033cf8d0f0c606"
    "f4579326c930eb4e854395ad941256542c793902185153c474bed109d6ff5141ebf9cd256cf58893"
    "a37f83729f97e7cb435ec679d2e33901d27bb35aa0d7e20561da08885ef0abbf8e2fb48d6a548704"
    "7a9ecb1ad41fa7ed84f6e3e8ecd5d98b3982d2a901b4454991766da295ab78822add5612a2df83bc"
    "ee814cf50973e80d7ef38111b1bd87da2ae92438a2c8cbcc70b31ee319939a3b9c761dbc13b5c086"
    "d6b64bf7ae7dacc14622375d92a8ff9af7eb962162bbddebf90acb32adb5e4e4029f1c96019949ec"
    "fbfeffd7ac1e3fbcc6b6168c34be3d5a2e5999fcbb39bba7adbca78eab09b9bc39f7fa4b93411f4c"
    "c175e70c0a083e96bfaefb04a9580b4753c1738a6a760ae1afd851a1a4bdad231cf56e9284d83248"
    "3df215a46c1c21bdf0c6cfe951c18f1ee4078c79c13d63edb6e14feaeffabc90ad317e4875fe6481"
    "01b0864097e998f0ca3025ef9638cd2b0caecd3770ab54a1d9c6ca959b0f5dcbc90caeefc4135bac"
    "a6fd475224269bbe1b02030100010282020100a472ffa858efd8588ce59ee264b957452f3673acdf"
    "5631d7bfd5ba0ef59779c231b0bc838a8b14cae367b6d9ef572c03c7883b0a3c652f5c24c316b1cc"
    "fd979f13d0cd7da20c7d34d9ec32dfdc81ee7292167e706d705efde5b8f3edfcba41409e642f8897"
    "357df5d320d21c43b33600a7ae4e505db957c1afbc189d73f0b5d972d9aaaeeb232ca20eebd5de6f"
    "e7f29d01470354413cc9a0af1154b7af7c1029adcd67c74b4798afeb69e09f2cb387305e73a1b5f4"
    "50202d54f0ef096fe1bde340219a1194d1ac9026e90b366cce0c59b239d10e4888f52ca1780824d3"
    "9ae01a6b9f4dd6059191a7f12b2a3d8db3c2868cd4e5a5862b8b625a4197d52c6ac77710116ebd3c"
    "ed81c4d91ad5fdfbed68312ebce7eea45c1833ca3acf7da2052820eacf5c6b07d086dabeb893391c"
    "71417fd8a4b1829ae2cf60d1749d0e25da19530d889461c21da3492a8dc6ccac7de83ac1c2185262"
    "c7473c8cc42f547cc9864b02a8073b6aa54a037d8c0de3914784e6205e83d97918b944f11b877b12"
    "084c0dd1d36592f8a4f8b8da5bb404c3d2c079b22b6ceabfbcb637c0dbe0201f0909d533f8bf308a"
    "da47aee641a012a494d31b54c974e58b87f140258258bb82f31692659db7aa07e17a5b2a0832c24e"
    "122d3a8babcc9ee74cbb07d3058bb85b15f6f6b2674aba9fd34367be9782d444335fbed31e3c4086"
    "c652597c27104938b47fa10282010100e9fdf843c1550070ca711cb8ff28411466198f0e212511c3"
    "186623890c0071bf6561219682fe7dbdfd81176eba7c4faba21614a20721e0fcd63768e6d925688e"
    "cc90992059ac89256e0524de90bf3d8a052ce6a9f6adafa712f3107a016e20c80255c9e37d8206d1"
    "bc327e06e66eb24288da866b55904fd8b59e6b2ab31bc5eab47e597093c63fab7872102d57b4c589"
    "c66077f534a61f5f65127459a33c91f6db61fc431b1ae90be92b4149a3255291baf94304e3efb77b"
    "1107b5a3bda911359c40a53c347ff9100baf8f36dc5cd991066b5bdc28b39ed644f404afe9213f4d"
    "31c9d4e40f3a5f5e3c39bebeb244e84137544e1a1839c1c8aaebf0c78a7fad590282010100f6fa1f"
    "1e6b803742d5490b7441152f500970f46feb0b73a6e4baba2aaf3c0e245ed852fc31d86a8e46eb48"
    "e90fac409989dfee45238f97e8f1f8e83a136488c1b04b8a7fb695f37b8616307ff8a8d63e8cfa0b"
    "4fb9b9167ffaebabf111aa5a4344afbabd002ae8961c38c02da76a9149abdde93eb389eb32595c29"
    "ba30d8283a7885218a5a9d33f7f01dbdf85f3aad016c071395491338ec318d39220e1c7bd69d3d6b"
    "520a13a30d745c102b827ad9984b0dd6aed73916ffa82a06c1c111e7047dcd2668f988a0570a7147"
    "4992eecf416e068f029ec323d5d635fd24694fc9bf96973c255d26c772a95bf8b7f876547a5beabf"
    "86f06cd21b67994f944e7a5493028201010095b02fd30069e547426a8bea58e8a2816f33688dac6c"
    "6f6974415af8402244a22133baedf34ce499d7036f3f19b38eb00897c18949b0c5a25953c71aeecc"
    "fc8f6594173157cc854bd98f16dffe8f28ca13b77eb43a2730585c49fc3f608cd811bb54b03b84bd"
    "daa8ef910988567f783012266199667a546a18fd88271fbf63a45ae4fd4884706da8befb9117c0a4"
    "d73de5172f8640b1091ed8a4aea3ed4641463f5ff6a5e3401ad7d0c92811f87956d1fd5f9a1d15c7"
    "f3839a08698d9f35f9d966e5000f7cb2655d7b6c4adcd8a9d950ea5f61bb7c9a33c17508f9baa313"
    "eecfee4ae493249ebe05a5d7770bbd3551b2eeb752e3649e0636de08e3d672e66cb90282010100ad"
    "93e4c31072b063fc5ab5fe22afacece775c795d0efdf7c704cfc027bde0d626a7646fc905bb5a801"
    "17e3ca49059af14e0160089f9190065be9bfecf12c3b2145b211c8e89e42dd91c38e9aa23ca73697"
    "063564f6f6aa6590088a738722df056004d18d7bccac62b3bafef6172fc2a4b071ea37f31eff7a07"
    "6bcab7dd144e51a9da8754219352aef2c73478971539fa41de4759285ea626fa3c72e7085be47d55"
    "4d915bbb5149cb6ef835351f231043049cd941506a034bf2f8767f3e1e42ead92f91cb3d75549b57"
    "ef7d56ac39c2d80d67f6a2b4ca192974bfc5060e2dd171217971002193dba12e7e4133ab201f0750"
    "0a90495a38610279b13a48d54f0c99028201003e3a1ac0c2b67d54ed5c4bbe04a7db99103659d33a"
    "4f9d35809e1f60c282e5988dddc964527f3b05e6cc890eab3dcb571d66debf3a5527704c87264b39"
    "54d7265f4e8d2c637dd89b491b9cf23f264801f804b90454d65af0c4c830d1aef76f597ef61b26ca"
    "857ecce9cb78d4f6c2218c00d2975d46c2b013fbf59b750c3b92d8d3ed9e6d1fd0ef1ec091a5c286"
    "a3fe2dead292f40f380065731e2079ebb9f2a7ef2c415ecbb488da98f3a12609ca1b6ec8c734032c"
    "8bd513292ff842c375d4acd1b02dfb206b24cd815f8e2f9d4af8e7dea0370b19c1b23cc531d78b40"
    "e06e1119ee2e08f6f31c6e2e8444c568d13c5d451a291ae0c9f1d4f27d23b3a00d60ad"
)

RSA_PUBLIC = bytes.fromhex(
    "080012a60430820222300d06092a864886f70d01010105000382020f003082020a0282020100e1be"
    "ab071d08200bde24eef00d049449b07770ff9910257b2d7d5dda242ce8f0e2f12e1af4b32d9efd2c"
    "090f66b0f29986dbb645dae9880089704a94e5066d594162ae6ee8892e6ec70701db0a6c445c0477"
    "8eb3de1293aa1a23c3825b85c6620a2bc3f82f9b0c309bc0ab3aeb1873282bebd3da03c33e76c21e"
    "9beb172fd44c9e43be32e2c99827033cf8d0f0c606f4579326c930eb4e854395ad941256542c7939"
    "02185153c474bed109d6ff5141ebf9cd256cf58893a37f83729f97e7cb435ec679d2e33901d27bb3"
    "5aa0d7e20561da08885ef0abbf8e2fb48d6a5487047a9ecb1ad41fa7ed84f6e3e8ecd5d98b3982d2"
    "a901b4454991766da295ab78822add5612a2df83bcee814cf50973e80d7ef38111b1bd87da2ae924"
    "38a2c8cbcc70b31ee319939a3b9c761dbc13b5c086d6b64bf7ae7dacc14622375d92a8ff9af7eb96"
    "2162bbddebf90acb32adb5e4e4029f1c96019949ecfbfeffd7ac1e3fbcc6b6168c34be3d5a2e5999"
    "fcbb39bba7adbca78eab09b9bc39f7fa4b93411f4cc175e70c0a083e96bfaefb04a9580b4753c173"
    "8a6a760ae1afd851a1a4bdad231cf56e9284d832483df215a46c1c21bdf0c6cfe951c18f1ee4078c"
    "79c13d63edb6e14feaeffabc90ad317e4875fe648101b0864097e998f0ca3025ef9638cd2b0caecd"
    "3770ab54a1d9c6ca959b0f5dcbc90caeefc4135baca6fd475224269bbe1b0203010001"
)

KEYS = [
    # (type, private, public, public key class, peer id, CID form)
    (KeyType.ED25519, ED25519_PRIVATE, ED25519_PUBLIC, Ed25519PublicKey,
     "12D3KooWBtg3aaRMjxwedh83aGiUkwSxDwUZkzuJcfaqUmo7R3pq",
     "bafzaajaiaejcahwr5d5ofrfbis4l5d6uwr57hu5tjodrypfm6yaq6dsc2r2pzyt6"),
    (KeyType.SECP256K1, SECP256K1_PRIVATE, SECP256K1_PUBLIC, Secp256k1PublicKey,
     "16Uiu2HAmLhLvBoYaoZfaMUKuibM6ac163GwKY74c5kiSLg5KvLpY",
     "bafzaajiiaijcca3xo7uzjzcsyilaj6i54cj44qk7kqzpoao5rti2pjx6udtdbp6kte"),
    (KeyType.ECDSA, ECDSA_PRIVATE, ECDSA_PUBLIC, EcdsaPublicKey,
     "QmVMT29id3TUASyfZZ6k9hmNyc2nYabCo4uMSpDw4zrgDk",
     "bafzbeidigywdclqvl5hxfefwp5onbffcfife7pza57mmfb4tiqmtkdjw64"),
    (KeyType.RSA, RSA_PRIVATE, RSA_PUBLIC, RsaPublicKey,
     "QmaeANgBs1DTSxWSrPPtobgQuxW8XTfsS4ydbK4rCHzqxG",
     "bafzbeifwzcumbiyql7bhv7fe7mixg6i7aohegq75k234m63bnw6dbicmzu"),
]
IDS = [k[0].name for k in KEYS]


@pytest.fixture(scope="module")
def keypairs():
    return {k[0]: Keypair.from_bytes(k[1]) for k in KEYS}


@pytest.mark.parametrize("key_type,private,public,cls,peer_id,cid_text", KEYS, ids=IDS)
def test_private_key_yields_the_spec_public_key(keypairs, key_type, private, public, cls,
                                                peer_id, cid_text):
    kp = keypairs[key_type]
    assert kp.key_type == key_type
    assert isinstance(kp.public_key, cls)
    assert kp.public_key.to_protobuf() == public


@pytest.mark.parametrize("key_type,private,public,cls,peer_id,cid_text", KEYS, ids=IDS)
def test_private_key_re_encodes_byte_exact(keypairs, key_type, private, public, cls,
                                           peer_id, cid_text):
    assert keypairs[key_type].to_bytes() == private


@pytest.mark.parametrize("key_type,private,public,cls,peer_id,cid_text", KEYS, ids=IDS)
def test_public_key_decodes_and_re_encodes(key_type, private, public, cls, peer_id,
                                           cid_text):
    pk = PublicKey.from_protobuf(public)
    assert type(pk) is cls
    assert pk.key_type == key_type
    assert pk.to_protobuf() == public
    assert pk == PublicKey.from_protobuf(bytearray(public))


@pytest.mark.parametrize("key_type,private,public,cls,peer_id,cid_text", KEYS, ids=IDS)
def test_peer_id_of_spec_keys(keypairs, key_type, private, public, cls, peer_id, cid_text):
    pid = PeerId.from_public_key(PublicKey.from_protobuf(public))
    assert str(pid) == peer_id
    assert pid.to_cid_string() == cid_text
    assert keypairs[key_type].peer_id == pid
    assert PeerId.from_string(peer_id) == pid == PeerId.from_string(cid_text)
    if len(public) <= 42:
        assert pid.to_bytes() == bytes([0, len(public)]) + public
        assert pid.extract_public_key() == PublicKey.from_protobuf(public)
    else:
        assert pid.to_bytes()[:2] == b"\x12\x20"
        assert pid.extract_public_key() is None


@pytest.mark.parametrize("key_type,private,public,cls,peer_id,cid_text", KEYS, ids=IDS)
def test_spec_keys_sign_and_verify(keypairs, key_type, private, public, cls, peer_id,
                                   cid_text):
    pk = PublicKey.from_protobuf(public)
    sig = keypairs[key_type].sign(b"libp2p test vector")
    assert pk.verify(b"libp2p test vector", sig)
    assert not pk.verify(b"libp2p test vectoR", sig)


def test_spec_string_examples():
    # "Peer ID (sha256) encoded as a CID" and the same id as raw base58btc.
    as_cid = PeerId.from_string("bafzbeie5745rpv2m6tjyuugywy4d5ewrqgqqhfnf445he3omzpjbx5xqxe")
    as_b58 = PeerId.from_string("QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N")
    assert as_cid == as_b58
    assert str(as_cid) == "QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N"
    assert as_b58.to_cid_string() == "bafzbeie5745rpv2m6tjyuugywy4d5ewrqgqqhfnf445he3omzpjbx5xqxe"
    assert as_b58.extract_public_key() is None
    # "Peer ID (ed25519, using the identity multihash) encoded as a raw base58btc multihash".
    ed = PeerId.from_string("12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA")
    key = ed.extract_public_key()
    assert isinstance(key, Ed25519PublicKey)
    assert PeerId.from_public_key(key) == ed
    assert str(ed) == "12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA"
    assert ed.to_bytes()[:6] == bytes.fromhex("002408011220")
