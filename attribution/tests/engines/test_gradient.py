import numpy as np
import pytest
import torch
from torch import nn

from attribution.engines.base import Query, Record
from attribution.engines.gradient import (
    EkfacBasis,
    GradientEngine,
    GradientIndex,
    LoraGradientHooks,
    RandomEngine,
    TracInEngine,
)
from attribution.tests.engines.tiny import LABELS, TEXTS, records, tiny_lora_classifier


def _autograd_per_example(clf, texts, labels):
    """Reference: one backward per example, reading the LoRA weights' .grad."""
    model = clf.model
    out = []
    for text, label in zip(texts, labels, strict=True):
        model.zero_grad()
        enc = clf.tokenizer([text], return_tensors="pt", truncation=True, max_length=clf.max_length)
        loss = nn.functional.cross_entropy(model(**enc).logits, torch.tensor([label]), reduction="sum")
        loss.backward()
        grads = []
        with LoraGradientHooks(model) as hooks:
            pairs = hooks.pairs
        for pair in pairs:
            grads.append((pair.lora_a.weight.grad.clone(), pair.lora_b.weight.grad.clone()))
        out.append(grads)
    return out


def test_hook_gradients_equal_autograd_per_example_gradients():
    clf = tiny_lora_classifier(seed=1)
    texts = TEXTS[:5]
    labels = [0, 1, 2, 1, 0]
    reference = _autograd_per_example(clf, texts, labels)
    enc = clf.tokenizer(texts, padding=True, return_tensors="pt")  # padded batch: padding must not leak
    with LoraGradientHooks(clf.model) as hooks:
        logits = clf.model(**enc).logits
        loss = nn.functional.cross_entropy(logits, torch.tensor(labels), reduction="sum")
        batched = hooks.per_example_grads(loss)
    assert len(batched) == 4  # 2 layers x (query, value)
    for i in range(len(texts)):
        for layer, (grad_a, grad_b) in enumerate(batched):
            ref_a, ref_b = reference[i][layer]
            assert ref_a.abs().max() > 0 and ref_b.abs().max() > 0
            torch.testing.assert_close(grad_a[i], ref_a, rtol=1e-4, atol=1e-6)
            torch.testing.assert_close(grad_b[i], ref_b, rtol=1e-4, atol=1e-6)


def test_hooks_are_removed_and_requires_grad_restored():
    clf = tiny_lora_classifier()
    for p in clf.model.parameters():
        p.requires_grad_(False)
    with LoraGradientHooks(clf.model) as hooks:
        assert all(pair.lora_a.weight.requires_grad for pair in hooks.pairs)
    assert not any(p.requires_grad for p in clf.model.parameters())
    assert all(not m._forward_hooks for m in clf.model.modules())


def test_model_without_lora_is_refused():
    clf = tiny_lora_classifier()
    base = clf.model.get_base_model()
    with pytest.raises(ValueError, match="no LoRA"):
        LoraGradientHooks(clf.model.base_model.model.__class__(base.config))


LIGHT = 0.1  # damping under which the preconditioner nearly whitens the 12 tiny gradients


