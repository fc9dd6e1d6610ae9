"""Near-duplicate records: MinHash signatures over normalised text and LSH clustering. (no Django)

Why: the exact-duplicate check (sha256 of the canonical text) misses a copy with one token changed, and
such a copy of another contributor's popular record would otherwise be paid like an original. The
attribution weight rule credits one copy per cluster (the earliest accepted), so the clusters are found
here, at ingest, across the whole Datanet.

- **Similarity** is the Jaccard index of two texts' shingle sets: the words and the pairs of adjacent
  words of the normalised text (lowercase, punctuation stripped, whitespace collapsed). Words catch a
  one-token edit (a 20-word sentence stays at ~0.88); pairs keep word order, so "profit rose, sales
  fell" and "sales rose, profit fell" are not twins. Measured on the Financial PhraseBank (docs/datanets.md):
  one-token variants (replace, insert or delete) score >= 0.7 for 97% of sentences, >= 0.8 for 87%.
- **Signature**: 64 MinHash values (multiply-shift permutations of a 64-bit shingle hash), 16 bits
  kept of each (b-bit MinHash): 128 bytes per record, stored with it.
- **LSH**: bands of `rows` values; two records whose band keys agree in any band are candidates. The
  rows per band are chosen for the threshold so that a pair AT the threshold is a candidate with
  probability >= RECALL_AT_THRESHOLD. Candidates are then checked with the exact Jaccard of their texts,
  so a cluster never holds a pair below the threshold by estimation error.
- **Clusters are stars**: a record joins the cluster of the most similar *root* (a record that joined
  no cluster) at or above the threshold, ties to the earliest root; otherwise it is a root itself. A
  record's cluster is fixed at its ingest; a later upload never moves earlier records, so nobody can
  bridge someone else's record into a cluster after the fact.
"""
from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

NUM_PERM = 64
SIGNATURE_DTYPE = np.dtype("<u2")  # b-bit MinHash, b = 16: collision of two different minima ~ 2**-16
SIGNATURE_BYTES = NUM_PERM * SIGNATURE_DTYPE.itemsize
DEFAULT_THRESHOLD = 0.7
MIN_THRESHOLD = 0.5  # below this nearly every pair of same-domain sentences is an LSH candidate
RECALL_AT_THRESHOLD = 0.995

_WORD = re.compile(r"[0-9a-z_\x80-\U0010ffff]+")  # after lower() and _PUNCT: ASCII word chars or any non-ASCII
_PUNCT: dict[int, str] = {}  # non-ASCII punctuation, symbols and spaces -> " " (filled on first use)
_WORD_BYTE = np.zeros(256, dtype=bool)
_WORD_BYTE[[*b"0123456789abcdefghijklmnopqrstuvwxyz_"]] = True
_WORD_BYTE[0x80:] = True  # UTF-8 bytes of a non-ASCII character (punctuation was replaced before)
_M32 = np.uint64(0xFFFFFFFF)
_POLY = np.uint64(0x100000001B3)  # odd: its powers are invertible mod 2**64
_PAIR_MUL = np.uint64(0x9E3779B97F4A7C15)
_PAIR_TAG = np.uint64(0xD6E8FEB86659FD93)
_rng = np.random.default_rng(20261201)  # fixed: signatures are stored, so the permutations never change
_PERM_A = _rng.integers(0, 2**32, NUM_PERM, dtype=np.uint64).astype(np.uint32) | np.uint32(1)  # odd
_PERM_B = _rng.integers(0, 2**32, NUM_PERM, dtype=np.uint64).astype(np.uint32)
_BATCH_CHARS = 1 << 19  # characters per numpy pass: bounds the temporaries (~40 MB) whatever the batch
_PERM_STEP = 16


def _punct_table() -> dict[int, str]:
    if not _PUNCT:
        _PUNCT.update({cp: " " for cp in range(0x80, 0x3000)
                       if unicodedata.category(chr(cp))[0] in "PSZC"})
    return _PUNCT


