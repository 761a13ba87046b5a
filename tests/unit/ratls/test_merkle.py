"""The receipt log's Merkle tree (RFC 9162 2.1): the published CT test vectors, agreement with a
reference written here from the RFC's definitions for every tree up to 70 leaves, and mutations of
proofs, leaves, roots, indices and sizes that must fail with the named check."""

from __future__ import annotations

import hashlib

import pytest

from ratls.errors import ConsistencyProofError, InclusionProofError, MerkleTreeError
from ratls.merkle import (
    EMPTY_ROOT,
    MerkleTree,
    consistency_proof,
    consistency_proof_length,
    inclusion_proof,
    inclusion_proof_length,
    leaf_hash,
    node_hash,
    root_hash,
)
from ratls.merkle_verify import verify_consistency, verify_inclusion

# --- Reference: MTH, PATH and PROOF as RFC 9162 2.1.1, 2.1.3.1 and 2.1.4.1 write them, on lists
# of leaf inputs, sharing nothing with the product (own hashing, own split, slices). ---


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def ref_split(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def ref_mth(d: list[bytes]) -> bytes:
    if not d:
        return sha256(b"")
    if len(d) == 1:
        return sha256(b"\x00" + d[0])
    k = ref_split(len(d))
    return sha256(b"\x01" + ref_mth(d[:k]) + ref_mth(d[k:]))


def ref_path(m: int, d: list[bytes]) -> list[bytes]:
    if len(d) == 1:
        return []
    k = ref_split(len(d))
    if m < k:
        return [*ref_path(m, d[:k]), ref_mth(d[k:])]
    return [*ref_path(m - k, d[k:]), ref_mth(d[:k])]


def ref_subproof(m: int, d: list[bytes], b: bool) -> list[bytes]:
    if m == len(d):
        return [] if b else [ref_mth(d)]
    k = ref_split(len(d))
    if m <= k:
        return [*ref_subproof(m, d[:k], b), ref_mth(d[k:])]
    return [*ref_subproof(m - k, d[k:], False), ref_mth(d[:k])]


def entries(n: int) -> list[bytes]:
    return [f"receipt {i}".encode() for i in range(n)]


def ref_leaves(d: list[bytes]) -> list[bytes]:
    return [sha256(b"\x00" + entry) for entry in d]


# --- Vectors: the RFC 6962 / 9162 SHA-256 test data of transparency-dev/merkle (Apache-2.0):
# leaf inputs and roots from testonly/constants.go @ 582a6ad190b6848f1d26f8bf08ddef29955d9db1,
# proofs from proof/verify_test.go @ 02194e9afb6c1d95b5381350007963aa70fff472 (there leaf numbers
# count from 1; here indices count from 0). The same roots are in Chromium's
# net/cert/ct_log_verifier_unittest.cc and in google/certificate-transparency. ---

VECTOR_ENTRIES = [bytes.fromhex(h) for h in (
    "", "00", "10", "2021", "3031", "40414243", "5051525354555657",
    "606162636465666768696a6b6c6d6e6f",
)]
VECTOR_ROOTS = [bytes.fromhex(h) for h in (
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
)]
# (index, tree size, PATH)
VECTOR_INCLUSION = [
    (0, 1, ()),
    (0, 8, ("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4")),
    (5, 8, ("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7")),
    (2, 3, ("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",)),
    (1, 5, ("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b")),
]
# (first size, second size, PROOF)
VECTOR_CONSISTENCY = [
    (1, 1, ()),
    (1, 8, ("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4")),
    (6, 8, ("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7")),
    (2, 5, ("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b")),
    (6, 7, ("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7")),
]
VECTOR_LEAVES = [leaf_hash(entry) for entry in VECTOR_ENTRIES]


def hexes(nodes: tuple[str, ...]) -> tuple[bytes, ...]:
    return tuple(bytes.fromhex(h) for h in nodes)


def flipped(value: bytes, bit: int) -> bytes:
    out = bytearray(value)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


# --- 1. Vectors and the reference ---


def test_hashes_are_the_rfc_ones() -> None:
    assert EMPTY_ROOT == VECTOR_ROOTS[0] == hashlib.sha256(b"").digest()
    assert leaf_hash(b"") == VECTOR_ROOTS[1]
    assert node_hash(VECTOR_LEAVES[0], VECTOR_LEAVES[1]) == VECTOR_ROOTS[2]


@pytest.mark.parametrize("size", range(len(VECTOR_ROOTS)))
def test_vector_roots(size: int) -> None:
    assert root_hash(VECTOR_LEAVES[:size]) == VECTOR_ROOTS[size]
    assert MerkleTree(VECTOR_LEAVES[:size]).root() == VECTOR_ROOTS[size]
    assert MerkleTree(VECTOR_LEAVES).root(size) == VECTOR_ROOTS[size]


@pytest.mark.parametrize(("index", "size", "path"), VECTOR_INCLUSION)
def test_vector_inclusion_proofs(index: int, size: int, path: tuple[str, ...]) -> None:
    assert inclusion_proof(VECTOR_LEAVES[:size], index) == hexes(path)
    assert MerkleTree(VECTOR_LEAVES).inclusion_proof(index, size) == hexes(path)
    verify_inclusion(VECTOR_LEAVES[index], index, size, hexes(path), VECTOR_ROOTS[size])


@pytest.mark.parametrize(("first", "second", "path"), VECTOR_CONSISTENCY)
def test_vector_consistency_proofs(first: int, second: int, path: tuple[str, ...]) -> None:
    assert consistency_proof(VECTOR_LEAVES[:second], first) == hexes(path)
    assert MerkleTree(VECTOR_LEAVES).consistency_proof(first, second) == hexes(path)
    verify_consistency(first, second, VECTOR_ROOTS[first], VECTOR_ROOTS[second], hexes(path))


@pytest.mark.parametrize("size", range(71))
def test_agrees_with_the_reference(size: int) -> None:
    d = entries(size)
    leaves = ref_leaves(d)
    assert [leaf_hash(entry) for entry in d] == leaves
    tree = MerkleTree(leaves)
    root = ref_mth(d)
    assert root_hash(leaves) == tree.root() == root
    for index in range(size):
        path = tuple(ref_path(index, d))
        assert inclusion_proof(leaves, index) == tree.inclusion_proof(index) == path
        assert inclusion_proof_length(index, size) == len(path)
        verify_inclusion(leaves[index], index, size, path, root)
    for first in range(1, size + 1):
        proof = tuple(ref_subproof(first, d, True))
        assert consistency_proof(leaves, first) == tree.consistency_proof(first) == proof
        assert consistency_proof_length(first, size) == len(proof)
        verify_consistency(first, size, ref_mth(d[:first]), root, proof)
    assert consistency_proof(leaves, 0) == ()
    verify_consistency(0, size, EMPTY_ROOT, root, ())


# --- 2. Mutations: each must fail with the error class and the check that names the cause ---

SIZES = (1, 2, 3, 7, 8, 13, 64, 70)
LEAVES = ref_leaves(entries(max(SIZES)))
TREE = MerkleTree(LEAVES)
INCLUSION_CASES = [(i, n) for n in SIZES for i in sorted({0, 1 % n, n // 2, n - 2 if n > 1 else 0,
                                                            n - 1})]
CONSISTENCY_CASES = [(m, n) for n in SIZES for m in sorted({1, 2, n // 2, n - 1}) if 0 < m < n]


def inclusion_error(leaf: bytes, index: int, size: int, path: tuple[bytes, ...], root: bytes,
                    ) -> InclusionProofError:
    with pytest.raises(InclusionProofError) as caught:
        verify_inclusion(leaf, index, size, path, root)
    return caught.value


def consistency_error(first: int, second: int, first_root: bytes, second_root: bytes,
                      path: tuple[bytes, ...]) -> ConsistencyProofError:
    with pytest.raises(ConsistencyProofError) as caught:
        verify_consistency(first, second, first_root, second_root, path)
    return caught.value


@pytest.mark.parametrize(("index", "size"), INCLUSION_CASES)
def test_inclusion_every_flipped_bit_fails_at_the_root(index: int, size: int) -> None:
    path, root, leaf = TREE.inclusion_proof(index, size), TREE.root(size), LEAVES[index]
    for bit in range(256):
        error = inclusion_error(flipped(leaf, bit), index, size, path, root)
        assert (error.check, error.expected) == ("root_hash", root)
        error = inclusion_error(leaf, index, size, path, flipped(root, bit))
        assert (error.check, error.expected, error.actual) == ("root_hash", flipped(root, bit),
                                                               root)
        for node in range(len(path)):
            wrong = (*path[:node], flipped(path[node], bit), *path[node + 1:])
            assert inclusion_error(leaf, index, size, wrong, root).check == "root_hash"


@pytest.mark.parametrize(("index", "size"), INCLUSION_CASES)
def test_inclusion_wrong_index_or_size_fails(index: int, size: int) -> None:
    path, root, leaf = TREE.inclusion_proof(index, size), TREE.root(size), LEAVES[index]
    for wrong in {index - 1, index + 1, index ^ 2, index ^ 1} - {index}:
        error = inclusion_error(leaf, wrong, size, path, root)
        assert error.check == ("leaf_index" if not 0 <= wrong < size else
                               "root_hash" if len(path) == inclusion_proof_length(wrong, size)
                               else "proof_length")
    # A tree of another depth: the path has the wrong length. (A size whose tree gives this leaf
    # the same path, say 7 and 8 for leaf 0, accepts the same proof: the signed tree head, not
    # the proof, binds the size to the root.)
    for wrong in (size * 2, size // 2):
        error = inclusion_error(leaf, index, wrong, path, root)
        assert error.check == ("leaf_index" if index >= wrong else "proof_length")


@pytest.mark.parametrize(("index", "size"), INCLUSION_CASES)
def test_inclusion_truncated_or_extended_proof_fails_on_length(index: int, size: int) -> None:
    path, root, leaf = TREE.inclusion_proof(index, size), TREE.root(size), LEAVES[index]
    wrongs = [(*path, root), (root, *path), (*path, LEAVES[0], LEAVES[1])]
    if path:
        wrongs += [path[:-1], path[1:], ()]
    for wrong in wrongs:
        error = inclusion_error(leaf, index, size, wrong, root)
        assert (error.check, error.expected) == ("proof_length", len(path))
        assert error.actual == len(wrong)


def test_inclusion_rejects_hashes_of_the_wrong_size_and_indices_outside() -> None:
    path, root = TREE.inclusion_proof(3, 8), TREE.root(8)
    for wrong_path, leaf, wrong_root in [((*path, b""), LEAVES[3], root),
                                         ((path[0][:31], *path[1:]), LEAVES[3], root),
                                         (path, LEAVES[3] + b"\x00", root),
                                         (path, LEAVES[3], b"")]:
        assert inclusion_error(leaf, 3, 8, wrong_path, wrong_root).check == "hash_size"
    for index, size in [(8, 8), (9, 8), (-1, 8), (0, 0)]:
        error = inclusion_error(LEAVES[0], index, size, (), EMPTY_ROOT)
        assert (error.check, error.actual) == ("leaf_index", index)


@pytest.mark.parametrize(("first", "second"), CONSISTENCY_CASES)
def test_consistency_every_flipped_bit_fails_at_a_root(first: int, second: int) -> None:
    path, root1, root2 = TREE.consistency_proof(first, second), TREE.root(first), TREE.root(second)
    for bit in range(256):
        for wrong1, wrong2 in [(flipped(root1, bit), root2), (root1, flipped(root2, bit))]:
            error = consistency_error(first, second, wrong1, wrong2, path)
            assert error.check in ("first_root", "second_root")
        for node in range(len(path)):
            wrong = (*path[:node], flipped(path[node], bit), *path[node + 1:])
            error = consistency_error(first, second, root1, root2, wrong)
            assert error.check in ("first_root", "second_root")


@pytest.mark.parametrize(("first", "second"), CONSISTENCY_CASES)
def test_consistency_wrong_sizes_roots_or_lengths_fail(first: int, second: int) -> None:
    path, root1, root2 = TREE.consistency_proof(first, second), TREE.root(first), TREE.root(second)
    # Another first tree, or a second tree of another depth (see the inclusion case above).
    for wrong1, wrong2 in {(first - 1, second), (first + 1, second), (first ^ 2, second),
                           (first, second * 2), (first, second // 2)} - {(first, second)}:
        consistency_error(wrong1, wrong2, root1, root2, path)
    assert consistency_error(first, second, root2, root1, path).check in ("first_root",
                                                                          "second_root")
    for wrong in [(), path[:-1], path[1:], (*path, root1), (*path, root2), (root1, *path),
                  (path[0], *path)]:
        error = consistency_error(first, second, root1, root2, wrong)
        assert (error.check, error.expected) == ("proof_length", len(path))
        assert error.actual == len(wrong)


def test_consistency_edge_sizes() -> None:
    root3, root5, node = TREE.root(3), TREE.root(5), LEAVES[0]
    # first > second, negative first.
    for first, second in [(5, 3), (1, 0), (-1, 3)]:
        error = consistency_error(first, second, root5, root3, ())
        assert (error.check, error.actual) == ("tree_size", first)
    # first == second: an empty proof and one root.
    verify_consistency(5, 5, root5, root5, ())
    assert consistency_error(5, 5, root5, root3, ()).check == "second_root"
    assert consistency_error(5, 5, root5, root5, (node,)).check == "proof_length"
    # first == 0: an empty proof from MTH({}).
    verify_consistency(0, 0, EMPTY_ROOT, EMPTY_ROOT, ())
    verify_consistency(0, 5, EMPTY_ROOT, root5, ())
    error = consistency_error(0, 5, root3, root5, ())
    assert (error.check, error.expected, error.actual) == ("first_root", EMPTY_ROOT, root3)
    assert consistency_error(0, 0, EMPTY_ROOT, root3, ()).check == "second_root"
    assert consistency_error(0, 5, EMPTY_ROOT, root5, (node,)).check == "proof_length"
    # Hashes of the wrong size.
    path = TREE.consistency_proof(3, 5)
    for root1, root2, wrong in [(root3, root5, (*path, b"")), (root3[:31], root5, path),
                                (root3, b"", path)]:
        assert consistency_error(3, 5, root1, root2, wrong).check == "hash_size"


def test_errors_name_check_expected_and_actual() -> None:
    error = inclusion_error(LEAVES[1], 0, 2, (LEAVES[0],), TREE.root(2))
    assert error.stage == "inclusion"
    assert error.to_dict()["check"] == "root_hash"
    assert TREE.root(2).hex() in str(error)
    assert node_hash(LEAVES[0], LEAVES[1]).hex() in str(error)
    error2 = consistency_error(3, 5, TREE.root(3), TREE.root(4), TREE.consistency_proof(3, 5))
    assert (error2.stage, error2.check, error2.expected, error2.actual) == (
        "consistency", "second_root", TREE.root(4), TREE.root(5))


# --- The log's side: requests the tree cannot answer ---


def test_tree_refuses_what_it_does_not_hold() -> None:
    tree = MerkleTree(LEAVES[:5])
    with pytest.raises(MerkleTreeError, match="index"):
        inclusion_proof(LEAVES[:5], 5)
    with pytest.raises(MerkleTreeError, match="index"):
        tree.inclusion_proof(-1)
    with pytest.raises(MerkleTreeError, match="index"):
        tree.inclusion_proof(3, 3)
    with pytest.raises(MerkleTreeError, match="first tree size"):
        consistency_proof(LEAVES[:5], 6)
    with pytest.raises(MerkleTreeError, match="first tree size"):
        tree.consistency_proof(4, 3)
    with pytest.raises(MerkleTreeError, match="tree size"):
        tree.root(6)
    with pytest.raises(MerkleTreeError, match="leaf hash"):
        tree.append(b"short")
    with pytest.raises(MerkleTreeError, match="leaf hash 1"):
        root_hash([LEAVES[0], b""])
    assert tree.size == 5
    assert tree.append(LEAVES[5]) == 5
    assert tree.leaf_hash(5) == LEAVES[5]
    assert tree.root() == root_hash(LEAVES[:6])