def test_fit_is_deterministic_and_planted_duplicate_ranks_first(tmp_path):
    clf = tiny_lora_classifier(seed=2)
    recs = records()
    queries = [Query(text=r.text, label=r.label) for r in recs]
    # The random-projection basis: rows depend on the seed only, not on how records are batched.
    a = GradientEngine(projection_dim=64, seed=7, damping=LIGHT, basis="random", batch_size=5,
                       directory=tmp_path / "a").fit(clf, recs)
    b = GradientEngine(projection_dim=64, seed=7, damping=LIGHT, basis="random", batch_size=3,
                       directory=tmp_path / "b").fit(clf, recs)
    # batch composition changes padding only: same rows up to float noise
    np.testing.assert_allclose(np.asarray(a.grads, np.float32), np.asarray(b.grads, np.float32), atol=2e-3)
    again = GradientEngine(projection_dim=64, seed=7, damping=LIGHT, basis="random", batch_size=5).fit(clf, recs)
    np.testing.assert_array_equal(np.asarray(a.grads), np.asarray(again.grads))
    np.testing.assert_allclose(a.self_influence_gn, b.self_influence_gn, rtol=1e-5)
    c = GradientEngine(projection_dim=64, seed=8, damping=LIGHT, basis="random").fit(clf, recs)
    assert not np.allclose(np.asarray(a.grads, np.float32), np.asarray(c.grads, np.float32))

    # The default EK-FAC basis: the same records give the same scores, however they are batched.
    e1 = GradientEngine(projection_dim=64, seed=7, batch_size=5)
    i1 = e1.fit(clf, recs)
    assert i1.meta["basis"] == "ekfac" and i1.meta["factor_samples"] == len(recs)
    assert i1.meta["projection_dim"] == i1.grads.shape[1] <= 64
    i2 = GradientEngine(projection_dim=64, seed=7, batch_size=3).fit(clf, recs)
    m1 = e1.attribute(i1, queries, top_k=1, return_matrix=True).matrix
    m2 = e1.attribute(i2, queries, top_k=1, return_matrix=True).matrix
    np.testing.assert_allclose(m1, m2, rtol=2e-2, atol=2e-2 * np.abs(m1).max())
    np.testing.assert_allclose(i1.self_influence_gn, i2.self_influence_gn, rtol=1e-3)
    again = e1.attribute(GradientEngine(projection_dim=64, seed=7, batch_size=5).fit(clf, recs), queries,
                         top_k=1, return_matrix=True).matrix
    np.testing.assert_array_equal(m1, again)

    # a query identical to a training record (same text, same label) ranks that record first: with the
    # EK-FAC basis at its default damping, and with the random basis when lightly damped
    for index in (i1, a):
        result = GradientEngine(projection_dim=64, seed=7).attribute(index, queries, top_k=3)
        assert [q.record_ids[0] for q in result.queries] == [r.id for r in recs]
        for q in result.queries:
            assert q.scores == sorted(q.scores, reverse=True) and len(q.scores) == 3
    # TracIn (no curvature) fits its own random-projection index; it favours high-gradient-norm records,
    # so only its own row must be among a query's top 3
    tracin = TracInEngine(projection_dim=64, seed=7)
    t_index = tracin.fit(clf, recs)
    assert t_index.meta["basis"] == "random" and t_index.basis is None
    result = tracin.attribute(t_index, queries, top_k=3)
    assert sum(r.id in q.record_ids for r, q in zip(recs, result.queries, strict=True)) >= len(recs) - 2
    with pytest.raises(ValueError, match="TracIn needs its own index"):
        tracin.attribute(i1, queries[:1])


