import hashlib

from hypothesis import given
from hypothesis import strategies as st

from core.merkle import keccak256, merkle_proof, merkle_root, merkle_verify, sha256

leaves_st = st.lists(st.binary(min_size=1, max_size=40).map(lambda b: hashlib.sha256(b).digest()),
                     min_size=1, max_size=60, unique=True)


@given(leaves_st, st.sampled_from([sha256, keccak256]))
def test_every_leaf_proves_and_order_does_not_matter(leaves, h):
    root = merkle_root(leaves, h)
    assert merkle_root(list(reversed(leaves)), h) == root
    for leaf in leaves:
        assert merkle_verify(leaf, merkle_proof(leaves, leaf, h), root, h)


@given(leaves_st)
def test_a_foreign_leaf_or_tampered_proof_fails(leaves):
    root = merkle_root(leaves)
    foreign = hashlib.sha256(b"not in the tree" + b"".join(leaves)).digest()
    assert not merkle_verify(foreign, merkle_proof(leaves, leaves[0]), root)
    proof = merkle_proof(leaves, leaves[0])
    if proof:
        bad = [bytes(32)] + proof[1:]
        assert not merkle_verify(leaves[0], bad, root)


def test_single_leaf_root_is_the_leaf():
    leaf = sha256(b"x")
    assert merkle_root([leaf]) == leaf and merkle_proof([leaf], leaf) == []
