"""Verifying the receipt log's Merkle proofs (RFC 9162 2.1.3.2 and 2.1.4.2): what a tenant runs
on a proof the log served. Returns nothing or raises `InclusionProofError` /
`ConsistencyProofError` naming the check, the expected and the actual value.

The RFC's steps are numbered in comments and the code follows them; the checks before step 1
(hash sizes, and for consistency the sizes the RFC leaves out: 0 and first == second) are ours.
"""

from __future__ import annotations

from collections.abc import Sequence

from ratls.errors import ConsistencyProofError, InclusionProofError
from ratls.merkle import (
    EMPTY_ROOT,
    HASH_SIZE,
    consistency_proof_length,
    inclusion_proof_length,
    node_hash,
)


def verify_inclusion(
    leaf_hash: bytes, index: int, tree_size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Proves the leaf with this hash is leaf `index` of the tree of `tree_size` leaves and `root`.

    Raises InclusionProofError. tree_size and root must come together from one signed tree head:
    the proof fixes only the shape of the leaf's path, which trees of neighbouring sizes can share.
    """
    _require_hash_sizes(InclusionProofError, leaf_hash=leaf_hash, root_hash=root)
    _require_hash_sizes(InclusionProofError, **_named(proof))
    # 1. leaf_index >= tree_size fails (and, unsigned in the RFC, a negative index).
    if not 0 <= index < tree_size:
        raise InclusionProofError(
            "leaf index outside the tree", check="leaf_index",
            expected=f"0..{tree_size - 1}", actual=index,
        )

    def wrong_length() -> InclusionProofError:
        return InclusionProofError(
            "inclusion proof of the wrong length", check="proof_length",
            expected=inclusion_proof_length(index, tree_size), actual=len(proof),
        )

    # 2. fn = leaf_index, sn = tree_size - 1.
    fn, sn = index, tree_size - 1
    # 3. r = hash.
    r = leaf_hash
    # 4. For each p in inclusion_path:
    for p in proof:
        # 4a. sn == 0: more nodes than levels.
        if sn == 0:
            raise wrong_length()
        # 4b. p is the left sibling when fn is a right child or the last node of its level.
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            # Levels where fn is the last node and has no sibling: skip them.
            while (fn & 1) == 0 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = node_hash(r, p)
        # 4c.
        fn, sn = fn >> 1, sn >> 1
    # 5. sn == 0 (every level consumed) and r == root_hash.
    if sn != 0:
        raise wrong_length()
    if r != root:
        raise InclusionProofError(
            "inclusion proof does not lead to the root", check="root_hash", expected=root, actual=r
        )


def verify_consistency(
    first_size: int,
    second_size: int,
    first_root: bytes,
    second_root: bytes,
    proof: Sequence[bytes],
) -> None:
    """Proves the tree of `first_size` leaves and `first_root` is a prefix of the tree of
    `second_size` leaves and `second_root`. Raises ConsistencyProofError."""
    _require_hash_sizes(ConsistencyProofError, first_root=first_root, second_root=second_root)
    _require_hash_sizes(ConsistencyProofError, **_named(proof))
    if not 0 <= first_size <= second_size:
        raise ConsistencyProofError(
            "first tree size outside the second tree", check="tree_size",
            expected=f"0..{second_size}", actual=first_size,
        )

    def wrong_length() -> ConsistencyProofError:
        return ConsistencyProofError(
            "consistency proof of the wrong length", check="proof_length",
            expected=consistency_proof_length(first_size, second_size), actual=len(proof),
        )

    # Outside the RFC's 0 < first < second, nothing is to prove: the proof must be empty, the
    # empty tree's root is MTH({}), and a tree is consistent only with its own root.
    if first_size == 0 or first_size == second_size:
        if proof:
            raise wrong_length()
        if first_size == 0 and first_root != EMPTY_ROOT:
            raise ConsistencyProofError(
                "the empty tree's root is not MTH({})", check="first_root",
                expected=EMPTY_ROOT, actual=first_root,
            )
        if first_size == second_size and second_root != first_root:
            raise ConsistencyProofError(
                "two roots for one tree size", check="second_root",
                expected=first_root, actual=second_root,
            )
        return
    # 1. An empty consistency_path fails.
    if not proof:
        raise wrong_length()
    # 2. first an exact power of 2: first_hash is the proof's implicit first node.
    path = [first_root, *proof] if first_size & (first_size - 1) == 0 else list(proof)
    # 3. fn = first - 1, sn = second - 1.
    fn, sn = first_size - 1, second_size - 1
    # 4. Levels where fn is a right child: its subtree is inside the first tree; skip them.
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    # 5. fr = sr = consistency_path[0].
    fr = sr = path[0]
    # 6. For each subsequent c:
    for c in path[1:]:
        # 6a. sn == 0: more nodes than levels.
        if sn == 0:
            raise wrong_length()
        # 6b. c is a left sibling in both trees, or (otherwise) a right sibling in the second only.
        if fn & 1 or fn == sn:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
            while (fn & 1) == 0 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = node_hash(sr, c)
        # 6c.
        fn, sn = fn >> 1, sn >> 1
    # 7. sn == 0, fr == first_hash, sr == second_hash.
    if sn != 0:
        raise wrong_length()
    if fr != first_root:
        raise ConsistencyProofError(
            "consistency proof does not lead to the first root", check="first_root",
            expected=first_root, actual=fr,
        )
    if sr != second_root:
        raise ConsistencyProofError(
            "consistency proof does not lead to the second root", check="second_root",
            expected=second_root, actual=sr,
        )


def _named(proof: Sequence[bytes]) -> dict[str, bytes]:
    return {f"proof[{i}]": node for i, node in enumerate(proof)}


def _require_hash_sizes(
    error: type[InclusionProofError | ConsistencyProofError], **hashes: bytes
) -> None:
    for name, value in hashes.items():
        if len(value) != HASH_SIZE:
            raise error(
                f"{name} is not a SHA-256 digest", check="hash_size",
                expected=f"{HASH_SIZE} bytes", actual=f"{len(value)} bytes",
            )
