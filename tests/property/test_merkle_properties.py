"""Properties of the receipt log's Merkle tree for trees up to 2,000 leaves: every inclusion and
consistency proof verifies, batch and incremental trees agree, any flipped bit in a leaf, a proof
node or a root is refused, and arbitrary proofs raise only the typed error."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ratls.errors import ConsistencyProofError, InclusionProofError
from ratls.merkle import (
    EMPTY_ROOT,
    HASH_SIZE,
    MerkleTree,
    consistency_proof,
    consistency_proof_length,
    inclusion_proof,
    inclusion_proof_length,
    leaf_hash,
    root_hash,
)
from ratls.merkle_verify import verify_consistency, verify_inclusion

MAX_SIZE = 2000
LEAVES = tuple(leaf_hash(f"receipt {i}".encode()) for i in range(MAX_SIZE))
# Read only: every test asks it for roots and proofs of its prefixes.
TREE = MerkleTree(LEAVES)
SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def leaf_positions(draw: st.DrawFn) -> tuple[int, int]:
    size = draw(st.integers(1, MAX_SIZE))
    return draw(st.integers(0, size - 1)), size


@st.composite
def size_pairs(draw: st.DrawFn) -> tuple[int, int]:
    second = draw(st.integers(0, MAX_SIZE))
    return draw(st.integers(0, second)), second


def flip(value: bytes, bit: int) -> bytes:
    out = bytearray(value)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


@SETTINGS
@given(leaf_positions())
def test_inclusion_proofs_verify(position: tuple[int, int]) -> None:
    index, size = position
    proof = inclusion_proof(LEAVES[:size], index)
    assert proof == TREE.inclusion_proof(index, size)
    assert len(proof) == inclusion_proof_length(index, size)
    root = root_hash(LEAVES[:size])
    assert root == TREE.root(size)
    verify_inclusion(LEAVES[index], index, size, proof, root)


@SETTINGS
@given(size_pairs())
def test_consistency_proofs_verify(sizes: tuple[int, int]) -> None:
    first, second = sizes
    proof = consistency_proof(LEAVES[:second], first)
    assert proof == TREE.consistency_proof(first, second)
    assert len(proof) == consistency_proof_length(first, second)
    verify_consistency(first, second, TREE.root(first), root_hash(LEAVES[:second]), proof)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.binary(max_size=40), max_size=150))
def test_incremental_roots_equal_batch_roots_after_every_append(entries: list[bytes]) -> None:
    tree = MerkleTree()
    leaves: list[bytes] = []
    assert tree.root() == EMPTY_ROOT
    for entry in entries:
        leaves.append(leaf_hash(entry))
        assert tree.append(leaf_hash(entry)) == len(leaves) - 1
        assert tree.root() == root_hash(leaves)
    assert tree.size == len(entries)


@SETTINGS
@given(st.integers(1, MAX_SIZE))
def test_incremental_root_equals_batch_root_at_any_size(size: int) -> None:
    assert TREE.root(size) == root_hash(LEAVES[:size])


@SETTINGS
@given(leaf_positions(), st.data())
def test_inclusion_refuses_any_flipped_bit(position: tuple[int, int], data: st.DataObject) -> None:
    index, size = position
    leaf, proof, root = LEAVES[index], list(TREE.inclusion_proof(index, size)), TREE.root(size)
    target = data.draw(st.integers(-2, len(proof) - 1), label="target")  # -2 leaf, -1 root
    bit = data.draw(st.integers(0, 8 * HASH_SIZE - 1), label="bit")
    if target == -2:
        leaf = flip(leaf, bit)
    elif target == -1:
        root = flip(root, bit)
    else:
        proof[target] = flip(proof[target], bit)
    with pytest.raises(InclusionProofError) as caught:
        verify_inclusion(leaf, index, size, proof, root)
    assert caught.value.check == "root_hash"


@SETTINGS
@given(size_pairs().filter(lambda sizes: 0 < sizes[0] < sizes[1]), st.data())
def test_consistency_refuses_any_flipped_bit(sizes: tuple[int, int], data: st.DataObject) -> None:
    first, second = sizes
    proof = list(TREE.consistency_proof(first, second))
    roots = [TREE.root(first), TREE.root(second)]
    target = data.draw(st.integers(-2, len(proof) - 1), label="target")  # -2 first, -1 second
    bit = data.draw(st.integers(0, 8 * HASH_SIZE - 1), label="bit")
    if target < 0:
        roots[target + 2] = flip(roots[target + 2], bit)
    else:
        proof[target] = flip(proof[target], bit)
    with pytest.raises(ConsistencyProofError) as caught:
        verify_consistency(first, second, roots[0], roots[1], proof)
    assert caught.value.check in ("first_root", "second_root")


HASHES = st.binary(min_size=HASH_SIZE, max_size=HASH_SIZE)
ANY_HASH = st.one_of(HASHES, st.binary(max_size=40))


@SETTINGS
@given(ANY_HASH, st.integers(-3, 3000), st.integers(-3, 3000), st.lists(ANY_HASH, max_size=14),
       ANY_HASH)
def test_arbitrary_inclusion_proofs_raise_only_the_typed_error(
    leaf: bytes, index: int, size: int, proof: list[bytes], root: bytes
) -> None:
    # Accepted only where nothing is to prove: the one leaf of a one-leaf tree is its root.
    # Anything else would take a SHA-256 preimage.
    try:
        verify_inclusion(leaf, index, size, proof, root)
    except InclusionProofError:
        return
    assert (index, size, proof, leaf) == (0, 1, [], root)


@SETTINGS
@given(st.integers(-3, 3000), st.integers(-3, 3000), ANY_HASH, ANY_HASH,
       st.lists(ANY_HASH, max_size=14))
def test_arbitrary_consistency_proofs_raise_only_the_typed_error(
    first: int, second: int, first_root: bytes, second_root: bytes, proof: list[bytes]
) -> None:
    # Accepted only where nothing is to prove: first 0 with MTH({}), or one root for one size.
    try:
        verify_consistency(first, second, first_root, second_root, proof)
    except ConsistencyProofError:
        return
    assert not proof
    if first == 0:
        assert first_root == EMPTY_ROOT == hashlib.sha256(b"").digest()
        assert second > 0 or second_root == EMPTY_ROOT
    else:
        assert (first, first_root) == (second, second_root)
