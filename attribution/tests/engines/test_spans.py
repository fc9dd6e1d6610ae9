"""Span engine: suffix-array answers checked against brute force on small random corpora."""

from __future__ import annotations

import tempfile
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attribution.engines.base import Query, Record
from attribution.engines.spans import SpanEngine, SuffixArray, SuffixArrayError

# Small alphabets make repeats likely; ids above 255 and 65535 exercise 2- and 4-byte tokens.
ALPHABETS = [[0, 1, 2], [5, 300, 301], [7, 70000, 70001, 1]]


def occurrences(docs, pat):
    out = Counter()
    m = len(pat)
    for d, doc in enumerate(docs):
        for i in range(len(doc) - m + 1):
            if doc[i : i + m] == pat:
                out[d] += 1
    return out


def brute_spans(docs, q, n):
    length = len(q)

    def occurs(i, j):
        return bool(occurrences(docs, q[i:j]))

    found = []
    for i in range(length):
        for j in range(i + n, length + 1):
            if not occurs(i, j):
                break
            if (i == 0 or not occurs(i - 1, j)) and (j == length or not occurs(i, j + 1)):
                occ = occurrences(docs, q[i:j])
                found.append((i, j, sum(occ.values()), dict(occ)))
    return found


@st.composite
def corpus_and_query(draw):
    alphabet = draw(st.sampled_from(ALPHABETS))
    tok = st.sampled_from(alphabet)
    docs = draw(st.lists(st.lists(tok, max_size=25), min_size=1, max_size=8))
    if draw(st.booleans()) and any(docs):
        # Queries that copy a piece of the corpus, so long spans occur.
        src = draw(st.sampled_from([d for d in docs if d]))
        a = draw(st.integers(0, len(src) - 1))
        b = draw(st.integers(a + 1, len(src)))
        q = draw(st.lists(tok, max_size=4)) + src[a:b] + draw(st.lists(tok, max_size=4))
    else:
        q = draw(st.lists(tok, max_size=20))
    n = draw(st.integers(1, 4))
    return docs, q, n


@settings(max_examples=80, deadline=None)
@given(corpus_and_query(), st.sampled_from([3, 4]))
def test_spans_match_brute_force(data, sa_bytes):
    docs, q, n = data
    with tempfile.TemporaryDirectory() as d:
        # Both suffix-array encodings: packed 3-byte pointers (the default below 2**24 positions) and uint32.
        index = SuffixArray.create_from_lists(d, docs, sa_bytes=sa_bytes)
        result = index.spans(q, min_len=n, max_occurrences=10_000)
        got = [(s.start, s.end, s.count, s.rows) for s in result.spans]
        assert got == brute_spans(docs, q, n)
        assert all(not s.truncated for s in result.spans)
        # With the first k tokens as context (a prompt): the spans that reach past it, weighed by
        # their tokens past it only.
        k = len(q) // 2
        tail = index.spans(q, min_len=n, max_occurrences=10_000, first=k)
        assert [(s.start, s.end, s.count) for s in tail.spans] == [
            (s.start, s.end, s.count) for s in result.spans if s.end > k
        ]
        for t, s in zip(tail.spans, [s for s in result.spans if s.end > k], strict=True):
            assert t.weight == pytest.approx(s.weight * (s.end - max(s.start, k)) / s.length)


@settings(max_examples=60, deadline=None)
@given(corpus_and_query(), st.integers(1, 5))
def test_counts_and_longest_suffix_exact(data, m):
    docs, q, _ = data
    with tempfile.TemporaryDirectory() as d:
        index = SuffixArray.create_from_lists(d, docs)
        for i in range(0, max(1, len(q) - m + 1)):
            pat = q[i : i + m]
            if pat:
                assert index.count(pat) == sum(occurrences(docs, pat).values())
        best = 0
        for k in range(1, len(q) + 1):
            if occurrences(docs, q[len(q) - k :]):
                best = k
        want = (best, sum(occurrences(docs, q[len(q) - best :]).values())) if best else (0, 0)
        assert index.longest_suffix_count(q) == want


@settings(max_examples=40, deadline=None)
@given(corpus_and_query(), st.data())
def test_delta_segments_merge_like_one_index(data, draw):
    docs, q, n = data
    cut = draw.draw(st.integers(0, len(docs) - 1))
    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
        whole = SuffixArray.create_from_lists(a, docs)
        inc = SuffixArray.create_from_lists(b, docs[: cut + 1])
        for doc in docs[cut + 1 :]:
            inc = inc.add([doc])  # one delta segment per record
        assert len(inc.segments) == len(docs) - cut
        want = [(s.start, s.end, s.count, s.rows) for s in whole.spans(q, min_len=n).spans]
        assert [(s.start, s.end, s.count, s.rows) for s in inc.spans(q, min_len=n).spans] == want
        compacted = inc.compact()
        assert len(compacted.segments) == 1
        assert [(s.start, s.end, s.count, s.rows) for s in compacted.spans(q, min_len=n).spans] == want