def normalise(text: str) -> str:
    """Lowercase; punctuation, symbols and whitespace (ASCII or not) count as separators."""
    text = text.lower()
    if not text.isascii():
        text = text.translate(_punct_table())
    return text


def tokens(text: str) -> list[str]:
    """The words of the normalised text (punctuation stripped, whitespace collapsed as a consequence)."""
    return _WORD.findall(normalise(text))


def shingles(text: str) -> set:
    """Words and adjacent word pairs; a text with no word is its own single shingle."""
    words = tokens(text)
    if not words:
        return {("", text)}
    return {*words, *zip(words, words[1:], strict=False)}


def jaccard(a: set, b: set) -> float:
    if not a and not b:
        return 1.0
    inter = len(a & b)
    return inter / (len(a) + len(b) - inter)


def similarity(text_a: str, text_b: str) -> float:
    """The exact Jaccard index of the two texts' shingle sets (what the threshold is compared with)."""
    return jaccard(shingles(text_a), shingles(text_b))


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: every output bit depends on every input bit."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def signatures(texts: Sequence[str]) -> np.ndarray:
    """(len(texts), NUM_PERM) uint16 MinHash signatures of the texts' shingles (words and word pairs).

    Tokenising and hashing run in numpy over the batch's UTF-8 bytes (a polynomial hash per word), so
    the cost per row is a few microseconds; the result does not depend on how texts are batched.
    """
    out = np.empty((len(texts), NUM_PERM), dtype=SIGNATURE_DTYPE)
    lo = size = 0
    for hi, text in enumerate(texts):
        if size and size + len(text) > _BATCH_CHARS:
            out[lo:hi] = _signatures(texts[lo:hi])
            lo, size = hi, 0
        size += len(text) + 1
    out[lo:] = _signatures(texts[lo:])
    return out


_powers_cache: list[np.ndarray] = []


def _powers(n: int) -> tuple[np.ndarray, np.ndarray]:
    """POLY**i and POLY**-i mod 2**64 for i < n (kept between calls; grown when a batch is longer)."""
    if not _powers_cache or len(_powers_cache[0]) < n:
        size = max(n, _BATCH_CHARS * 2)
        with np.errstate(over="ignore"):
            fwd = np.full(size, _POLY, dtype=np.uint64)
            back = np.full(size, pow(int(_POLY), -1, 2**64), dtype=np.uint64)
            fwd[0] = back[0] = 1
            _powers_cache[:] = [np.cumprod(fwd, dtype=np.uint64), np.cumprod(back, dtype=np.uint64)]
    return _powers_cache[0][:n], _powers_cache[1][:n]


