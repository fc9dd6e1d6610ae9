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


# --- OpenZeppelin StandardMerkleTree ---------------------------------------------------------------

NODE_CHECK = r"""
const {StandardMerkleTree} = require("@openzeppelin/merkle-tree");
const cases = JSON.parse(require("fs").readFileSync(0, "utf8"));
const out = cases.map(({dump, proofs}) => {
  const tree = StandardMerkleTree.load(dump);  // validates every node and value
  const rebuilt = StandardMerkleTree.of(dump.values.map((v) => v.value), dump.leafEncoding);
  return {
    root: tree.root,
    same_dump: JSON.stringify(rebuilt.dump()) === JSON.stringify(dump),
    ours_verify: dump.values.every((v, i) => StandardMerkleTree.verify(tree.root, dump.leafEncoding, v.value, proofs[i])),
    theirs_equal: dump.values.every((v, i) => JSON.stringify(tree.getProof(i)) === JSON.stringify(proofs[i])),
  };
});
process.stdout.write(JSON.stringify(out));
"""


def test_standard_tree_matches_openzeppelin_merkle_tree_for_1_to_33_leaves():
    """The package recomputes our root from the published dump, and accepts our proofs, for every size 1..33."""
    import json
    import random
    import shutil
    import subprocess
    from pathlib import Path

    from core.merkle import standard_tree

    rng = random.Random(7)
    cases, roots = [], []
    for n in range(1, 34):
        # reward-like values: checksum-free hex addresses and 18-digit+ amounts (past a double's 15 digits)
        values = [("0x" + rng.randbytes(20).hex(), rng.randrange(1, 2**128)) for _ in range(n)]
        tree = standard_tree(values, ["address", "uint256"])
        cases.append({"dump": tree.dump(), "proofs": tree.proofs()})
        roots.append("0x" + tree.root.hex())
    node = shutil.which("node")
    assert node, "node is needed to run @openzeppelin/merkle-tree"
    result = subprocess.run([node, "-e", NODE_CHECK], input=json.dumps(cases), capture_output=True, text=True,
                            cwd=Path(__file__).resolve().parents[2], timeout=120)
    assert result.returncode == 0, result.stderr
    answers = json.loads(result.stdout)
    assert [a["root"] for a in answers] == roots
    assert all(a["same_dump"] and a["ours_verify"] and a["theirs_equal"] for a in answers), answers


def test_standard_tree_proofs_verify_and_stored_dump_gives_the_same_proofs():
    from core.merkle import standard_proof, standard_tree, standard_verify

    values = [(f"0x{i:040x}", 10**18 + i) for i in range(1, 12)]
    tree = standard_tree(values, ["address", "uint256"])
    dump = tree.dump()
    for i, v in enumerate(values):
        assert standard_proof(dump, i) == tree.proofs()[i]
        assert standard_verify(tree.root, ["address", "uint256"], v, tree.proof(i))
        assert not standard_verify(tree.root, ["address", "uint256"], (v[0], v[1] + 1), tree.proof(i))
    assert dump["values"][0]["value"] == [values[0][0], str(values[0][1])]  # amounts exact, as strings
    one = standard_tree(values[:1], ["address", "uint256"])
    assert one.tree == (one.root,) and one.proof(0) == []
