"""Suffix-array index over token ids: build with libdivsufsort, query through memory maps (no Django).

On-disk layout of one *segment* (a directory)::

    tokens.npy      big-endian uint16 (vocab < 65535) or uint32 token ids; every record is followed by
                    one separator token (the dtype's maximum), so no match can cross a record boundary
    sa.npy          the suffix array over token positions: the start of every suffix, in lexicographic
                    order; packed 3-byte little-endian pointers ((n, 3) uint8) below 2**24 positions,
                    uint32 below 2**32, else int64
    doc_starts.npy  uint32/int64 position of each record's first token (records in row order)
    order.npy       int64 accept-order key of each record (optional; absent = the row number)
    meta.json       format version, counts, dtypes, the index row of the segment's first record

Build: the big-endian token array *is* a byte string whose byte-lexicographic order equals the token
order, so libdivsufsort (C, via pydivsufsort) sorts its byte suffixes and we keep the ones starting
on a token boundary (offset % width == 0), divided by the width. No Python sort anywhere.

Query: all the suffixes of a generation are searched in lock step: one vectorised binary search over
the suffix array for every start position at once, comparing a few tokens at a time, gathered from
the memory-mapped arrays. Counts are the width of the suffix-array interval (infini-gram style).

Credit: a span is credited once, to the earliest holder: the record with the smallest order key (then
row) among all the records holding it. Repeats of a passage, inside one record or in later copies,
add no credit; `max_occurrences` only limits how many holders are *listed* (earliest first).

An *index* (``SuffixArray``) is a directory with ``manifest.json`` listing its segments: one base
segment and small delta segments added incrementally; queries merge all segments. ``compact``
rebuilds everything into one base segment (run as a background task).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydivsufsort

FORMAT_VERSION = 1
_BIG = np.int64(1) << 40  # pad value greater than every token (upper bounds)
_LOW = np.int64(-1)  # pad value smaller than every token (lower bounds, pattern end)
_FOREIGN = np.int64(-2)  # a query token the segment cannot hold: matches nothing
_CHUNK = 1 << 24  # positions packed at a time (bounds the build's extra memory)


class SuffixArrayError(ValueError):
    """Bad input to the span index (empty corpus, negative token ids, missing files)."""


def _width_for(max_token: int) -> int:
    if max_token < 0xFFFF:
        return 2
    if max_token < 0xFFFFFFFF:
        return 4
    raise SuffixArrayError(f"token id {max_token} does not fit in 32 bits")


def _sa_bytes_for(n_positions: int) -> int:
    """Bytes per suffix-array pointer: 3 below 2**24 positions, 4 below 2**32, else 8."""
    if n_positions < 2**24:
        return 3
    return 4 if n_positions < 2**32 else 8


class _Packed3:
    """A read-only (n, 3) uint8 memory map read as little-endian uint24 values (int64 out)."""

    def __init__(self, raw: np.ndarray):
        self.raw = raw
        self._raw = raw.view(np.ndarray)  # same pages; skips np.memmap's per-index bookkeeping
        self.shape = (raw.shape[0],)

    def __len__(self) -> int:
        return self.raw.shape[0]

    def __getitem__(self, idx) -> np.ndarray:
        b = self._raw[idx].astype(np.int64)
        return b[..., 0] | (b[..., 1] << 8) | (b[..., 2] << 16)


def build_segment(
    path: str | os.PathLike,
    tokens: np.ndarray,
    lengths: np.ndarray,
    *,
    row_offset: int = 0,
    width: int | None = None,
    sa_bytes: int | None = None,
    order: np.ndarray | None = None,
) -> Path:
    """Write one segment: `tokens` is the concatenation of the records' token ids, `lengths` their sizes.

    Records keep their order; record k gets index row `row_offset + k`. Empty records are allowed
    (they can never match). `order`: each record's accept-order key (default: its row). Returns the
    segment directory.
    """
    path = Path(path)
    tokens = np.asarray(tokens)
    lengths = np.asarray(lengths, dtype=np.int64)
    if lengths.ndim != 1 or tokens.ndim != 1:
        raise SuffixArrayError("tokens and lengths must be 1-D")
    if len(lengths) == 0:
        raise SuffixArrayError("a segment needs at least one record")
    if (lengths < 0).any() or int(lengths.sum()) != tokens.size:
        raise SuffixArrayError("record lengths must be >= 0 and sum to the number of tokens")
    if tokens.size and int(tokens.min()) < 0:
        raise SuffixArrayError("token ids must be >= 0")
    if order is not None and len(order) != len(lengths):
        raise SuffixArrayError("one order key per record")
    max_token = int(tokens.max()) if tokens.size else 0
    width = max(width or 2, _width_for(max_token))
    sep = (1 << (8 * width)) - 1
    n_rec = len(lengths)
    total = int(tokens.size) + n_rec

    tmp = path.with_name(path.name + f".tmp-{uuid.uuid4().hex[:8]}")
    tmp.mkdir(parents=True)
    try:
        arr = np.lib.format.open_memmap(tmp / "tokens.npy", mode="w+", dtype=f">u{width}", shape=(total,))
        ends = np.cumsum(lengths + 1)
        starts = ends - (lengths + 1)
        arr[:] = sep
        is_tok = np.ones(total, dtype=bool)
        is_tok[ends - 1] = False
        arr[is_tok] = tokens
        del is_tok
        arr.flush()
        # libdivsufsort over the bytes; keep the suffixes that start on a token boundary.
        raw = pydivsufsort.divsufsort(arr.view(np.uint8))
        keep = raw[(raw & (width - 1)) == 0]
        del raw
        keep //= width
        nbytes = sa_bytes or _sa_bytes_for(total)
        if nbytes == 3:
            # Packed little-endian 3-byte pointers: a quarter smaller than uint32 below 16.7M positions.
            sa = np.lib.format.open_memmap(tmp / "sa.npy", mode="w+", dtype=np.uint8, shape=(total, 3))
            for s in range(0, total, _CHUNK):
                part = keep[s : s + _CHUNK]
                for b in range(3):
                    sa[s : s + _CHUNK, b] = (part >> (8 * b)) & 0xFF
        else:
            sa = np.lib.format.open_memmap(tmp / "sa.npy", mode="w+", dtype=np.uint32 if nbytes == 4 else np.int64,
                                           shape=(total,))
            sa[:] = keep
        del keep
        sa.flush()
        del sa, arr
        np.save(tmp / "doc_starts.npy", starts.astype(np.uint32 if total < 2**32 else np.int64))
        if order is not None:
            np.save(tmp / "order.npy", np.asarray(order, dtype=np.int64))
        meta = {
            "format": FORMAT_VERSION,
            "n_positions": total,
            "n_tokens": int(tokens.size),
            "n_records": n_rec,
            "width": width,
            "separator": sep,
            "row_offset": int(row_offset),
        }
        (tmp / "meta.json").write_text(json.dumps(meta))
        if path.exists():
            shutil.rmtree(path)
        tmp.rename(path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


class Segment:
    """One memory-mapped segment."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        meta_path = self.path / "meta.json"
        if not meta_path.exists():
            raise SuffixArrayError(f"no span segment at {self.path}")
        self.meta = json.loads(meta_path.read_text())
        if self.meta.get("format") != FORMAT_VERSION:
            raise SuffixArrayError(f"span segment {self.path} has format {self.meta.get('format')}")
        self.tokens = np.load(self.path / "tokens.npy", mmap_mode="r")
        sa = np.load(self.path / "sa.npy", mmap_mode="r")
        self.sa = _Packed3(sa) if sa.ndim == 2 else sa
        self.doc_starts = np.load(self.path / "doc_starts.npy")
        self._buckets: np.ndarray | None = None
        # Plain-ndarray views of the same mapped pages for the hot paths (np.memmap indexing is slower).
        self._tokens = self.tokens.view(np.ndarray)
        self._sa = self.sa if isinstance(self.sa, _Packed3) else self.sa.view(np.ndarray)
        self.n = int(self.meta["n_positions"])
        self.sep = int(self.meta["separator"])
        self.row_offset = int(self.meta["row_offset"])
        self.n_records = int(self.meta["n_records"])
        self.n_tokens = int(self.meta["n_tokens"])
        order_path = self.path / "order.npy"
        self.order = (np.load(order_path) if order_path.exists()
                      else np.arange(self.row_offset, self.row_offset + self.n_records, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        return sum(f.stat().st_size for f in self.path.iterdir())

    # --- vectorised comparisons -------------------------------------------------------------
    def _gather(self, starts: np.ndarray, offset: int, width: int) -> np.ndarray:
        idx = starts[:, None] + np.arange(offset, offset + width, dtype=np.int64)
        np.minimum(idx, self.n - 1, out=idx)  # the last position is a separator
        return self._tokens[idx].astype(np.int64)

    def compare(self, starts: np.ndarray, pats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Compare suffixes at `starts` with pattern rows: (sign: -1 suffix<pattern / +1, lcp).

        Every pattern row ends with a pad value no token equals, so every row gets decided.
        """
        rows_n, width = pats.shape
        sign = np.ones(rows_n, dtype=np.int8)
        lcp = np.full(rows_n, width, dtype=np.int64)
        rows = np.arange(rows_n)
        off = 0
        step = 4
        while rows.size and off < width:
            w = min(step, width - off)
            seg = self._gather(starts[rows], off, w)
            pat = pats[rows, off : off + w]
            neq = seg != pat
            hit = neq.any(axis=1)
            if hit.any():
                first = neq[hit].argmax(axis=1)
                hr = rows[hit]
                lcp[hr] = off + first
                sub = np.arange(len(hr))
                sign[hr] = np.where(seg[hit][sub, first] < pat[hit][sub, first], -1, 1)
                rows = rows[~hit]
            off += w
            step = 32
        return sign, lcp

    @property
    def buckets(self) -> np.ndarray | None:
        """buckets[t] = first suffix-array slot of the suffixes starting with token t (2-byte tokens only).

        Counted once per open from the memory-mapped tokens (no extra file on disk): every binary
        search then starts inside its first token's bucket, about log2(vocabulary) steps fewer.
        """
        if self._buckets is None and int(self.meta["width"]) == 2:
            counts = np.zeros(self.sep + 2, dtype=np.int64)
            for s in range(0, self.n, _CHUNK):
                counts[: self.sep + 1] += np.bincount(np.asarray(self.tokens[s : s + _CHUNK]).astype(np.int64),
                                                      minlength=self.sep + 1)
            self._buckets = np.concatenate([[0], np.cumsum(counts)])
        return self._buckets

    def lower_bound(self, pats: np.ndarray) -> np.ndarray:
        """First suffix-array slot whose suffix is not < the pattern, for every row at once."""
        rows_n = len(pats)
        buckets = self.buckets
        if buckets is not None:
            first = pats[:, 0]
            real = (first >= 0) & (first < self.sep)
            t = np.where(real, first, 0)
            # A pattern starting below every token (_LOW, _FOREIGN) lands at 0, above every token at n.
            lo = np.where(real, buckets[t], np.where(first < 0, 0, self.n)).astype(np.int64)
            hi = np.where(real, buckets[t + 1], lo).astype(np.int64)
        else:
            lo = np.zeros(rows_n, dtype=np.int64)
            hi = np.full(rows_n, self.n, dtype=np.int64)
        active = np.flatnonzero(lo < hi)
        while active.size:
            mid = (lo[active] + hi[active]) // 2
            sign, _ = self.compare(self._sa[mid].astype(np.int64), pats[active])
            less = sign < 0
            lo[active[less]] = mid[less] + 1
            hi[active[~less]] = mid[~less]
            active = active[lo[active] < hi[active]]
        return lo

    def encode_query(self, q: np.ndarray) -> np.ndarray:
        q = q.astype(np.int64, copy=True)
        q[q >= self.sep] = _FOREIGN
        return q

    def matching_stats(self, q: np.ndarray, max_len: int) -> np.ndarray:
        """ms[i] = length of the longest prefix of q[i:] (capped at max_len) found in this segment."""
        length = len(q)
        width = min(length, max_len)
        qq = np.concatenate([self.encode_query(q), np.full(width + 1, _LOW)])
        idx = np.arange(length)[:, None] + np.arange(width + 1)[None, :]
        pats = qq[idx]
        # Cap: a row longer than max_len is cut there (its pad column stays _LOW).
        pats[:, width] = _LOW
        pos = self.lower_bound(pats)
        ms = np.zeros(length, dtype=np.int64)
        for cand in (pos, pos - 1):
            ok = (cand >= 0) & (cand < self.n)
            if ok.any():
                _, lcp = self.compare(self._sa[cand[ok]].astype(np.int64), pats[ok])
                ms[ok] = np.maximum(ms[ok], lcp)
        return np.minimum(ms, width)

    def ranges(self, q: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Suffix-array interval [lo, hi) of each pattern q[s:s+l]; hi - lo is its count."""
        if len(starts) == 0:
            e = np.zeros(0, dtype=np.int64)
            return e, e
        width = int(lengths.max()) + 1
        qq = np.concatenate([self.encode_query(q), np.full(width + 1, _LOW)])
        idx = starts[:, None] + np.arange(width)[None, :]
        pats = qq[idx]
        pats[np.arange(width)[None, :] >= lengths[:, None]] = _LOW
        lo = self.lower_bound(pats)
        pats[np.arange(width)[None, :] >= lengths[:, None]] = _BIG
        hi = self.lower_bound(pats)
        return lo, hi

    def rows_at(self, positions: np.ndarray) -> np.ndarray:
        """Index row of the record holding each token position."""
        return np.searchsorted(self.doc_starts, positions, side="right").astype(np.int64) - 1 + self.row_offset

    def record_tokens(self, k: int) -> np.ndarray:
        start = int(self.doc_starts[k])
        end = int(self.doc_starts[k + 1]) - 1 if k + 1 < self.n_records else self.n - 1
        return np.asarray(self.tokens[start:end]).astype(np.int64)


@dataclass(frozen=True)
class SpanMatch:
    """A maximal span q[start:end] of the query that occurs in the corpus `count` times."""

    start: int
    end: int
    count: int
    weight: float
    # index row -> occurrences of the span in that record, for the earliest `max_occurrences` holders
    rows: dict[int, int] = field(default_factory=dict)
    truncated: bool = False  # more holders than listed
    # The row the weight went to: the earliest holder; -1 when the same tokens were credited earlier in
    # this query (a generation that repeats a passage is paid for it once).
    credited: int = -1

    @property
    def length(self) -> int:
        return self.end - self.start


@dataclass
class SpanResult:
    spans: list[SpanMatch]
    row_scores: dict[int, float]
    n_query_tokens: int
    first: int = 0  # query tokens before this one were context (a prompt), not the text explained

    @property
    def coverage(self) -> float:
        """Fraction of the explained tokens (from `first` on) inside at least one span."""
        if self.n_query_tokens <= self.first:
            return 0.0
        covered = np.zeros(self.n_query_tokens, dtype=bool)
        for s in self.spans:
            covered[s.start : s.end] = True
        return float(covered[self.first :].mean())


class SuffixArray:
    """A directory of segments (one base + incremental deltas), queried as one corpus."""

    MANIFEST = "manifest.json"

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        manifest = self.root / self.MANIFEST
        if not manifest.exists():
            raise SuffixArrayError(f"no span index at {self.root}")
        self.manifest = json.loads(manifest.read_text())
        self.segments = [Segment(self.root / name) for name in self.manifest["segments"]]
        self._order: np.ndarray | None = None

    # --- writing ------------------------------------------------------------------------------
    @classmethod
    def create(cls, root: str | os.PathLike, tokens: np.ndarray, lengths: np.ndarray, *,
               sa_bytes: int | None = None, order: Sequence[int] | None = None) -> SuffixArray:
        """A fresh index with one base segment (replaces whatever index was at `root`)."""
        root = Path(root)
        root.mkdir(parents=True, exist_ok=True)
        name = f"base-{uuid.uuid4().hex[:10]}"
        build_segment(root / name, tokens, lengths, row_offset=0, sa_bytes=sa_bytes,
                      order=None if order is None else np.asarray(order, dtype=np.int64))
        old = cls._read_segments(root)
        cls._write_manifest(root, [name])
        cls._remove(root, old, keep=[name])
        return cls(root)

    @classmethod
    def create_from_lists(cls, root: str | os.PathLike, docs: Sequence[Sequence[int]], *,
                          sa_bytes: int | None = None, order: Sequence[int] | None = None) -> SuffixArray:
        tokens, lengths = _concat(docs)
        return cls.create(root, tokens, lengths, sa_bytes=sa_bytes, order=order)

    def add(self, docs: Sequence[Sequence[int]], *, order: Sequence[int] | None = None) -> SuffixArray:
        """Append records as a small delta segment (rows continue after the existing ones)."""
        tokens, lengths = _concat(docs)
        name = f"delta-{uuid.uuid4().hex[:10]}"
        width = max(int(s.meta["width"]) for s in self.segments) if self.segments else None
        build_segment(self.root / name, tokens, lengths, row_offset=self.n_records, width=width,
                      order=None if order is None else np.asarray(order, dtype=np.int64))
        self._write_manifest(self.root, [*self.manifest["segments"], name])
        return SuffixArray(self.root)

    def compact(self) -> SuffixArray:
        """Rebuild every segment into one base segment (a background task's job)."""
        docs = [seg.record_tokens(k) for seg in self.segments for k in range(seg.n_records)]
        old = list(self.manifest["segments"])
        tokens, lengths = _concat(docs)
        name = f"base-{uuid.uuid4().hex[:10]}"
        build_segment(self.root / name, tokens, lengths, row_offset=0, order=self.order)
        self._write_manifest(self.root, [name])
        self._remove(self.root, old, keep=[name])
        return SuffixArray(self.root)

    @classmethod
    def _read_segments(cls, root: Path) -> list[str]:
        path = root / cls.MANIFEST
        return json.loads(path.read_text())["segments"] if path.exists() else []

    @classmethod
    def _write_manifest(cls, root: Path, names: list[str]) -> None:
        tmp = root / f"{cls.MANIFEST}.tmp-{uuid.uuid4().hex[:8]}"
        tmp.write_text(json.dumps({"format": FORMAT_VERSION, "segments": names}))
        tmp.replace(root / cls.MANIFEST)

    @staticmethod
    def _remove(root: Path, names: list[str], keep: list[str]) -> None:
        for name in names:
            if name not in keep:
                shutil.rmtree(root / name, ignore_errors=True)

    # --- reading ------------------------------------------------------------------------------
    @property
    def n_records(self) -> int:
        return sum(s.n_records for s in self.segments)

    @property
    def order(self) -> np.ndarray:
        """Accept-order key of every index row (segments hold consecutive rows)."""
        if self._order is None:  # once per open: an add or compact returns a new SuffixArray
            self._order = (np.concatenate([s.order for s in self.segments]) if self.segments
                           else np.zeros(0, dtype=np.int64))
        return self._order

    @property
    def n_tokens(self) -> int:
        return sum(s.n_tokens for s in self.segments)

    @property
    def nbytes(self) -> int:
        return sum(s.nbytes for s in self.segments)

    def count(self, pattern: Sequence[int]) -> int:
        """Occurrences of a token sequence in the whole corpus (overlaps counted)."""
        q = np.asarray(pattern, dtype=np.int64)
        if len(q) == 0:
            return self.n_tokens
        total = 0
        for seg in self.segments:
            lo, hi = seg.ranges(q, np.array([0]), np.array([len(q)]))
            total += int(hi[0] - lo[0])
        return total

    def _suffixes_found(self, q: np.ndarray, ks: np.ndarray) -> np.ndarray:
        """found[i]: the suffix of q of length ks[i] occurs in some segment."""
        length = len(q)
        found = np.zeros(len(ks), dtype=bool)
        width = int(ks.max()) + 1
        for seg in self.segments:
            rows = np.flatnonzero(~found)
            if rows.size == 0:
                break
            qq = np.concatenate([seg.encode_query(q), np.full(width + 1, _LOW)])
            starts = length - ks[rows]
            pats = qq[starts[:, None] + np.arange(width)[None, :]]
            pats[np.arange(width)[None, :] >= ks[rows][:, None]] = _LOW  # the pattern ends here
            pos = seg.lower_bound(pats)
            ok = pos < seg.n
            if ok.any():
                _, lcp = seg.compare(seg._sa[pos[ok]].astype(np.int64), pats[ok])
                found[rows[ok]] = lcp >= ks[rows][ok]
        return found

    def longest_suffix_count(self, query: Sequence[int], *, fanout: int = 16) -> tuple[int, int]:
        """(length, count) of the longest suffix of `query` found in the corpus (the infini-gram query).

        A suffix that occurs has every shorter suffix occurring too, so the length is found by a
        `fanout`-ary search: each round probes `fanout` lengths at once (one vectorised binary search)
        and narrows the bracket by that factor; 2-3 rounds for a 200-token prompt.
        """
        q = np.asarray(query, dtype=np.int64)
        lo, hi = 0, len(q) + 1  # lo: known to occur (0 trivially); hi: known not to (or past the end)
        while hi - lo > 1 and self.segments:
            ks = np.unique(np.linspace(lo + 1, hi - 1, num=min(fanout, hi - lo - 1)).round().astype(np.int64))
            found = self._suffixes_found(q, ks)
            if found.any():
                lo = int(ks[found].max())
            if (~found).any():
                hi = int(ks[~found].min())
            elif not found.any():  # pragma: no cover - ks is never empty here
                break
        if lo == 0:
            return 0, 0
        return lo, self.count(q[len(q) - lo :])

    def spans(
        self,
        query: Sequence[int],
        *,
        min_len: int = 8,
        max_len: int = 1024,
        max_occurrences: int = 1000,
        first: int = 0,
    ) -> SpanResult:
        """Every maximal span of >= min_len tokens of `query` that occurs in the corpus.

        Each span's weight is ``length * log2(1 + corpus_tokens / count)`` (long and rare spans weigh
        most). It goes whole to one record: the earliest holder by (order key, row), found among ALL
        its occurrences (a vectorised pass over its suffix-array interval). So a passage repeated in one
        record, or copied into later records, captures nothing more; the first accepted copy of a text is
        credited. `max_occurrences` bounds only the holders listed in `rows` (the earliest ones). The same
        tokens appearing twice in the query are credited once. A record's score is the sum it is credited.

        `first` > 0: query[:first] is context (the prompt a generation continued). Only spans that
        reach past it are kept, and only their tokens from `first` on count in the weight: a model
        that carries on a training passage the prompt began reused it, but the prompt's own words
        earn nothing.
        """
        q = np.asarray(query, dtype=np.int64)
        if q.ndim != 1:
            raise SuffixArrayError("a query is a 1-D sequence of token ids")
        if len(q) and int(q.min()) < 0:
            raise SuffixArrayError("token ids must be >= 0")
        if min_len < 1:
            raise SuffixArrayError("min_len must be >= 1")
        length = len(q)
        first = min(max(int(first), 0), length)
        if length == 0 or not self.segments:
            return SpanResult([], {}, length, first)
        ms = np.zeros(length, dtype=np.int64)
        for seg in self.segments:
            ms = np.maximum(ms, seg.matching_stats(q, max_len))
        prev = np.concatenate([[-1], ms[:-1]])
        # q[i:i+ms[i]] is maximal unless q[i-1:i+ms[i]] also occurs, i.e. ms[i-1] > ms[i].
        starts = np.flatnonzero((ms >= min_len) & (prev <= ms) & (np.arange(length) + ms > first))
        lens = ms[starts]
        counts = np.zeros(len(starts), dtype=np.int64)
        per_seg = []
        for seg in self.segments:
            lo, hi = seg.ranges(q, starts, lens)
            per_seg.append((seg, lo, hi))
            counts += hi - lo
        corpus = max(self.n_tokens, 1)
        order = self.order
        out: list[SpanMatch] = []
        row_scores: dict[int, float] = {}
        seen: set[bytes] = set()
        for j, (s, m) in enumerate(zip(starts.tolist(), lens.tolist(), strict=True)):
            c = int(counts[j])
            weight = (s + m - max(s, first)) * math.log2(1 + corpus / max(c, 1))
            holders, occurrences = self._holders(per_seg, j)
            # Earliest first: order key, then row (np.lexsort sorts by the last key first).
            by_age = np.lexsort((holders, order[holders]))
            holders, occurrences = holders[by_age], occurrences[by_age]
            key = q[s : s + m].tobytes()
            credited = int(holders[0]) if len(holders) and key not in seen else -1
            seen.add(key)
            if credited >= 0:
                row_scores[credited] = row_scores.get(credited, 0.0) + weight
            listed = max(0, int(max_occurrences))
            rows = dict(zip(holders[:listed].tolist(), occurrences[:listed].tolist(), strict=True))
            out.append(SpanMatch(start=s, end=s + m, count=c, weight=weight, rows=rows,
                                 truncated=len(holders) > listed, credited=credited))
        return SpanResult(out, row_scores, length, first)

    @staticmethod
    def _holders(per_seg, j: int) -> tuple[np.ndarray, np.ndarray]:
        """(rows, occurrences in each) of every record holding span j, in chunks of the SA interval."""
        found = []
        for seg, lo, hi in per_seg:
            a, b = int(lo[j]), int(hi[j])
            for start in range(a, b, _CHUNK):
                pos = np.asarray(seg._sa[start : min(b, start + _CHUNK)]).astype(np.int64)
                found.append(seg.rows_at(pos))
        if not found:
            e = np.zeros(0, dtype=np.int64)
            return e, e
        rows, counts = np.unique(np.concatenate(found), return_counts=True)
        return rows.astype(np.int64), counts.astype(np.int64)


def _concat(docs: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    arrays = [np.asarray(d, dtype=np.int64).reshape(-1) for d in docs]
    lengths = np.array([len(a) for a in arrays], dtype=np.int64)
    tokens = np.concatenate(arrays) if arrays else np.zeros(0, dtype=np.int64)
    return tokens, lengths
