"""The Merkle tree of the receipt transparency log (RFC 9162 2.1, the hashing of CT v2): the
tree hash MTH, inclusion proofs PATH and consistency proofs PROOF, from a list of leaf hashes or
from an append-only `MerkleTree`. Pure: no I/O, no clock. Verifying proofs is `ratls.merkle_verify`.

Leaves are given as leaf hashes (`leaf_hash(entry)`), the form the log stores. Sizes and indices
are leaf counts; a range is (start, count): the leaves start .. start + count - 1.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from typing import Final

from ratls.errors import MerkleTreeError

HASH_SIZE: Final = 32
# Domain separation (RFC 9162 2.1.1): a leaf can never be read as an interior node, nor back.
LEAF_PREFIX: Final = b"\x00"
NODE_PREFIX: Final = b"\x01"
# MTH({}) = HASH(): the root of the empty tree.
EMPTY_ROOT: Final = hashlib.sha256(b"").digest()

# MTH of the leaves start .. start + count - 1 (count >= 1) of some tree.
RangeHasher = Callable[[int, int], bytes]


def leaf_hash(data: bytes) -> bytes:
    """MTH({d(0)}) = HASH(0x00 || d(0))."""
    return hashlib.sha256(LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """HASH(0x01 || MTH(left subtree) || MTH(right subtree))."""
    return hashlib.sha256(NODE_PREFIX + left + right).digest()


def split_point(count: int) -> int:
    """k, the largest power of two smaller than count (count >= 2): the size of the left subtree."""
    return 1 << ((count - 1).bit_length() - 1)


def root_hash(leaf_hashes: Sequence[bytes]) -> bytes:
    """MTH(D[n]) of the tree of these leaf hashes (RFC 9162 2.1.1); O(n) hashes."""
    _require_hash_sizes(leaf_hashes)
    if not leaf_hashes:
        return EMPTY_ROOT
    return _list_range_hasher(leaf_hashes)(0, len(leaf_hashes))


def inclusion_proof(leaf_hashes: Sequence[bytes], index: int) -> tuple[bytes, ...]:
    """PATH(index, D[n]) of the tree of these leaf hashes (RFC 9162 2.1.3.1); O(n) hashes."""
    _require_hash_sizes(leaf_hashes)
    _require_index(index, len(leaf_hashes))
    return tuple(_path(index, 0, len(leaf_hashes), _list_range_hasher(leaf_hashes)))


def consistency_proof(leaf_hashes: Sequence[bytes], first_size: int) -> tuple[bytes, ...]:
    """PROOF(first_size, D[n]) of the tree of these leaf hashes (RFC 9162 2.1.4.1); O(n) hashes.

    Empty when first_size is 0 or n: the empty tree and the tree itself need no proof.
    """
    _require_hash_sizes(leaf_hashes)
    return _consistency(first_size, len(leaf_hashes), _list_range_hasher(leaf_hashes))


def inclusion_proof_length(index: int, tree_size: int) -> int:
    """How many nodes PATH(index, D[tree_size]) has (0 <= index < tree_size)."""
    length = 0
    while tree_size > 1:
        k = split_point(tree_size)
        index, tree_size = (index, k) if index < k else (index - k, tree_size - k)
        length += 1
    return length


def consistency_proof_length(first_size: int, second_size: int) -> int:
    """How many nodes PROOF(first_size, D[second_size]) has (0 <= first_size <= second_size)."""
    if first_size in (0, second_size):
        return 0
    length, complete = 0, True
    while first_size != second_size:
        k = split_point(second_size)
        if first_size <= k:
            second_size = k
        else:
            first_size, second_size, complete = first_size - k, second_size - k, False
        length += 1
    return length if complete else length + 1


class MerkleTree:
    """An append-only tree of leaf hashes that keeps the hash of every complete subtree.

    Every subtree MTH's recursion meets is either complete and aligned (cached) or splits, so a
    root, a PATH or a PROOF costs O(log n) hashes; an append costs O(1) amortised, O(log n) at
    most. Memory: the leaf hashes and about as many interior hashes.
    """

    def __init__(self, leaf_hashes: Iterable[bytes] = ()) -> None:
        self._size = 0
        # (level, position) -> MTH of the 2**level leaves from position * 2**level on
        self._complete: dict[tuple[int, int], bytes] = {}
        for leaf in leaf_hashes:
            self.append(leaf)

    @property
    def size(self) -> int:
        return self._size

    def append(self, leaf: bytes) -> int:
        """Adds a leaf hash; returns its index."""
        _require_hash_sizes((leaf,))
        index = self._size
        self._complete[(0, index)] = leaf
        # Each subtree this leaf completes: its hash from its two halves, one level up at a time.
        level, position, node = 0, index, leaf
        while position % 2 == 1:
            node = node_hash(self._complete[(level, position - 1)], node)
            level, position = level + 1, position // 2
            self._complete[(level, position)] = node
        self._size = index + 1
        return index

    def leaf_hash(self, index: int) -> bytes:
        _require_index(index, self._size)
        return self._complete[(0, index)]

    def root(self, tree_size: int | None = None) -> bytes:
        """MTH of the first tree_size leaves (all of them by default)."""
        size = self._size_or_current(tree_size)
        return self._range_hash(0, size) if size else EMPTY_ROOT

    def inclusion_proof(self, index: int, tree_size: int | None = None) -> tuple[bytes, ...]:
        """PATH(index, D[tree_size]) within the first tree_size leaves (all by default)."""
        size = self._size_or_current(tree_size)
        _require_index(index, size)
        return tuple(_path(index, 0, size, self._range_hash))

    def consistency_proof(
        self, first_size: int, second_size: int | None = None
    ) -> tuple[bytes, ...]:
        """PROOF(first_size, D[second_size]) (second_size: all leaves by default)."""
        return _consistency(first_size, self._size_or_current(second_size), self._range_hash)

    def _size_or_current(self, tree_size: int | None) -> int:
        if tree_size is None:
            return self._size
        if not 0 <= tree_size <= self._size:
            raise MerkleTreeError(
                "tree size beyond the leaves held", check="tree_size",
                expected=f"0..{self._size}", actual=tree_size,
            )
        return tree_size

    def _range_hash(self, start: int, count: int) -> bytes:
        if count & (count - 1) == 0:  # a power of two: complete, and aligned (see class docstring)
            level = count.bit_length() - 1
            return self._complete[(level, start >> level)]
        k = split_point(count)
        return node_hash(self._range_hash(start, k), self._range_hash(start + k, count - k))


def _list_range_hasher(leaf_hashes: Sequence[bytes]) -> RangeHasher:
    def mth(start: int, count: int) -> bytes:
        # MTH(D[n]) = HASH(0x01 || MTH(D[0:k]) || MTH(D[k:n])), k the split point; MTH of 1 leaf
        # is its leaf hash.
        if count == 1:
            return leaf_hashes[start]
        k = split_point(count)
        return node_hash(mth(start, k), mth(start + k, count - k))

    return mth


def _path(index: int, start: int, count: int, mth: RangeHasher) -> list[bytes]:
    # RFC 9162 2.1.3.1, leaf `index` of the range (start, count):
    #   PATH(m, {d(0)}) = {}
    #   PATH(m, D[n]) = PATH(m, D[0:k]) : MTH(D[k:n])      for m < k
    #   PATH(m, D[n]) = PATH(m - k, D[k:n]) : MTH(D[0:k])  for m >= k
    if count == 1:
        return []
    k = split_point(count)
    if index < k:
        return [*_path(index, start, k, mth), mth(start + k, count - k)]
    return [*_path(index - k, start + k, count - k, mth), mth(start, k)]


def _consistency(first_size: int, second_size: int, mth: RangeHasher) -> tuple[bytes, ...]:
    if not 0 <= first_size <= second_size:
        raise MerkleTreeError(
            "first tree size outside the second tree", check="first_size",
            expected=f"0..{second_size}", actual=first_size,
        )
    if first_size == 0:
        return ()
    return tuple(_subproof(first_size, 0, second_size, True, mth))


def _subproof(m: int, start: int, count: int, complete: bool, mth: RangeHasher) -> list[bytes]:
    # RFC 9162 2.1.4.1, the first m leaves of the range (start, count); `complete` is b, true while
    # the range is the first tree's own subtree (then its hash is known and left out):
    #   SUBPROOF(m, D[m], true) = {}
    #   SUBPROOF(m, D[m], false) = {MTH(D[m])}
    #   SUBPROOF(m, D[n], b) = SUBPROOF(m, D[0:k], b) : MTH(D[k:n])          for m <= k
    #   SUBPROOF(m, D[n], b) = SUBPROOF(m - k, D[k:n], false) : MTH(D[0:k])  for m > k
    if m == count:
        return [] if complete else [mth(start, count)]
    k = split_point(count)
    if m <= k:
        return [*_subproof(m, start, k, complete, mth), mth(start + k, count - k)]
    return [*_subproof(m - k, start + k, count - k, False, mth), mth(start, k)]


def _require_index(index: int, tree_size: int) -> None:
    if not 0 <= index < tree_size:
        raise MerkleTreeError(
            "leaf index beyond the leaves held", check="index",
            expected=f"0..{tree_size - 1}", actual=index,
        )


def _require_hash_sizes(leaf_hashes: Iterable[bytes]) -> None:
    for index, leaf in enumerate(leaf_hashes):
        if len(leaf) != HASH_SIZE:
            raise MerkleTreeError(
                f"leaf hash {index} is not a SHA-256 digest", check="leaf_hash",
                expected=f"{HASH_SIZE} bytes", actual=f"{len(leaf)} bytes",
            )
