"""Merkle trees with sorted-pair hashing, the scheme OpenZeppelin's `MerkleProof.verify` checks.

Two layouts. `standard_tree` is OpenZeppelin's `StandardMerkleTree` (npm `@openzeppelin/merkle-tree`) exactly:
leaf = keccak256(keccak256(abi.encode(value))), leaves sorted by hash and stored as an array heap from the end,
so anyone recomputes a published root (and every proof) from its `dump()` with the standard tool; reward
epochs use it. `merkle_root` below is the older compact layout kept for Datanet version roots (sha256):
leaves are 32-byte hashes; they are sorted before the tree is built, so the root depends only on the
set of leaves. A parent is H(min(a, b) || max(a, b)); an odd node is carried up unchanged. The hash is a
parameter: sha256 for Datanet versions (anyone can recompute it from the records with nothing but
hashlib), keccak256 for reward epochs (checked by the RewardDistributor contract).
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

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


# --- OpenZeppelin StandardMerkleTree ---------------------------------------------------------------
# Mirrors @openzeppelin/merkle-tree 1.0.8 (dist/core.js, merkletree.js, standard.js): `makeMerkleTree` puts
# sorted leaf i at tree[len - 1 - i] and fills parents i = (children 2i+1, 2i+2) backwards; a proof is the
# siblings from a leaf's tree index up to the root. ledger/tests/test_trees.py checks it against the package.

STANDARD_FORMAT = "standard-v1"


def standard_leaf(leaf_types: Sequence[str], value: Sequence) -> bytes:
    """keccak256(keccak256(abi.encode(value))): OpenZeppelin's standard leaf (no second-preimage with a node)."""
    from eth_abi import encode

    return keccak256(keccak256(encode(list(leaf_types), [_abi_value(t, v) for t, v in zip(leaf_types, value, strict=True)])))


def _abi_value(leaf_type: str, v):
    # dumps carry integers as decimal strings (JSON has no exact big integers) and bytes as 0x-hex
    if leaf_type.startswith(("uint", "int")) and isinstance(v, str):
        return int(v, 0)
    if leaf_type.startswith("bytes") and isinstance(v, str):
        return bytes.fromhex(v.removeprefix("0x"))
    return v


def _json_value(v):
    if isinstance(v, bool):
        return v
    if isinstance(v, int):
        return str(v)  # exact: never a JSON number (JavaScript reads those as doubles)
    if isinstance(v, bytes):
        return "0x" + v.hex()
    return v


def _node(a: bytes, b: bytes) -> bytes:
    return keccak256(a + b) if a <= b else keccak256(b + a)


@dataclass(frozen=True)
class StandardTree:
    """A built tree: `tree` in heap layout (root first), `tree_index[i]` where value i's leaf sits."""

    leaf_encoding: tuple[str, ...]
    values: tuple[tuple, ...]
    tree: tuple[bytes, ...]
    tree_index: tuple[int, ...]

    @property
    def root(self) -> bytes:
        return self.tree[0]

    def proof(self, value_index: int) -> list[bytes]:
        return _heap_proof(self.tree, self.tree_index[value_index])

    def proofs(self) -> list[list[str]]:
        """Every value's proof as 0x-hex, in the order of `values`."""
        return [["0x" + p.hex() for p in self.proof(i)] for i in range(len(self.values))]

    def dump(self) -> dict:
        """`StandardMerkleTree.dump()`'s JSON: `StandardMerkleTree.load(dump)` validates and uses it as is."""
        return {
            "format": STANDARD_FORMAT,
            "leafEncoding": list(self.leaf_encoding),
            "tree": ["0x" + n.hex() for n in self.tree],
            "values": [{"value": [_json_value(x) for x in v], "treeIndex": i}
                       for v, i in zip(self.values, self.tree_index, strict=True)],
        }


def _heap_proof(tree: Sequence, index: int) -> list:
    if not (0 <= index < len(tree)) or 2 * index + 1 < len(tree):
        raise IndexError("not a leaf index")
    proof = []
    while index > 0:
        proof.append(tree[index - 1 if index % 2 == 0 else index + 1])
        index = (index - 1) // 2
    return proof


def standard_tree(values: Sequence[Sequence], leaf_types: Sequence[str]) -> StandardTree:
    """OpenZeppelin's `StandardMerkleTree.of(values, leaf_types)`: same root, tree, tree indices and proofs.

    `values` are tuples matching `leaf_types` (ints as Python ints, addresses as 0x-strings). Raises
    ValueError for no values (an empty tree has no root).
    """
    if not values:
        raise ValueError("a Merkle tree needs at least one leaf")
    hashes = [standard_leaf(leaf_types, v) for v in values]
    order = sorted(range(len(values)), key=lambda i: hashes[i])  # stable, as the package's Array.sort
    n = len(values)
    tree: list[bytes] = [b""] * (2 * n - 1)
    for leaf_index, value_index in enumerate(order):
        tree[len(tree) - 1 - leaf_index] = hashes[value_index]
    for i in range(len(tree) - 1 - n, -1, -1):
        tree[i] = _node(tree[2 * i + 1], tree[2 * i + 2])
    tree_index = [0] * n
    for leaf_index, value_index in enumerate(order):
        tree_index[value_index] = len(tree) - 1 - leaf_index
    return StandardTree(tuple(leaf_types), tuple(tuple(v) for v in values), tuple(tree), tuple(tree_index))


def standard_proof(dump: dict, value_index: int) -> list[str]:
    """The proof of value `value_index` of a stored dump (no rebuild: siblings read from its `tree`)."""
    return list(_heap_proof(dump["tree"], dump["values"][value_index]["treeIndex"]))


def standard_verify(root: bytes, leaf_types: Sequence[str], value: Sequence, proof: Sequence[bytes | str]) -> bool:
    node = standard_leaf(leaf_types, value)
    for sibling in proof:
        node = _node(node, sibling if isinstance(sibling, bytes) else bytes.fromhex(sibling.removeprefix("0x")))
    return node == root
