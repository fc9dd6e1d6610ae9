"""Near-duplicate clusters: the MinHash/LSH engine alone, then at ingest across contributors, the
contribution page and API, and the mapping the attribution weights use."""
import csv
import random

import numpy as np
import pytest
from django.urls import reverse
from rest_framework.test import APIClient

from datanets import neardup, selectors, services
from datanets.models import Record
from datanets.tests.factories import DatanetFactory, contributor, curator_of
from datanets.tests.helpers import PHRASEBANK, ingest, upload


def _phrasebank(n: int = 400) -> list[tuple[str, str]]:
    with open(PHRASEBANK, encoding="iso-8859-1", newline="") as fh:
        rows = [(r["result"], r["content"]) for r in csv.DictReader(fh)]
    seen, out = set(), []
    for label, text in rows:
        if len(text.split()) >= 12 and text not in seen:
            seen.add(text)
            out.append((label, text))
    return out[:n]


def _one_token_variant(text: str, rng: random.Random) -> str:
    words = text.split(" ")
    i = rng.randrange(1, len(words) - 1)
    words[i] = rng.choice(["firm", "revenue", "quarterly", "Nordic", "stated", "grew"])
    return " ".join(words)


def _csv(rows: list[tuple[str, str]]) -> bytes:
    lines = ["label,text"] + [f'{label},"{text.replace(chr(34), chr(34) * 2)}"' for label, text in rows]
    return ("\n".join(lines) + "\n").encode()


# --- the engine (no database) ----------------------------------------------------------------------


def test_normalisation_and_similarity():
    assert neardup.tokens("Profit ROSE,  by 5 %!") == ["profit", "rose", "by", "5"]
    assert neardup.similarity("Profit rose.", "profit   ROSE") == 1.0
    # Word pairs keep order: same words in another order are not twins.
    assert neardup.similarity("profit rose and sales fell", "sales rose and profit fell") < neardup.DEFAULT_THRESHOLD
    sigs = neardup.signatures(["Profit rose.", "profit   ROSE", "Sales fell sharply in May"])
    assert sigs.shape == (3, neardup.NUM_PERM) and sigs.dtype == np.uint16
    assert (sigs[0] == sigs[1]).all() and (sigs[0] != sigs[2]).mean() > 0.9


def test_signatures_do_not_depend_on_batching_and_estimate_jaccard():
    rows = [t for _, t in _phrasebank(300)]
    whole = neardup.signatures(rows)
    assert (np.vstack([neardup.signatures([t]) for t in rows[:50]]) == whole[:50]).all()
    assert (neardup.from_bytes([neardup.to_bytes(s) for s in whole]) == whole).all()
    rng = random.Random(0)
    variants = [_one_token_variant(t, rng) for t in rows]
    est = np.array([neardup.estimated_similarity(a, b) for a, b in zip(whole, neardup.signatures(variants), strict=True)])
    exact = np.array([neardup.similarity(a, b) for a, b in zip(rows, variants, strict=True)])
    assert abs(est.mean() - exact.mean()) < 0.02 and np.abs(est - exact).std() < 0.08


def test_lsh_params_keep_recall_at_the_threshold():
    for t in (0.5, 0.7, 0.8, 0.9):
        bands, rows = neardup.lsh_params(t)
        assert bands * rows <= neardup.NUM_PERM
        assert 1 - (1 - t**rows) ** bands >= neardup.RECALL_AT_THRESHOLD


def test_cluster_assign_is_a_star_around_the_earliest_root():
    texts = {1: "Operating profit rose to EUR 13.1 mn from EUR 8.7 mn in the corresponding period",
             2: "Operating profit rose to EUR 13.1 mn from EUR 8.7 mn in the corresponding quarter",
             3: "The company will open a new office in Helsinki next spring to serve customers",
             4: "operating profit ROSE to EUR 13.1 mn from EUR 8.7 mn in the corresponding period !"}
    ids = sorted(texts)
    sigs = neardup.signatures([texts[i] for i in ids])
    matches = neardup.cluster_assign(new_ids=ids, new_sigs=sigs, root_ids=[], root_sigs=neardup.from_bytes([]),
                                     texts=lambda q: {i: texts[i] for i in q}, threshold=0.7)
    assert set(matches) == {2, 4} and matches[2].root == 1 and matches[4].root == 1
    assert matches[4].similarity == 1.0 and 0.7 <= matches[2].similarity < 1.0
    # Against stored roots: the same answer in two steps.
    again = neardup.cluster_assign(new_ids=[2, 4], new_sigs=sigs[[1, 3]], root_ids=[1, 3], root_sigs=sigs[[0, 2]],
                                   texts=lambda q: {i: texts[i] for i in q}, threshold=0.7)
    assert again == {2: matches[2], 4: matches[4]}
    # A stricter threshold leaves the one-token variant alone.
    strict = neardup.cluster_assign(new_ids=ids, new_sigs=sigs, root_ids=[], root_sigs=neardup.from_bytes([]),
                                    texts=lambda q: {i: texts[i] for i in q}, threshold=0.95)
    assert set(strict) == {4}