def _signatures(texts: Sequence[str]) -> np.ndarray:
    n = len(texts)
    if n == 0:
        return np.empty((0, NUM_PERM), dtype=SIGNATURE_DTYPE)
    # NUL separates texts (ingest refuses text holding one; elsewhere it is made a space).
    joined = "\x00".join(normalise(t).replace("\x00", " ") for t in texts).encode() + b"\x00"
    b = np.frombuffer(joined, dtype=np.uint8)
    seps = np.flatnonzero(b == 0)
    text_start = np.concatenate(([0], seps[:-1] + 1))
    with np.errstate(over="ignore"):
        powers, inv = _powers(len(b))
        prefix = np.concatenate(([np.uint64(0)], np.cumsum((b.astype(np.uint64) + np.uint64(1)) * powers, dtype=np.uint64)))

        def span_hash(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:  # bytes [lo, hi)
            return _mix((prefix[hi] - prefix[lo]) * inv[lo] + (hi - lo).astype(np.uint64) * _PAIR_MUL)

        word = _WORD_BYTE[b]
        edge = np.diff(np.concatenate(([False], word, [False])).astype(np.int8))
        w_lo, w_hi = np.flatnonzero(edge == 1), np.flatnonzero(edge == -1)
        w_text = np.searchsorted(seps, w_lo)
        counts = np.bincount(w_text, minlength=n)
        # A text with no word: one shingle, the hash of its bytes (tagged apart from a word's).
        empty = np.flatnonzero(counts == 0)
        tagged = np.zeros(len(w_lo), dtype=bool)
        if len(empty):
            w_lo = np.concatenate((w_lo, text_start[empty]))
            w_hi = np.concatenate((w_hi, seps[empty]))
            w_text = np.concatenate((w_text, empty))
            tagged = np.concatenate((tagged, np.ones(len(empty), dtype=bool)))
            order = np.argsort(w_text, kind="stable")
            w_lo, w_hi, w_text, tagged = w_lo[order], w_hi[order], w_text[order], tagged[order]
        w = span_hash(w_lo, w_hi)
        w[tagged] ^= _PAIR_TAG
        counts = np.bincount(w_text, minlength=n)
        first = np.concatenate(([0], np.cumsum(counts)[:-1]))
        same = w_text[1:] == w_text[:-1]
        p = np.flatnonzero(same)
        pairs = _mix((w[p] * _PAIR_MUL + w[p + 1]) ^ _PAIR_TAG)
        n_pairs = np.maximum(counts - 1, 0)
        sh_len = counts + n_pairs
        sh_start = np.concatenate(([0], np.cumsum(sh_len)[:-1]))
        sh = np.empty(int(sh_len.sum()), dtype=np.uint64)
        sh[sh_start[w_text] + (np.arange(len(w)) - first[w_text])] = w
        p_text = w_text[p]
        sh[sh_start[p_text] + counts[p_text] + (p - first[p_text])] = pairs
        x = (sh & _M32).astype(np.uint32)
        mins = np.empty((NUM_PERM, n), dtype=np.uint32)
        for k in range(0, NUM_PERM, _PERM_STEP):
            block = _PERM_A[k:k + _PERM_STEP, None] * x[None, :]
            block += _PERM_B[k:k + _PERM_STEP, None]
            mins[k:k + _PERM_STEP] = np.minimum.reduceat(block, sh_start, axis=1)
    return ((mins >> np.uint32(8)) & np.uint32(0xFFFF)).astype(SIGNATURE_DTYPE).T


def to_bytes(signature: np.ndarray) -> bytes:
    return np.ascontiguousarray(signature, dtype=SIGNATURE_DTYPE).tobytes()


def from_bytes(blobs: Sequence[bytes | memoryview]) -> np.ndarray:
    """Stored signatures back to an (n, NUM_PERM) array."""
    if not blobs:
        return np.empty((0, NUM_PERM), dtype=SIGNATURE_DTYPE)
    return np.frombuffer(b"".join(bytes(b) for b in blobs), dtype=SIGNATURE_DTYPE).reshape(-1, NUM_PERM)


def estimated_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Share of equal MinHash values: an estimate of the Jaccard index (std ~ 0.05 at 0.8)."""
    return float(np.mean(a == b))


def lsh_params(threshold: float, num_perm: int = NUM_PERM) -> tuple[int, int]:
    """(bands, rows): the most rows per band (fewest false candidates) that still makes a pair at the
    threshold a candidate with probability >= RECALL_AT_THRESHOLD: 1 - (1 - t^r)^b."""
    best = (num_perm, 1)
    for rows in range(1, num_perm + 1):
        bands = num_perm // rows
        if 1 - (1 - threshold**rows) ** bands >= RECALL_AT_THRESHOLD:
            best = (bands, rows)
    return best


def band_keys(sigs: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """(n, bands) uint64: each band's `rows` 16-bit values packed (rows <= 4) or hashed into 64 bits."""
    n = sigs.shape[0]
    keys = np.zeros((n, bands), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(bands):
            block = sigs[:, j * rows:(j + 1) * rows].astype(np.uint64)
            for k in range(rows):
                if rows <= 4:
                    keys[:, j] |= block[:, k] << np.uint64(16 * k)
                else:
                    keys[:, j] = _mix(keys[:, j] * _PAIR_MUL + block[:, k])
    return keys


@dataclass(frozen=True)
class Match:
    root: int          # the cluster's root record id
    similarity: float  # exact Jaccard with the root


# Bounds on the exact check per record: each LSH bucket keeps its first MAX_BUCKET roots and a record is
# compared with the MAX_CANDIDATES roots that share most bands with it. A true near-duplicate (Jaccard >= 0.7)
# shares most of its bands with its original, so it ranks first unless every one of those buckets filled up
# with other roots before the original arrived.
MAX_BUCKET = 64
MAX_CANDIDATES = 32


def cluster_assign(
    *,
    new_ids: Sequence[int],
    new_sigs: np.ndarray,
    root_ids: Sequence[int],
    root_sigs: np.ndarray,
    texts: Callable[[list[int]], Mapping[int, str]],
    threshold: float,
) -> dict[int, Match]:
    """Clusters for newly stored records, in id order, against the existing roots and each other.

    `root_ids`/`root_sigs`: the Datanet's existing roots (records of earlier ingests that joined no
    cluster). `texts(ids)` returns the text of the records it is asked for (only those in an LSH
    collision are asked for). Returns {new id: Match} for the new records that join a cluster; the
    others are roots. Deterministic for fixed inputs.
    """
    new_ids = np.asarray(new_ids, dtype=np.int64)
    root_ids = np.asarray(root_ids, dtype=np.int64)
    if len(new_ids) == 0:
        return {}
    order = np.argsort(new_ids, kind="stable")
    new_ids, new_sigs = new_ids[order], new_sigs[order]
    bands, rows = lsh_params(threshold)
    kn = band_keys(new_sigs, bands, rows)
    ke = band_keys(root_sigs, bands, rows)
    hot_new = np.zeros(len(new_ids), dtype=bool)
    hot_root = np.zeros(len(root_ids), dtype=bool)
    for j in range(bands):
        keys, counts = np.unique(kn[:, j], return_counts=True)
        shared_in_new = keys[counts > 1]
        hot_root |= np.isin(ke[:, j], keys)
        hot_new |= np.isin(kn[:, j], shared_in_new) | np.isin(kn[:, j], ke[:, j])
    if not hot_new.any():
        return {}
    idx_new = np.flatnonzero(hot_new)
    idx_root = np.flatnonzero(hot_root)
    text_of = texts([int(i) for i in new_ids[idx_new]] + [int(i) for i in root_ids[idx_root]])
    cache: dict[int, set] = {}

    def sh(record_id: int) -> set:
        s = cache.get(record_id)
        if s is None:
            s = cache[record_id] = shingles(text_of[record_id])
        return s

    tables: list[dict[int, list[int]]] = [{} for _ in range(bands)]

    def index(rid: int, keys_row) -> None:
        for j, key in enumerate(keys_row):
            bucket = tables[j].setdefault(key, [])
            if len(bucket) < MAX_BUCKET:  # a full bucket tells nothing more about who is similar
                bucket.append(rid)

    for rid, keys_row in zip(root_ids[idx_root].tolist(), ke[idx_root].tolist(), strict=True):
        index(rid, keys_row)
    matches: dict[int, Match] = {}
    for rid, keys_row in zip(new_ids[idx_new].tolist(), kn[idx_new].tolist(), strict=True):
        hits: dict[int, int] = {}
        for j, key in enumerate(keys_row):
            for cand in tables[j].get(key, ()):
                hits[cand] = hits.get(cand, 0) + 1
        best: Match | None = None
        mine = None
        if hits:
            mine = shingles(text_of[rid])  # not cached: only roots are compared again
            # The candidates sharing the most bands first (their MinHash estimate of Jaccard is highest),
            # at most MAX_CANDIDATES of them: rows that all look alike (a 40,000-row file of "line N") made
            # the exact check quadratic.
            ranked = sorted(hits, key=lambda c: (-hits[c], c))[:MAX_CANDIDATES]
            for cand in sorted(ranked):
                s = jaccard(mine, sh(cand))
                if s >= threshold and (best is None or s > best.similarity):
                    best = Match(cand, s)
        if best is not None:
            matches[rid] = best
        else:  # a root: later records may join it
            if mine is not None:
                cache[rid] = mine
            index(rid, keys_row)
    return matches
