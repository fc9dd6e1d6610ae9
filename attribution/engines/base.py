"""The one interface every attribution method implements (plain Python; no Django).

An engine is fitted once on a model and its training records and gives back an *index*; the index
answers queries. Methods differ in what "model" is (a PEFT LoRA model for the gradient engines, a
tokenizer or None for a text-span engine) and in what the index holds, not in how they are called:

    engine = SomeEngine(**settings)
    index = engine.fit(model, records)            # records: Sequence[Record]
    result = engine.attribute(index, queries, top_k=10, return_matrix=False)
    result.queries[0].record_ids, result.queries[0].scores   # best first
    engine.self_influence(index)                  # np.ndarray, one score per record
    index.save(directory); index = engine.load_index(directory, model=model)

Scores are "higher = this record pushed the model towards this query's output more". They may be
negative (a record that pushed against it). Contributor shares are computed from scores by
`attribution.engines.weights`, the same way for every method.
"""

from __future__ import annotations

import abc
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Record:
    """One training record. `id` is the stable key the ledger and the database know it by."""

    id: str
    text: str
    label: Any = None
    contributor: str | None = None
    # Accept order (smaller = accepted earlier); None = its position. Span credit for identical text
    # goes to the earliest accepted holder.
    order: int | None = None


@dataclass(frozen=True)
class Query:
    """Something to explain: an input text and, optionally, the output to explain.

    For a classifier `label` is the class to explain (None = the model's own prediction); for a
    generator it may be the generated text. Span engines use `text` (and `label` if it is text).
    """

    text: str
    label: Any = None


@dataclass
class QueryAttribution:
    """Top-k records for one query, best first. `rows` index into `index.record_ids`."""

    rows: list[int]
    record_ids: list[str]
    scores: list[float]


@dataclass
class AttributionResult:
    method: str
    queries: list[QueryAttribution]
    # (n_queries, n_records) float32 scores, only when asked for with return_matrix=True.
    matrix: np.ndarray | None = None


@dataclass
class IndexBase:
    """What every index has. Engines subclass it and add their own payload.

    `save(directory)` writes `index.json` (these fields + `meta`) plus any payload files the subclass
    writes in `_save_payload`; the engine's `load_index(directory)` reads them back.
    """

    method: str
    record_ids: list[str]
    contributors: list[str | None]
    labels: list[Any] = field(default_factory=list)
    meta: dict = field(default_factory=dict)
    # The model the index was fitted with (not saved): engines that need it to answer queries (the
    # gradient engines compute query gradients) read it here. `fit` sets it; `load_index(dir, model=...)`
    # sets it again after a reload.
    model: Any = field(default=None, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.record_ids)

    def header(self) -> dict:
        return {
            "method": self.method,
            "record_ids": list(self.record_ids),
            "contributors": list(self.contributors),
            "labels": list(self.labels),
            "meta": self.meta,
        }

    def save(self, directory: str | os.PathLike) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self._save_payload(directory)
        tmp = directory / "index.json.tmp"
        tmp.write_text(json.dumps(self.header()))
        tmp.replace(directory / "index.json")
        return directory

    def _save_payload(self, directory: Path) -> None:  # pragma: no cover - overridden when needed
        return None

    @staticmethod
    def read_header(directory: str | os.PathLike) -> dict:
        path = Path(directory) / "index.json"
        if not path.exists():
            raise FileNotFoundError(f"no attribution index at {directory}")
        return json.loads(path.read_text())


class AttributionEngine(abc.ABC):
    """Abstract attribution method. Subclasses set `name` and implement the four methods."""

    name: str = "abstract"

    @abc.abstractmethod
    def fit(self, model: Any, train_dataset: Sequence[Record]) -> IndexBase:
        """Build the index for `model` over `train_dataset` (records in a fixed order)."""

    @abc.abstractmethod
    def attribute(
        self,
        index: IndexBase,
        queries: Sequence[Query],
        *,
        top_k: int = 10,
        return_matrix: bool = False,
    ) -> AttributionResult:
        """Score every indexed record for each query; return the top_k (best first) per query."""

    @abc.abstractmethod
    def self_influence(self, index: IndexBase) -> np.ndarray:
        """One float per indexed record: how much the record influences its own prediction."""

    @abc.abstractmethod
    def load_index(self, directory: str | os.PathLike, *, model: Any = None) -> IndexBase:
        """Read back an index written by `index.save(directory)`, bound to `model` (see IndexBase.model)."""


def top_k_from_scores(scores: np.ndarray, record_ids: Sequence[str], top_k: int) -> list[QueryAttribution]:
    """Rank each row of a (n_queries, n_records) score matrix; ties broken by row order (stable)."""
    scores = np.asarray(scores, dtype=np.float32)
    if scores.ndim != 2:
        raise ValueError("scores must be a (n_queries, n_records) matrix")
    k = max(0, min(int(top_k), scores.shape[1]))
    out: list[QueryAttribution] = []
    for row in scores:
        if k == 0:
            out.append(QueryAttribution(rows=[], record_ids=[], scores=[]))
            continue
        if k < len(row):
            part = np.argpartition(-row, k - 1)[:k]
        else:
            part = np.arange(len(row))
        order = part[np.lexsort((part, -row[part]))]
        out.append(
            QueryAttribution(
                rows=[int(i) for i in order],
                record_ids=[record_ids[int(i)] for i in order],
                scores=[float(row[i]) for i in order],
            )
        )
    return out


__all__ = [
    "AttributionEngine",
    "AttributionResult",
    "IndexBase",
    "Query",
    "QueryAttribution",
    "Record",
    "top_k_from_scores",
]