def test_shingle_ids_are_exact_even_when_word_hashes_collide(monkeypatch):
    """shingle_ids numbers each text's shingles so that jaccard of the id sets is `similarity` exactly:
    no-word texts, non-ASCII words, repeated words, word order; and when every word hash collides, the
    byte comparison notices and numbers the words by their bytes instead."""
    texts = [t for _, t in _phrasebank(200)] + [
        "", "!!!", "…", "‥", "a a a", "Ünïcödé wörds ÄÖ", "x\x00y", "İstanbul K",
        "。日本語。テスト", "a  b", "b a", "a b", "profit rose and sales fell", "sales rose and profit fell"]
    rng = random.Random(1)
    pairs = [(i, j) for i in range(len(texts) - 14, len(texts)) for j in range(len(texts) - 14, len(texts))]
    pairs += [(rng.randrange(len(texts)), rng.randrange(len(texts))) for _ in range(2000)]
    pairs += [(i, i + 1) for i in range(0, 200, 2)]

    def check() -> None:
        ids, offsets = neardup.shingle_ids(texts)
        sets = [set(ids[offsets[i]:offsets[i + 1]].tolist()) for i in range(len(texts))]
        for i, j in pairs:
            assert neardup.jaccard(sets[i], sets[j]) == neardup.similarity(texts[i], texts[j]), (texts[i], texts[j])
            assert len(sets[i]) == len(neardup.shingles(texts[i]))

    check()
    calls = []

    def same_hash(b):  # every word span hashes to one value: all words "collide"
        calls.append(1)
        return lambda lo, hi: np.zeros(len(lo), dtype=np.uint64)

    monkeypatch.setattr(neardup, "_span_hasher", same_hash)
    assert not neardup._same_words(np.frombuffer(b"ab\x00cd\x00", dtype=np.uint8), np.array([0, 3]), np.array([2, 5]),
                                   np.array([0, 0]))
    check()
    assert calls


def test_cluster_assign_is_the_star_clustering_of_its_candidates():
    """Against a plain reference: records in id order; each joins the earlier root of highest exact Jaccard
    (ties to the earliest) among the roots LSH makes its candidates, if that reaches the threshold; else it
    is a root. Over one-token variants, twins and unrelated rows, with roots stored before and new ones."""
    rng = random.Random(7)
    base = [t for _, t in _phrasebank(150)]
    texts = base + [_one_token_variant(t, rng) for t in base[:100]] + [t + " ( again )" for t in base[:40]]
    rng.shuffle(texts)
    ids = list(range(1, len(texts) + 1))
    sigs = neardup.signatures(texts)
    text_of = dict(zip(ids, texts, strict=True))
    for threshold in (0.6, 0.7, 0.85):
        bands, rows = neardup.lsh_params(threshold)
        keys = neardup.band_keys(sigs, bands, rows)
        roots: list[int] = []
        expected: dict[int, tuple[int, float]] = {}
        for k, rid in enumerate(ids):
            best = None
            for root in roots:  # roots ascending: a tie keeps the earliest
                if (keys[k] == keys[root - 1]).any():
                    s = neardup.similarity(texts[k], text_of[root])
                    if s >= threshold and (best is None or s > best[1]):
                        best = (root, s)
            if best is None:
                roots.append(rid)
            else:
                expected[rid] = best
        got = neardup.cluster_assign(new_ids=ids, new_sigs=sigs, root_ids=[], root_sigs=neardup.from_bytes([]),
                                     texts=lambda q: {i: text_of[i] for i in q}, threshold=threshold)
        assert {rid: (m.root, m.similarity) for rid, m in got.items()} == expected
        assert len(expected) >= 100
        # The same in two calls, the first half's roots stored.
        half = len(ids) // 2
        first = neardup.cluster_assign(new_ids=ids[:half], new_sigs=sigs[:half], root_ids=[],
                                       root_sigs=neardup.from_bytes([]), texts=lambda q: {i: text_of[i] for i in q},
                                       threshold=threshold)
        stored = [i for i in ids[:half] if i not in first]
        second = neardup.cluster_assign(new_ids=ids[half:], new_sigs=sigs[half:], root_ids=stored,
                                        root_sigs=sigs[[i - 1 for i in stored]],
                                        texts=lambda q: {i: text_of[i] for i in q}, threshold=threshold)
        assert {**first, **second} == got


