"""Span attribution for generated text: which training records does a generation repeat? (no Django)

The engine tokenises the training records (the model's tokenizer, or UTF-8 bytes when there is
none), builds a suffix array over their token ids (``_spans_index``: libdivsufsort, memory-mapped
``.npy`` files), and for a generated text finds every *maximal* span of at least ``min_span`` tokens
that occurs in the corpus, with its exact count and the records holding it. A span's weight is
``length * log2(1 + corpus_tokens / count)``; it goes whole to the span's earliest holder (smallest
`Record.order`, then row), so repeats and later copies of a text earn nothing; contributors get the
weight of their records.

    engine = SpanEngine(tokenizer=tok, min_span=8)
    index = engine.fit(None, records, directory="var/attribution/42")   # Sequence[Record]
    engine.attribute(index, [Query(text=prompt, label=generated)], top_k=10)
    engine.explain(index, generated)          # spans with char offsets, record and contributor shares
    engine.add_records(index, new_records)    # small delta segment, merged at query time
    engine.rebuild(index)                     # one base segment again (a background task)

See docs/spans.md.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from attribution.engines._spans_index import SpanMatch, SpanResult, SuffixArray, SuffixArrayError
from attribution.engines.base import (
    AttributionEngine,
    AttributionResult,
    IndexBase,
    Query,
    QueryAttribution,
    Record,
    top_k_from_scores,
)

__all__ = ["SpanEngine", "SpanEngineIndex", "SuffixArray", "SuffixArrayError", "SpanMatch", "SpanResult", "ByteTokenizer"]


class ByteTokenizer:
    """UTF-8 bytes as token ids (vocabulary 256); offsets map tokens back to characters."""

    name = "bytes"

    def encode(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        ids: list[int] = []
        offsets: list[tuple[int, int]] = []
        for ci, ch in enumerate(text):
            b = ch.encode("utf-8")
            ids.extend(b)
            offsets.extend([(ci, ci + 1)] * len(b))
        return ids, offsets


class _HFTokenizer:
    def __init__(self, tok: Any):
        self.tok = tok
        self.name = getattr(tok, "name_or_path", None) or type(tok).__name__

    def encode(self, text: str) -> tuple[list[int], list[tuple[int, int]] | None]:
        if getattr(self.tok, "is_fast", False):
            # verbose=False: a record longer than the model's context is fine here (no model sees it).
            enc = self.tok(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
            return list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]
        return list(self.tok.encode(text, add_special_tokens=False)), None


def _wrap_tokenizer(tok: Any):
    if tok is None or tok == "bytes":
        return ByteTokenizer()
    if isinstance(tok, ByteTokenizer | _HFTokenizer):
        return tok
    if hasattr(tok, "encode"):
        return _HFTokenizer(tok)
    raise SuffixArrayError("tokenizer must be None, 'bytes' or a Hugging Face tokenizer")


@dataclass
class SpanEngineIndex(IndexBase):
    """IndexBase + the suffix-array directory (`spans/` next to index.json once saved)."""

    directory: Path | None = None

    def __post_init__(self):
        self._spans: SuffixArray | None = None

    @property
    def spans(self) -> SuffixArray:
        if self._spans is None:
            if self.directory is None:
                raise SuffixArrayError("span index has no directory")
            self._spans = SuffixArray(self.directory / "spans")
        return self._spans

    def reopen(self) -> None:
        self._spans = None

    def _save_payload(self, directory: Path) -> None:
        directory = Path(directory)
        if self.directory is not None and directory.resolve() != self.directory.resolve():
            if (directory / "spans").exists():
                shutil.rmtree(directory / "spans")
            shutil.copytree(self.directory / "spans", directory / "spans")
            self.directory = directory
            self.reopen()


class SpanEngine(AttributionEngine):
    """Suffix-array span attribution behind the shared engine interface."""

    name = "spans"

    def __init__(
        self,
        *,
        tokenizer: Any = None,
        min_span: int = 8,
        max_span: int = 1024,
        max_occurrences: int = 1000,
    ):
        if min_span < 1:
            raise SuffixArrayError("min_span must be >= 1")
        self._tokenizer_arg = tokenizer
        self.tokenizer = _wrap_tokenizer(tokenizer)
        self.min_span = int(min_span)
        self.max_span = int(max_span)
        self.max_occurrences = int(max_occurrences)

    # --- building ---------------------------------------------------------------------------
    @staticmethod
    def _order(records: Sequence[Record], first_row: int) -> np.ndarray:
        """Each record's accept-order key; a record without one is ordered by its row."""
        return np.array([first_row + i if r.order is None else int(r.order) for i, r in enumerate(records)],
                        dtype=np.int64)

    def _tokenize_records(self, records: Sequence[Record]) -> tuple[np.ndarray, np.ndarray]:
        arrays = [np.asarray(self.tokenizer.encode(r.text)[0], dtype=np.int64) for r in records]
        lengths = np.array([len(a) for a in arrays], dtype=np.int64)
        tokens = np.concatenate(arrays) if arrays else np.zeros(0, dtype=np.int64)
        return tokens, lengths

    def fit(
        self, model: Any, train_dataset: Sequence[Record], *, directory: str | os.PathLike | None = None
    ) -> SpanEngineIndex:
        """Index `train_dataset`. `model` may be a tokenizer (used when the engine has none) or None."""
        if self._tokenizer_arg is None and model is not None and hasattr(model, "encode"):
            self.tokenizer = _wrap_tokenizer(model)
        records = list(train_dataset)
        if not records:
            raise SuffixArrayError("no records to index")
        ids = [str(r.id) for r in records]
        if len(set(ids)) != len(ids):
            raise SuffixArrayError("record ids must be unique")
        directory = Path(directory) if directory is not None else Path(tempfile.mkdtemp(prefix="spans-"))
        tokens, lengths = self._tokenize_records(records)
        SuffixArray.create(directory / "spans", tokens, lengths, order=self._order(records, 0))
        index = SpanEngineIndex(
            method=self.name,
            record_ids=ids,
            contributors=[r.contributor for r in records],
            labels=[r.label for r in records],
            meta=self._meta(),
            model=model,
            directory=directory,
        )
        index.save(directory)
        return index

    def _meta(self) -> dict:
        return {
            "tokenizer": self.tokenizer.name,
            "min_span": self.min_span,
            "max_span": self.max_span,
            "max_occurrences": self.max_occurrences,
        }

    def add_records(self, index: SpanEngineIndex, records: Sequence[Record]) -> SpanEngineIndex:
        """Add records as a delta segment: no rebuild of what is indexed already."""
        records = list(records)
        if not records:
            return index
        known = set(index.record_ids)
        new_ids = [str(r.id) for r in records]
        if known.intersection(new_ids) or len(set(new_ids)) != len(new_ids):
            raise SuffixArrayError("record ids must be unique")
        tokens, lengths = self._tokenize_records(records)
        arrays = np.split(tokens, np.cumsum(lengths)[:-1]) if len(lengths) > 1 else [tokens]
        index.spans.add(arrays, order=self._order(records, len(index.record_ids)))
        index.record_ids.extend(new_ids)
        index.contributors.extend(r.contributor for r in records)
        index.labels.extend(r.label for r in records)
        index.reopen()
        index.save(index.directory)
        return index

    def rebuild(self, index: SpanEngineIndex) -> SpanEngineIndex:
        """Merge every segment into one base segment."""
        index.spans.compact()
        index.reopen()
        return index

    def load_index(self, directory: str | os.PathLike, *, model: Any = None) -> SpanEngineIndex:
        """Open a saved index; `model` may be the tokenizer (used when the engine was given none)."""
        if self._tokenizer_arg is None and model is not None and hasattr(model, "encode"):
            self.tokenizer = _wrap_tokenizer(model)
        header = IndexBase.read_header(directory)
        if header.get("method") != self.name:
            raise SuffixArrayError(f"{directory} holds a {header.get('method')!r} index, not spans")
        built_with = header.get("meta", {}).get("tokenizer")
        if (built_with == "bytes") != (self.tokenizer.name == "bytes"):
            raise SuffixArrayError(f"index was built with tokenizer {built_with!r}, engine has {self.tokenizer.name!r}")
        index = SpanEngineIndex(
            method=header["method"],
            record_ids=header["record_ids"],
            contributors=header["contributors"],
            labels=header.get("labels", []),
            meta=header.get("meta", {}),
            model=model,
            directory=Path(directory),
        )
        index.spans  # noqa: B018 - open now so a broken index fails here
        return index

    # --- querying ---------------------------------------------------------------------------
    def _text_of(self, query: Query | str) -> str:
        if isinstance(query, str):
            return query
        return query.label if isinstance(query.label, str) and query.label else query.text

    def _encode(self, text: str, context: str) -> tuple[list[int], list[tuple[int, int]] | None, int, int]:
        """(ids, offsets, first, shift): the token ids of context + text, the index of the first token
        of `text` (one may straddle both) and the characters of context before it (offsets - shift
        are offsets into `text`). A slow tokenizer gives no offsets: then the text alone."""
        if context:
            ids, offsets = self.tokenizer.encode(context + text)
            if offsets is not None:
                first = next((i for i, (_, end) in enumerate(offsets) if end > len(context)), len(ids))
                return ids, offsets, first, len(context)
        ids, offsets = self.tokenizer.encode(text)
        return ids, offsets, 0, 0

    def spans_for_text(
        self, index: SpanEngineIndex, text: str, *, context: str = ""
    ) -> tuple[SpanResult, list[tuple[int, int]] | None]:
        """Spans of `text`; with `context` (the prompt it continues), spans may start in the context
        but must reach into `text` (see SuffixArray.spans). Offsets are into `text` (below 0 in context)."""
        ids, offsets, first, shift = self._encode(text, context)
        result = index.spans.spans(
            ids, min_len=self.min_span, max_len=self.max_span, max_occurrences=self.max_occurrences, first=first
        )
        if offsets is not None and shift:
            offsets = [(a - shift, b - shift) for a, b in offsets]
        return result, offsets

    def attribute(
        self,
        index: SpanEngineIndex,
        queries: Sequence[Query],
        *,
        top_k: int = 10,
        return_matrix: bool = False,
    ) -> AttributionResult:
        out: list[QueryAttribution] = []
        matrix = np.zeros((len(queries), len(index)), dtype=np.float32) if return_matrix else None
        for qi, query in enumerate(queries):
            result, _ = self.spans_for_text(index, self._text_of(query))
            ranked = sorted(result.row_scores.items(), key=lambda kv: (-kv[1], kv[0]))[: max(0, top_k)]
            out.append(
                QueryAttribution(
                    rows=[r for r, _ in ranked],
                    record_ids=[index.record_ids[r] for r, _ in ranked],
                    scores=[float(s) for _, s in ranked],
                )
            )
            if matrix is not None:
                for r, s in result.row_scores.items():
                    matrix[qi, r] = s
        if matrix is not None:
            out = top_k_from_scores(matrix, index.record_ids, top_k) if len(index) else out
        return AttributionResult(method=self.name, queries=out, matrix=matrix)

    def self_influence(self, index: SpanEngineIndex) -> np.ndarray:
        """Share of each record's own span weight that lands on itself (1.0 = unique text)."""
        out = np.zeros(len(index), dtype=np.float32)
        row = 0
        for seg in index.spans.segments:
            for k in range(seg.n_records):
                res = index.spans.spans(seg.record_tokens(k), min_len=self.min_span, max_len=self.max_span)
                total = sum(res.row_scores.values())
                out[row] = res.row_scores.get(row, 0.0) / total if total else 0.0
                row += 1
        return out

    def explain(self, index: SpanEngineIndex, text: str, *, top_k: int = 10, context: str = "") -> dict:
        """Everything the playground shows: spans (with character offsets into `text`), records,
        contributor shares. With `context` (the prompt), a span may begin in the prompt; its offsets
        and "tokens" then cover its part in `text`, and "context_tokens" counts the rest."""
        result, offsets = self.spans_for_text(index, text, context=context)
        total = sum(result.row_scores.values())
        spans = []
        for s in result.spans:
            start = max(s.start, result.first)
            char_start = char_end = None
            if offsets:
                char_start = max(offsets[start][0], 0)
                char_end = offsets[s.end - 1][1]
            spans.append(
                {
                    "start": start - result.first,
                    "end": s.end - result.first,
                    "tokens": s.end - start,
                    "context_tokens": start - s.start,
                    "char_start": char_start,
                    "char_end": char_end,
                    "text": text[char_start:char_end] if char_start is not None else None,
                    "count": s.count,
                    "weight": s.weight,
                    "records": {index.record_ids[r]: n for r, n in sorted(s.rows.items())},
                    "credited": index.record_ids[s.credited] if s.credited >= 0 else None,
                    "truncated": s.truncated,
                }
            )
        ranked = sorted(result.row_scores.items(), key=lambda kv: (-kv[1], kv[0]))
        contributors: dict[str, float] = {}
        for r, score in ranked:
            c = index.contributors[r] if r < len(index.contributors) else None
            if c is not None:
                contributors[str(c)] = contributors.get(str(c), 0.0) + score
        return {
            "method": self.name,
            "spans": spans,
            "coverage": result.coverage,
            "records": [
                {"record_id": index.record_ids[r], "score": s, "share": s / total if total else 0.0}
                for r, s in ranked[:top_k]
            ],
            "contributor_shares": {c: s / total for c, s in contributors.items()} if total else {},
        }