@pytest.mark.parametrize("sa_bytes", [None, 4])
def test_on_disk_format_is_compact_and_memory_mapped(tmp_path, sa_bytes):
    rng = np.random.default_rng(1)
    docs = [rng.integers(0, 50, size=200).tolist() for _ in range(50)]
    index = SuffixArray.create_from_lists(tmp_path, docs, sa_bytes=sa_bytes)
    seg = index.segments[0]
    raw = seg.sa if sa_bytes == 4 else seg.sa.raw
    assert isinstance(seg.tokens, np.memmap) and isinstance(raw, np.memmap)
    assert seg.tokens.dtype == np.dtype(">u2")
    assert raw.dtype == np.uint32 if sa_bytes == 4 else (raw.dtype == np.uint8 and raw.shape == (10_050, 3))
    # 2 bytes per token + 3 (small segments) or 4 per suffix-array entry, a little per record and header.
    per = 2 + (sa_bytes or 3)
    assert index.nbytes < per * (10_000 + 50) + 8 * 50 + 4096
    # The suffix array is sorted: consecutive suffixes are in non-decreasing order.
    toks = np.asarray(seg.tokens).astype(np.int64)
    for a, b in zip(seg.sa[:-1], seg.sa[1:], strict=True):
        x, y = toks[a : a + 30].tolist(), toks[b : b + 30].tolist()
        assert x[: len(y)] <= y[: len(x)]


def test_max_occurrences_caps_listed_records(tmp_path):
    docs = [[1, 2, 3, 4]] * 30
    index = SuffixArray.create_from_lists(tmp_path, docs)
    (span,) = index.spans([9, 1, 2, 3, 4, 9], min_len=2, max_occurrences=5).spans
    assert span.count == 30 and sum(span.rows.values()) == 5 and span.truncated
    assert (span.start, span.end) == (1, 5)


def test_bad_input_is_refused(tmp_path):
    with pytest.raises(SuffixArrayError, match="at least one record"):
        SuffixArray.create_from_lists(tmp_path / "a", [])
    with pytest.raises(SuffixArrayError, match=">= 0"):
        SuffixArray.create_from_lists(tmp_path / "b", [[1, -2]])
    with pytest.raises(SuffixArrayError, match="no span index"):
        SuffixArray(tmp_path / "missing")
    index = SuffixArray.create_from_lists(tmp_path / "c", [[1, 2, 3]])
    with pytest.raises(SuffixArrayError, match=">= 0"):
        index.spans([1, -1])
    with pytest.raises(SuffixArrayError, match="min_len"):
        index.spans([1, 2], min_len=0)
    # A query token the corpus's token width cannot hold matches nothing (and crosses no separator).
    assert index.spans([1, 2, 3, 70000, 1, 2], min_len=1).spans[0].end == 3
    assert index.spans([], min_len=1).spans == []


LINES = [
    "To be, or not to be, that is the question:",
    "Whether 'tis nobler in the mind to suffer",
    "The slings and arrows of outrageous fortune,",
    "Now is the winter of our discontent",
]


