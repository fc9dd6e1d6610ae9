"""A Merkle tree with sorted-pair hashing, the scheme OpenZeppelin's `MerkleProof.verify` checks.

Leaves are 32-byte hashes; they are sorted before the tree is built, so the root depends only on the
set of leaves. A parent is H(min(a, b) || max(a, b)); an odd node is carried up unchanged. The hash is a
parameter: sha256 for Datanet versions (anyone can recompute it from the records with nothing but
hashlib), keccak256 for reward epochs (checked by the RewardDistributor contract).
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

HashFn = Callable[[bytes], bytes]


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def keccak256(data: bytes) -> bytes:
    from eth_utils import keccak

    return keccak(data)


def _pair(a: bytes, b: bytes, h: HashFn) -> bytes:
    return h(a + b) if a <= b else h(b + a)


def _levels(leaves: Sequence[bytes], h: HashFn) -> list[list[bytes]]:
    if not leaves:
        raise ValueError("a Merkle tree needs at least one leaf")
    if any(len(leaf) != 32 for leaf in leaves):
        raise ValueError("leaves must be 32-byte hashes")
    level = sorted(leaves)
    levels = [level]
    while len(level) > 1:
        nxt = [_pair(level[i], level[i + 1], h) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
        levels.append(level)
    return levels


def merkle_root(leaves: Sequence[bytes], h: HashFn = sha256) -> bytes:
    return _levels(leaves, h)[-1][0]


def merkle_proof(leaves: Sequence[bytes], leaf: bytes, h: HashFn = sha256) -> list[bytes]:
    """Sibling hashes from `leaf` up to the root. Raises KeyError if `leaf` is not in the tree."""
    levels = _levels(leaves, h)
    try:
        index = levels[0].index(leaf)
    except ValueError:
        raise KeyError("leaf not in tree") from None
    proof = []
    for level in levels[:-1]:
        sibling = index ^ 1
        if sibling < len(level):
            proof.append(level[sibling])
        index //= 2
    return proof


def merkle_verify(leaf: bytes, proof: Sequence[bytes], root: bytes, h: HashFn = sha256) -> bool:
    node = leaf
    for sibling in proof:
        node = _pair(node, sibling, h)
    return node == root