def test_ekfac_basis_is_the_exact_damped_inverse_on_its_kept_directions():
    """Rows of the full basis (k = every coordinate): their dot product is g^T (H + lambda I)^-1 g',
    with H the EK-FAC curvature rebuilt from the factors."""
    gen = torch.Generator().manual_seed(0)
    grads = [torch.randn(40, 3, 5, generator=gen), torch.randn(40, 5, 2, generator=gen)]
    basis = EkfacBasis.fit(grads, dim=25, damping=0.5)
    assert basis.dim == 25  # 15 + 10 coordinates, all kept
    # H in the original coordinates: Kronecker eigenvectors scaled by the corrected eigenvalues
    blocks = []
    for qo, qi, g in zip(basis.q_out, basis.q_in, grads, strict=True):
        u = torch.kron(qo.double(), qi.double())  # vec(Qo^T G Qi) = kron(Qo, Qi)^T vec(G) (row-major)
        lam = ((qo.T @ g @ qi) ** 2).mean(0).reshape(-1).double()
        blocks.append((u, lam))
    lam_all = torch.cat([lam for _, lam in blocks])
    shift = 0.5 * float(lam_all.mean())
    assert basis.shift == pytest.approx(shift)
    h_inv = torch.block_diag(*[u @ torch.diag(1 / (lam + shift)) @ u.T for u, lam in blocks])
    flat = torch.cat([g.reshape(40, -1) for g in grads], 1).double()
    expected = flat @ h_inv @ flat.T
    rows = basis(grads).double()
    torch.testing.assert_close(rows @ rows.T, expected, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(basis.self_influence(grads).double(), expected.diagonal(), rtol=1e-4, atol=1e-6)
    # Truncated to the 6 largest-curvature coordinates: those six are the largest corrected eigenvalues
    small = EkfacBasis.fit(grads, dim=6, damping=0.5)
    assert small.dim == 6 and set(small.keep.tolist()) == set(torch.argsort(-lam_all)[:6].tolist())


def test_memmap_round_trip_and_matrix(tmp_path):
    clf = tiny_lora_classifier(seed=3)
    recs = records()
    engine = GradientEngine(projection_dim=48, seed=1, chunk_rows=5)  # several chunks
    index = engine.fit(clf, recs)
    index.save(tmp_path / "idx")
    assert (tmp_path / "idx" / "grads.f16").exists()
    loaded = GradientEngine(projection_dim=999, seed=99).load_index(tmp_path / "idx", model=clf)
    assert isinstance(loaded, GradientIndex) and isinstance(loaded.grads, np.memmap)
    assert loaded.grads.dtype == np.float16 and loaded.grads.shape == (len(recs), 48)
    assert loaded.record_ids == [r.id for r in recs] and loaded.contributors == [r.contributor for r in recs]
    np.testing.assert_array_equal(np.asarray(loaded.grads), np.asarray(index.grads))

    queries = [Query(text="profit rose sharply"), Query(text="the company reported a loss", label="negative")]
    r1 = engine.attribute(index, queries, top_k=4, return_matrix=True)
    r2 = GradientEngine(projection_dim=48, seed=1, chunk_rows=1000).attribute(
        loaded, queries, top_k=4, return_matrix=True
    )
    np.testing.assert_allclose(r1.matrix, r2.matrix, rtol=1e-5, atol=1e-6)
    assert r1.matrix.shape == (2, len(recs))
    for q, row in zip(r1.queries, r1.matrix, strict=True):
        assert q.rows == list(np.argsort(-row, kind="stable")[:4])

    # the fp16 matrix product matches the float32 scores computed directly
    qv = engine.query_vectors(index, queries)
    full = (np.asarray(index.grads, np.float32) * index.row_scale[:, None]) @ qv.T
    np.testing.assert_allclose(r1.matrix, full.T, rtol=2e-2, atol=1e-3 * np.abs(full).max())


def test_self_influence_and_bad_input(tmp_path):
    clf = tiny_lora_classifier(seed=4)
    recs = records()
    index = GradientEngine(projection_dim=32).fit(clf, recs)
    si = GradientEngine(projection_dim=32).self_influence(index)
    assert si.shape == (len(recs),) and (si > 0).all()
    assert (TracInEngine(projection_dim=32).self_influence(index) > 0).all()

    with pytest.raises(ValueError, match="unknown label"):
        GradientEngine(projection_dim=32).fit(clf, [Record(id="x", text="t", label="bullish")])
    with pytest.raises(ValueError, match="unique"):
        GradientEngine(projection_dim=32).fit(clf, [recs[0], recs[0]])
    with pytest.raises(ValueError, match="no records"):
        GradientEngine(projection_dim=32).fit(clf, [])
    with pytest.raises(ValueError, match="projection_dim"):
        GradientEngine(projection_dim=2).fit(clf, recs)  # fewer than the 8 LoRA matrices
    with pytest.raises(ValueError, match="basis must be one of"):
        GradientEngine(basis="pca")
    with pytest.raises(FileNotFoundError):
        GradientEngine().load_index(tmp_path / "missing")
    index.save(tmp_path / "i")
    with pytest.raises(ValueError, match="no model bound"):
        GradientEngine(projection_dim=32).attribute(GradientEngine().load_index(tmp_path / "i"), [Query("x")])
    other = tiny_lora_classifier(rank=2)
    with pytest.raises(ValueError, match="LoRA layout"):
        GradientEngine(projection_dim=32).attribute(
            GradientEngine().load_index(tmp_path / "i", model=other), [Query("x")]
        )


def test_random_engine_is_seeded():
    recs = records()
    engine = RandomEngine(seed=3)
    index = engine.fit(None, recs)
    a = engine.attribute(index, [Query("q1"), Query("q2")], top_k=5, return_matrix=True)
    b = RandomEngine(seed=3).attribute(index, [Query("q1"), Query("q2")], top_k=5, return_matrix=True)
    np.testing.assert_array_equal(a.matrix, b.matrix)
    assert a.queries[0].record_ids == b.queries[0].record_ids and len(a.queries[0].rows) == 5
    assert not np.array_equal(a.matrix[0], a.matrix[1])
    assert LABELS  # keep the import honest


def test_index_from_before_the_ekfac_basis_loads_as_random(tmp_path):
    """An index.json without "basis" (written before EK-FAC became the default) answers as before."""
    import json

    clf = tiny_lora_classifier(seed=5)
    recs = records()
    engine = GradientEngine(projection_dim=32, seed=3, basis="random", directory=tmp_path / "old")
    index = engine.fit(clf, recs)
    queries = [Query(text="profit rose sharply"), Query(text="the company reported a loss", label="negative")]
    expected = engine.attribute(index, queries, top_k=3, return_matrix=True).matrix
    header = json.loads((tmp_path / "old" / "index.json").read_text())
    del header["meta"]["basis"], header["meta"]["factor_samples"]
    (tmp_path / "old" / "index.json").write_text(json.dumps(header))
    loaded = GradientEngine().load_index(tmp_path / "old", model=clf)
    assert loaded.basis is None and not (tmp_path / "old" / "ekfac.npz").exists()
    got = GradientEngine(projection_dim=32, seed=3).attribute(loaded, queries, top_k=3, return_matrix=True).matrix
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