def test_engine_explains_generated_text_with_char_offsets(tmp_path):
    records = [Record(id=f"r{i}", text=t, contributor=f"c{i % 2}") for i, t in enumerate(LINES)]
    engine = SpanEngine(min_span=12)
    index = engine.fit(None, records, directory=tmp_path / "idx")
    generated = "He said: the slings and arrows of outrageous fortune — and then the winter of our discontent!"
    out = engine.explain(index, generated)
    texts = [s["text"] for s in out["spans"]]
    assert texts == ["he slings and arrows of outrageous fortune", " the winter of our discontent"]
    assert {s["records"].popitem()[0] for s in out["spans"]} == {"r2", "r3"}
    assert out["records"][0]["record_id"] == "r2"  # the longer span weighs more
    assert set(out["contributor_shares"]) == {"c0", "c1"}
    assert abs(sum(out["contributor_shares"].values()) - 1) < 1e-9

    result = engine.attribute(index, [Query(text="prompt", label=generated)], top_k=1, return_matrix=True)
    assert result.queries[0].record_ids == ["r2"] and result.matrix.shape == (1, 4)

    # Saved and loaded back; an added record is found through its delta segment without a rebuild.
    loaded = engine.load_index(tmp_path / "idx")
    assert loaded.record_ids == index.record_ids
    engine.add_records(
        loaded, [Record(id="r9", text="Friends, Romans, countrymen, lend me your ears", contributor="c9")]
    )
    assert len(loaded.spans.segments) == 2
    out = engine.explain(engine.load_index(tmp_path / "idx"), "friends, Romans, countrymen, lend me")
    assert out["records"][0]["record_id"] == "r9" and out["contributor_shares"] == {"c9": 1.0}
    engine.rebuild(loaded)
    assert len(engine.load_index(tmp_path / "idx").spans.segments) == 1
    assert engine.self_influence(loaded).tolist() == [1.0] * 5

    with pytest.raises(SuffixArrayError, match="unique"):
        engine.add_records(loaded, [Record(id="r9", text="again")])
    with pytest.raises(SuffixArrayError, match="no records"):
        engine.fit(None, [], directory=tmp_path / "empty")


def test_explain_with_the_prompt_as_context_credits_what_the_model_carried_on(tmp_path):
    records = [Record(id=f"r{i}", text=t, contributor=f"c{i}") for i, t in enumerate(LINES)]
    engine = SpanEngine(min_span=16)
    index = engine.fit(None, records, directory=tmp_path)
    prompt, generated = "Hamlet: to be, or not to be, that is", " the question. So he said."
    # Alone, the answer's reuse (" the question", 13 bytes) is too short to count; after its prompt it
    # carries on line 0 ("o be, or not to be, that is" + " the question": "To" has a capital T there).
    assert engine.explain(index, generated)["spans"] == []
    out = engine.explain(index, generated, context=prompt)
    (span,) = out["spans"]
    assert span["text"] == " the question" and generated[span["char_start"] : span["char_end"]] == span["text"]
    assert span["tokens"] == len(" the question") and span["context_tokens"] == len("o be, or not to be, that is")
    assert span["records"] == {"r0": 1} and out["contributor_shares"] == {"c0": 1.0}
    # Coverage counts the answer's tokens (bytes here) only.
    assert out["coverage"] == pytest.approx(len(" the question") / len(generated))
    # A prompt that quotes the corpus earns nothing when the answer does not carry it on.
    assert engine.explain(index, " Hello there, friend.", context="The slings and arrows of outrageous fortune,")[
        "spans"
    ] == []