def _cluster_reference(*, new_ids, new_sigs, root_ids, root_sigs, texts, threshold) -> dict:
    """The engine as it was written first, root by root: every root indexed into dict buckets in turn
    (each bucket keeps its first MAX_BUCKET), a record's candidates counted with a Counter, the
    MAX_CANDIDATES sharing most bands (ties to the earlier id) checked with the exact Jaccard."""
    from collections import Counter

    bands, rows = neardup.lsh_params(threshold)
    tables: list[dict] = [{} for _ in range(bands)]

    def index(rid, keys_row):
        for table, key in zip(tables, keys_row, strict=True):
            bucket = table.setdefault(key, [])
            if len(bucket) < neardup.MAX_BUCKET:
                bucket.append(rid)

    for rid, keys_row in zip(list(root_ids), neardup.band_keys(root_sigs, bands, rows).tolist(), strict=True):
        index(rid, keys_row)
    text_of = texts(list(new_ids) + list(root_ids))
    matches = {}
    for rid, keys_row in zip(list(new_ids), neardup.band_keys(new_sigs, bands, rows).tolist(), strict=True):
        hits = Counter(c for table, key in zip(tables, keys_row, strict=True) for c in table.get(key, []))
        ranked = sorted(sorted(hits, key=lambda c: (-hits[c], c))[:neardup.MAX_CANDIDATES])
        best = None
        for cand in ranked:
            s = neardup.similarity(text_of[rid], text_of[cand])
            if s >= threshold and (best is None or s > best[1]):
                best = (cand, s)
        if best is None:
            index(rid, keys_row)
        else:
            matches[rid] = best
    return matches


