"""dm-verity hash trees, byte-compatible with `veritysetup format` / `verify` (cryptsetup 2.6).

params      VerityParams (validated), TreeGeometry
superblock  the 512-byte on-disk superblock, parsed strictly
hashing     block digests and packing them into hash blocks
level0      data-block digests, in worker processes for large inputs
tree        building a tree and writing a hash file (`format_hash`)
verify      top-down authentication and data verification (`verify`)
"""

from loader.verity.params import TreeGeometry, VerityParams
from loader.verity.superblock import (
    Superblock,
    build_superblock,
    check_superblock,
    parse_superblock,
)
from loader.verity.tree import HashTree, compute_tree, format_hash
from loader.verity.verify import AuthenticatedTree, authenticate_tree, read_hash_area, verify

__all__ = [
    "AuthenticatedTree",
    "HashTree",
    "Superblock",
    "TreeGeometry",
    "VerityParams",
    "authenticate_tree",
    "build_superblock",
    "check_superblock",
    "compute_tree",
    "format_hash",
    "parse_superblock",
    "read_hash_area",
    "verify",
]