def test_engine_with_a_subword_tokenizer(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.train_from_iterator(LINES * 5, trainers.BpeTrainer(vocab_size=300, special_tokens=["[UNK]"]))
    hf = PreTrainedTokenizerFast(tokenizer_object=tok)
    engine = SpanEngine(tokenizer=hf, min_span=3)
    index = engine.fit(None, [Record(id=str(i), text=t) for i, t in enumerate(LINES)], directory=tmp_path)
    out = engine.explain(index, "Now is the winter of our discontent")
    assert out["spans"][0]["text"] == "Now is the winter of our discontent"
    assert out["records"][0]["record_id"] == "3"


# --- credit: once per span, to the earliest accepted holder ------------------------------------------


def brute_credit(docs, q, n, order, first=0):
    """Row scores by the rule, from brute-force spans: each distinct span's weight to its earliest holder."""
    corpus = sum(len(d) for d in docs)
    scores, seen = {}, set()
    for i, j, count, occ in brute_spans(docs, q, n):
        if j <= first:
            continue
        weight = (j - max(i, first)) * np.log2(1 + max(corpus, 1) / count)
        key = tuple(q[i:j])
        if key in seen:
            continue
        seen.add(key)
        row = min(occ, key=lambda r: (order[r], r))
        scores[row] = scores.get(row, 0.0) + weight
    return scores


@st.composite
def corpus_query_order(draw):
    docs, q, n = draw(corpus_and_query())
    # Order keys with ties, unrelated to the rows (a record accepted earlier may sit in a later row).
    order = draw(st.lists(st.integers(0, 5), min_size=len(docs), max_size=len(docs)))
    return docs, q, n, order


@settings(max_examples=80, deadline=None)
@given(corpus_query_order(), st.integers(1, 4))
def test_credit_matches_brute_force(data, max_occurrences):
    docs, q, n, order = data
    with tempfile.TemporaryDirectory() as d:
        index = SuffixArray.create_from_lists(d, docs, order=order)
        result = index.spans(q, min_len=n, max_occurrences=max_occurrences)
        want = brute_credit(docs, q, n, order)
        assert result.row_scores == pytest.approx(want)
        for s in result.spans:
            occ = occurrences(docs, q[s.start : s.end])
            earliest = sorted(occ, key=lambda r: (order[r], r))
            # The holders listed are the earliest ones, whatever the suffix-array order.
            assert list(s.rows) == earliest[:max_occurrences]
            assert s.rows == {r: occ[r] for r in earliest[:max_occurrences]}
            assert s.truncated == (len(earliest) > max_occurrences)
            assert s.credited in (earliest[0], -1)
        k = len(q) // 2
        assert index.spans(q, min_len=n, first=k).row_scores == pytest.approx(brute_credit(docs, q, n, order, k))


@settings(max_examples=60, deadline=None)
@given(corpus_query_order(), st.data())
def test_repeats_and_later_copies_capture_nothing(data, draw):
    docs, q, n, order = data
    src = draw.draw(st.integers(0, len(docs) - 1))
    times = draw.draw(st.integers(2, 6))
    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
        base = SuffixArray.create_from_lists(a, docs, order=order).spans(q, min_len=n)
        # A later contributor uploads a record that repeats record `src` many times, and a plain copy.
        late = max(order) + 1
        gamed = SuffixArray.create_from_lists(b, [*docs, docs[src] * times, list(docs[src])],
                                            order=[*order, late, late]).spans(q, min_len=n)
        copies = {len(docs), len(docs) + 1}
        spans_inside_src = [s for s in base.spans if occurrences([docs[src]], q[s.start : s.end])]
        # Every span the original holds stays credited to an earlier record, never to the copies.
        assert not any(s.credited in copies for s in gamed.spans if (s.start, s.end) in
                       {(t.start, t.end) for t in spans_inside_src})
        # The copies earn only spans that exist nowhere else (crossing the repetition's seams).
        for s in gamed.spans:
            if s.credited in copies:
                assert not occurrences(docs, q[s.start : s.end])


def test_earliest_accepted_copy_wins_over_rows_and_repetition(tmp_path):
    passage = list(range(10, 30))
    docs = [passage * 50, [1, 2, 3], list(passage)]  # row 0: the passage 50 times; row 2: once
    index = SuffixArray.create_from_lists(tmp_path, docs, order=[7, 0, 3])  # row 2 was accepted before row 0
    (span,) = index.spans([99, *passage, 98], min_len=5, max_occurrences=1).spans
    assert span.count == 51 and span.credited == 2 and span.rows == {2: 1} and span.truncated
    result = index.spans([99, *passage, 98], min_len=5)
    assert set(result.row_scores) == {2}
    # The same passage twice in the query (a looping generation) is credited once.
    twice = index.spans([*passage, 97, *passage], min_len=5)
    assert len(twice.spans) == 2 and [s.credited for s in twice.spans] == [2, -1]
    assert twice.row_scores == pytest.approx({2: twice.spans[0].weight})


@settings(max_examples=30, deadline=None)
@given(corpus_query_order(), st.data())
def test_order_survives_delta_segments_and_compaction(data, draw):
    docs, q, n, order = data
    cut = draw.draw(st.integers(0, len(docs) - 1))
    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
        whole = SuffixArray.create_from_lists(a, docs, order=order).spans(q, min_len=n)
        inc = SuffixArray.create_from_lists(b, docs[: cut + 1], order=order[: cut + 1])
        for doc, key in zip(docs[cut + 1 :], order[cut + 1 :], strict=True):
            inc = inc.add([doc], order=[key])
        assert inc.spans(q, min_len=n).row_scores == pytest.approx(whole.row_scores)
        assert inc.compact().spans(q, min_len=n).row_scores == pytest.approx(whole.row_scores)


def test_engine_passes_the_order_through(tmp_path):
    text = "The slings and arrows of outrageous fortune,"
    records = [Record(id="copy", text=text, contributor="late", order=5),
               Record(id="orig", text=text, contributor="first", order=1)]
    engine = SpanEngine(min_span=12)
    index = engine.fit(None, records, directory=tmp_path)
    out = engine.explain(index, "he said: " + text)
    assert out["contributor_shares"] == {"first": 1.0} and out["spans"][0]["credited"] == "orig"
    engine.add_records(index, [Record(id="later", text=text + " and more", contributor="x", order=0)])
    out = engine.explain(engine.load_index(tmp_path), "he said: " + text)
    assert out["contributor_shares"] == {"x": 1.0}  # an order key earlier than every indexed one wins