@pytest.mark.parametrize(("bucket", "candidates"), [(64, 32), (3, 2), (1, 1)])
def test_cluster_assign_buckets_match_indexing_every_root(monkeypatch, bucket, candidates):
    """The vectorised lookup of earlier roots (numpy, per block of records) gives the buckets and the
    candidates of indexing every root in turn, full buckets and the candidate cap included: many rows
    alike (one sentence with a counter, variants of a few) fill the buckets with small caps."""
    monkeypatch.setattr(neardup, "MAX_BUCKET", bucket)
    monkeypatch.setattr(neardup, "MAX_CANDIDATES", candidates)
    rng = random.Random(11)
    base = [t for _, t in _phrasebank(30)]
    vocab = "profit sales rose fell quarter year net operating margin orders grew declined".split()
    # Same opening, tails of their own: many roots share band keys without reaching the threshold.
    alike = [" ".join(base[k % 3].split()[:8] + rng.sample(vocab, 6)) for k in range(120)]
    texts = ([f"{t} ( {k} )" for k in range(6) for t in base[:8]] + [_one_token_variant(t, rng) for t in base * 3]
             + alike)
    rng.shuffle(texts)
    ids = list(range(1, len(texts) + 1))
    sigs = neardup.signatures(texts)
    text_of = dict(zip(ids, texts, strict=True))

    def lookup(q):
        return {i: text_of[i] for i in q}

    for threshold in (0.6, 0.7):
        for split in (0, len(ids) // 3):  # all new, or a third stored as earlier roots
            earlier = _cluster_reference(new_ids=ids[:split], new_sigs=sigs[:split], root_ids=[],
                                         root_sigs=neardup.from_bytes([]), texts=lookup, threshold=threshold)
            stored = [i for i in ids[:split] if i not in earlier]
            args = {"new_ids": ids[split:], "new_sigs": sigs[split:], "root_ids": stored,
                    "root_sigs": sigs[[i - 1 for i in stored]], "texts": lookup, "threshold": threshold}
            got = neardup.cluster_assign(**args)
            assert {rid: (m.root, m.similarity) for rid, m in got.items()} == _cluster_reference(**args)
            assert len(got) >= 50


def test_cluster_assign_tie_goes_to_the_earlier_root():
    """Two roots exactly as similar to a record (0.744 each, 0.59 to each other at threshold 0.7): the record
    joins the earlier, whether the roots are stored already (checked in numpy) or found in the same call."""
    x = "quarterly sales of the nordic paper maker grew while its operating margin narrowed slightly this spring"
    a, b = x + " alpha beta gamma delta epsilon", x + " zeta eta theta iota kappa"
    assert neardup.similarity(x, a) == neardup.similarity(x, b) >= 0.7 > neardup.similarity(a, b)
    sigs = neardup.signatures([a, b, x])
    for first, second in ((1, 2), (2, 1)):
        text_of = {first: a, second: b, 3: x}
        order = [first - 1, second - 1]  # signature rows by id
        stored = neardup.cluster_assign(new_ids=[3], new_sigs=sigs[2:], root_ids=[1, 2], root_sigs=sigs[[0, 1]][order],
                                        texts=lambda q, t=text_of: {i: t[i] for i in q}, threshold=0.7)
        one_call = neardup.cluster_assign(new_ids=[1, 2, 3], new_sigs=np.vstack((sigs[[0, 1]][order], sigs[2:])),
                                          root_ids=[], root_sigs=neardup.from_bytes([]),
                                          texts=lambda q, t=text_of: {i: t[i] for i in q}, threshold=0.7)
        assert stored[3].root == one_call[3].root == 1 and set(one_call) == {3}


# --- at ingest ---------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_one_token_variants_of_another_contributors_records_join_their_clusters():
    datanet = DatanetFactory()
    alice, mallory = contributor("alice"), contributor("mallory")
    rows = _phrasebank(120)
    a = ingest(upload(datanet, alice, "alice.csv", _csv(rows)))
    assert a.record_count == 120
    assert Record.objects.filter(contribution=a, minhash__isnull=True).count() == 0
    rng = random.Random(3)
    copied = rows[:40]
    variants = [(label, _one_token_variant(text, rng)) for label, text in copied]
    exact_sim = [neardup.similarity(t, v) for (_, t), (_, v) in zip(copied, variants, strict=True)]
    # ... plus twins within the upload and honest new rows
    fresh: list[tuple[str, str]] = []
    for label, text in _phrasebank(400)[150:]:  # new sentences, none a near-twin of another (the PhraseBank has some)
        if all(neardup.similarity(text, t) < 0.5 for _, t in rows + fresh):
            fresh.append((label, text))
        if len(fresh) == 20:
            break
    twins = [(label, text + " ( update )") for label, text in fresh[:5]]
    m = ingest(upload(datanet, mallory, "mallory.csv", _csv(variants + fresh + twins)))
    assert m.record_count == 65
    by_text = {r.text: r for r in Record.objects.filter(contribution=m)}
    alice_by_text = {r.text: r for r in Record.objects.filter(contribution=a)}
    joined = 0
    for (_, original), (_, variant), sim in zip(copied, variants, exact_sim, strict=True):
        rec = by_text[variant]
        if sim >= datanet.near_duplicate_threshold:
            joined += 1
            assert rec.near_dup_of_id == alice_by_text[original].id
            assert rec.near_dup_similarity == pytest.approx(sim, abs=1e-6)
        else:
            assert rec.near_dup_of_id is None or rec.near_dup_similarity >= datanet.near_duplicate_threshold
    assert joined >= 36  # ~97% of one-token variants of a sentence this long reach 0.7
    for (_, text), (_, twin) in zip(fresh[:5], twins, strict=True):
        assert by_text[twin].near_dup_of_id == by_text[text].id or by_text[text].near_dup_of_id == by_text[twin].id
    assert all(by_text[t].near_dup_of_id is None for _, t in fresh[5:])
    assert Record.objects.filter(contribution=a, near_dup_of__isnull=False).count() == 0  # earlier ones never move

    summary = selectors.contribution_near_duplicates(contribution=m)
    assert summary["twins"] == 5 and summary["copies_of_earlier"] == joined
    assert summary["records"] == joined + 5
    assert summary["by_contributor"] == [{"contributor_id": alice.id, "username": "alice", "count": joined}]
    ex = summary["examples"][0]
    assert ex["of_contributor"] == "alice" and ex["similarity"] >= datanet.near_duplicate_threshold

    # The curator sees it on the contribution page; the API detail carries the same counts.
    curator = curator_of(datanet, "carol")
    client = APIClient()
    client.force_login(curator)
    page = client.get(reverse("datanets:contribution", args=[m.id]))
    html = page.content.decode()
    assert page.status_code == 200 and 'id="near-duplicates"' in html
    assert f"{joined} copies of earlier records" in html and f"alice ({joined})" in html
    data = client.get(f"/api/v1/contributions/{m.id}/").json()
    assert data["near_duplicates"]["copies_of_earlier"] == joined
    assert data["near_duplicates"]["by_contributor"][0]["username"] == "alice"

    # The rebuild recomputes the same clusters from the texts.
    before = dict(Record.objects.filter(datanet=datanet).values_list("id", "near_dup_of_id"))
    services.datanet_near_duplicates_rebuild(datanet=datanet)
    assert dict(Record.objects.filter(datanet=datanet).values_list("id", "near_dup_of_id")) == before


@pytest.mark.django_db
def test_clusters_do_not_depend_on_the_phase_2_chunk_size(monkeypatch):
    """Phase 2 clusters the new rows in chunks (bounded memory); a chunk's rows must see the roots of the
    chunks before it, so any chunk size gives the clusters of one pass, ids in file order."""
    rng = random.Random(5)
    base = _phrasebank(60)
    rows = base + [(label, _one_token_variant(text, rng)) for label, text in base[:30]] + base[:3]  # + exact dups
    rng.shuffle(rows)

    def clusters(chunk: int) -> tuple[list, int]:
        monkeypatch.setattr(services, "NEAR_DUP_CHUNK", chunk)
        datanet = DatanetFactory()
        c = ingest(upload(datanet, contributor(), "x.csv", _csv(rows)))
        recs = list(Record.objects.filter(contribution=c).order_by("id").values_list("id", "row_number", "near_dup_of_id",
                                                                                       "near_dup_similarity"))
        assert [r[1] for r in recs] == sorted(r[1] for r in recs)  # ids follow the file's rows
        row_of = {rid: row for rid, row, _, _ in recs}
        return [(row, row_of.get(root), sim) for _, row, root, sim in recs], c.duplicates_dropped

    whole, dropped = clusters(10_000)
    assert dropped == 3 and sum(1 for _, root, _ in whole if root is not None) >= 25
    assert clusters(7) == (whole, dropped)


@pytest.mark.django_db
def test_later_same_label_copies_are_not_trained_on_and_a_copy_of_a_record_outside_the_version_is():
    """The fine-tune's training set (version_training_records) holds each cluster's earliest copy once: a
    later copy with the same label is left out (neither weighted twice in training nor paid beside the
    original), one with another label stays (a different example), and so does a copy whose original the
    version does not hold (its contribution rejected)."""
    datanet = DatanetFactory()
    cura, alice, mallory, bob = curator_of(datanet, "cura"), contributor("alice"), contributor("mallory"), contributor("bob")
    rows = _phrasebank(60)
    a = services.contribution_accept(contribution=ingest(upload(datanet, alice, "a.csv", _csv(rows[:30]))), curator=cura)
    b = ingest(upload(datanet, bob, "b.csv", _csv(rows[30:60])))
    rng = random.Random(5)
    other = {"positive": "negative", "negative": "neutral", "neutral": "positive"}
    same = [(label, _one_token_variant(text, rng)) for label, text in rows[:10]]  # copies of alice's, same label
    relabelled = [(other[label], _one_token_variant(text, rng)) for label, text in rows[10:15]]  # another label
    of_bob = [(label, _one_token_variant(text, rng)) for label, text in rows[30:35]]  # copies of bob's records
    m = ingest(upload(datanet, mallory, "m.csv", _csv(same + relabelled + of_bob)))
    services.contribution_accept(contribution=m, curator=cura)
    services.contribution_reject(contribution=b, curator=cura, reason="off topic")
    version = services.datanet_version_create(datanet=datanet, user=cura)

    copies = {r.text: r for r in Record.objects.filter(contribution=m)}
    later_same = {copies[t].id for _, t in same if copies[t].near_dup_of_id is not None}
    assert len(later_same) >= 8  # one-token variants of 12+-word sentences: nearly all join alice's clusters
    assert all(Record.objects.get(id=i).near_dup_of.contribution_id == a.id for i in later_same)
    assert sum(copies[t].near_dup_of_id is not None for _, t in relabelled) >= 4
    assert sum(copies[t].near_dup_of_id is not None for _, t in of_bob) >= 4  # their root is bob's, rejected

    trained = set(selectors.version_training_records(version=version).values_list("id", flat=True))
    everything = set(version.records.values_list("id", flat=True))
    assert everything - trained == later_same
    assert set(Record.objects.filter(contribution=a).values_list("id", flat=True)) <= trained
    assert {copies[t].id for _, t in relabelled + of_bob} <= trained
    # The version itself (its root, counts and export) still holds every accepted record.
    assert version.record_count == len(everything) == 30 + 20
