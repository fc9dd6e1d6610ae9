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
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import chain

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


def _words(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The texts' words as byte spans of their normalised UTF-8, joined: (bytes, seps, w_lo, w_hi, w_text).
    `seps[i]` is the NUL that ends text i; word k is bytes [w_lo[k], w_hi[k]) of text w_text[k], in order."""
    # NUL separates texts (ingest refuses text holding one; elsewhere it is made a space).
    joined = "\x00".join(normalise(t).replace("\x00", " ") for t in texts).encode() + b"\x00"
    b = np.frombuffer(joined, dtype=np.uint8)
    seps = np.flatnonzero(b == 0)
    edge = np.diff(np.concatenate(([False], _WORD_BYTE[b], [False])).astype(np.int8))
    w_lo, w_hi = np.flatnonzero(edge == 1), np.flatnonzero(edge == -1)
    return b, seps, w_lo, w_hi, np.searchsorted(seps, w_lo)


def _span_hasher(b: np.ndarray):
    """span_hash(lo, hi): a 64-bit hash of each byte span [lo, hi) of b (polynomial, then mixed)."""
    powers, inv = _powers(len(b))
    with np.errstate(over="ignore"):
        prefix = np.concatenate(([np.uint64(0)], np.cumsum((b.astype(np.uint64) + np.uint64(1)) * powers, dtype=np.uint64)))

    def span_hash(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore"):
            return _mix((prefix[hi] - prefix[lo]) * inv[lo] + (hi - lo).astype(np.uint64) * _PAIR_MUL)
    return span_hash


def _signatures(texts: Sequence[str]) -> np.ndarray:
    n = len(texts)
    if n == 0:
        return np.empty((0, NUM_PERM), dtype=SIGNATURE_DTYPE)
    b, seps, w_lo, w_hi, w_text = _words(texts)
    text_start = np.concatenate(([0], seps[:-1] + 1))
    span_hash = _span_hasher(b)
    with np.errstate(over="ignore"):
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


_VERIFY_BYTES = 1 << 20  # bytes of words compared at a time when checking that equal hashes are equal words


def shingle_ids(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Each text's shingles as integers: (ids, offsets), text i's being ids[offsets[i]:offsets[i + 1]].

    Exact within one call: two texts' id sets share an id exactly where their `shingles()` share a
    shingle, so `jaccard` of the id sets is the texts' `similarity`. Words are grouped by a 64-bit hash
    and every word is then compared byte for byte with its group's first (a collision falls back to
    numbering the words in Python); a word pair is numbered from its two word numbers, and a text with
    no word by its whole text. Vectorised: a few microseconds a text, against ~15 for `shingles()`.
    """
    n = len(texts)
    if n == 0:
        return np.empty(0, dtype=np.int64), np.zeros(1, dtype=np.int64)
    b, seps, w_lo, w_hi, w_text = _words(texts)
    # Hashes in slices of about _BATCH_CHARS bytes (each slice's prefix sums alone: bounded temporaries).
    h = np.empty(len(w_lo), dtype=np.uint64)
    cut = np.searchsorted(w_lo, np.arange(0, len(b), _BATCH_CHARS))
    cut = np.append(cut, len(w_lo))
    for lo, hi in zip(cut[:-1], cut[1:], strict=True):
        if hi > lo:
            base = int(w_lo[lo])
            h[lo:hi] = _span_hasher(b[base:int(w_hi[hi - 1])])(w_lo[lo:hi] - base, w_hi[lo:hi] - base)
    _, first, word_id = np.unique(h, return_index=True, return_inverse=True)
    del h
    word_id = word_id.astype(np.int64).reshape(-1)
    if not _same_words(b, w_lo, w_hi, first[word_id]):
        word_id = _word_ids_python(b, w_lo, w_hi)
    n_words = int(word_id.max()) + 1 if len(word_id) else 0
    counts = np.bincount(w_text, minlength=n)
    p = np.flatnonzero(w_text[1:] == w_text[:-1])
    pair_id = n_words + word_id[p] * n_words + word_id[p + 1]
    # Per text: its words, then its pairs (counts - 1 of them), then its no-word id if it has no word.
    empty = np.flatnonzero(counts == 0)
    sizes = counts + np.maximum(counts - 1, 0)
    sizes[empty] = 1
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(sizes, out=offsets[1:])
    ids = np.empty(int(offsets[-1]), dtype=np.int64)
    first_word = np.zeros(n, dtype=np.int64)
    np.cumsum(counts[:-1], out=first_word[1:])
    ids[offsets[w_text] + (np.arange(len(w_lo)) - first_word[w_text])] = word_id
    p_text = w_text[p]
    ids[offsets[p_text] + counts[p_text] + (p - first_word[p_text])] = pair_id
    if len(empty):  # no word: the shingle is the whole text, as given (shingles() keeps ("", text))
        base, seen = n_words + n_words * n_words, {}
        ids[offsets[empty]] = [base + seen.setdefault(texts[i], len(seen)) for i in empty.tolist()]
    return ids, offsets


def _same_words(b: np.ndarray, w_lo: np.ndarray, w_hi: np.ndarray, rep: np.ndarray) -> bool:
    """Whether every word k equals word rep[k] byte for byte (compared in slices of _VERIFY_BYTES)."""
    lengths = w_hi - w_lo
    if not np.array_equal(lengths, lengths[rep]):
        return False
    check = np.flatnonzero(rep != np.arange(len(rep)))
    ends = np.cumsum(lengths[check])
    start = 0
    while start < len(check):
        stop = int(np.searchsorted(ends, (ends[start - 1] if start else 0) + _VERIFY_BYTES, side="right"))
        stop = max(stop, start + 1)
        k = check[start:stop]
        ln = lengths[k]
        step = np.arange(int(ln.sum())) - np.repeat(np.cumsum(ln) - ln, ln)
        if not np.array_equal(b[np.repeat(w_lo[k], ln) + step], b[np.repeat(w_lo[rep[k]], ln) + step]):
            return False
        start = stop
    return True


def _word_ids_python(b: np.ndarray, w_lo: np.ndarray, w_hi: np.ndarray) -> np.ndarray:
    """Word numbers by their bytes (the rare case of a 64-bit hash collision)."""
    raw, seen = b.tobytes(), {}
    return np.fromiter((seen.setdefault(raw[lo:hi], len(seen)) for lo, hi in zip(w_lo.tolist(), w_hi.tolist(), strict=True)),
                       dtype=np.int64, count=len(w_lo))


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
        # The roots' keys are looked up among the new ones (binary search): no sort of the roots, whose
        # number grows with the Datanet while a call's new records stay a chunk.
        pos = np.minimum(np.searchsorted(keys, ke[:, j]), len(keys) - 1)
        root_hit = keys[pos] == ke[:, j]
        hot_root |= root_hit
        hot_new |= np.isin(kn[:, j], keys[(counts > 1) | np.isin(keys, ke[root_hit, j])])
    if not hot_new.any():
        return {}
    idx_new = np.flatnonzero(hot_new)
    idx_root = np.flatnonzero(hot_root)
    hot_ids = [int(i) for i in new_ids[idx_new]] + [int(i) for i in root_ids[idx_root]]
    text_of = texts(hot_ids)
    # Every text's shingles as exact integer ids in one vectorised pass (shingle_ids); a record's set is
    # made when it is first compared, and kept for roots only (they are compared again).
    flat, offsets = shingle_ids([text_of[i] for i in hot_ids])
    del text_of
    where = {rid: k for k, rid in enumerate(hot_ids)}
    sizes = {}
    cache: dict[int, set] = {}

    def sh(record_id: int) -> set:
        s = cache.get(record_id)
        if s is None:
            k = where[record_id]
            s = cache[record_id] = set(flat[offsets[k]:offsets[k + 1]].tolist())
            sizes[record_id] = len(s)
        return s

    # The earlier roots' buckets, in numpy: per band, the hot roots sorted by key (stable, so in root
    # order within a key), of which a bucket keeps its first MAX_BUCKET. Each new record's candidates among
    # them (the roots in the buckets of its keys, and in how many bands) come out of one vectorised pass
    # per block of records; only the roots this call finds go into dict buckets, in id order, after those
    # (a bucket full of earlier roots takes none). The same buckets as indexing every root in turn.
    kr = ke[idx_root]
    rid_root = root_ids[idx_root]
    id_rank = np.empty(len(rid_root), dtype=np.int64)
    id_rank[np.argsort(rid_root, kind="stable")] = np.arange(len(rid_root))
    by_rank_pos = np.argsort(rid_root, kind="stable")
    by_rank = rid_root[by_rank_pos]
    knh = kn[idx_new]
    old_buckets = []
    for j in range(bands):
        o = np.argsort(kr[:, j], kind="stable")
        ukeys, first, counts = np.unique(kr[o, j], return_index=True, return_counts=True)
        old_buckets.append((o, ukeys, first, np.minimum(counts, MAX_BUCKET)))
    old_count = np.zeros((len(idx_new), bands), dtype=np.int16)  # earlier roots in each of its buckets

    def block_candidates(lo: int, hi: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Records lo..hi-1 (of the hot new ones): (row bounds, candidate ids, bands shared), by record then id."""
        pairs = []
        for j, (o, ukeys, first, counts) in enumerate(old_buckets):
            if not len(ukeys):
                continue
            keys = knh[lo:hi, j]
            pos = np.minimum(np.searchsorted(ukeys, keys), len(ukeys) - 1)
            take = np.where(ukeys[pos] == keys, counts[pos], 0)
            old_count[lo:hi, j] = take
            total = int(take.sum())
            if not total:
                continue
            row = np.repeat(np.arange(hi - lo, dtype=np.int64), take)
            starts = np.repeat(first[pos] - (np.cumsum(take) - take), take)
            pairs.append(row * len(rid_root) + id_rank[o[starts + np.arange(total)]])
        if not pairs:
            empty = np.empty(0, dtype=np.int64)
            return np.zeros(hi - lo + 1, dtype=np.int64), empty, empty, empty
        allp = np.concatenate(pairs)
        allp.sort()
        cut = np.flatnonzero(np.concatenate(([True], allp[1:] != allp[:-1], [True])))
        uniq, hits = allp[cut[:-1]], np.diff(cut)
        bounds = np.searchsorted(uniq, np.arange(hi - lo + 1, dtype=np.int64) * len(rid_root))
        rank = uniq % len(rid_root)
        return bounds, by_rank[rank], hits, by_rank_pos[rank]

    # Each text's shingle set as sorted unique (text, shingle) keys: the exact Jaccard of many (record,
    # earlier root) pairs at once, by binary search (the same integer ratio as `jaccard` on the sets).
    width = int(flat.max()) + 1 if len(flat) else 1
    vector_check = len(hot_ids) * width < 2**62
    if vector_check:
        ukey = np.repeat(np.arange(len(hot_ids), dtype=np.int64), np.diff(offsets)) * width + flat
        ukey.sort()  # (np.unique hashes int64 first: several times slower here)
        ukey = ukey[np.concatenate(([True], ukey[1:] != ukey[:-1]))] if len(ukey) else ukey
        u_size = np.bincount(ukey // width, minlength=len(hot_ids))
        u_off = np.zeros(len(hot_ids) + 1, dtype=np.int64)
        np.cumsum(u_size, out=u_off[1:])

    def block_best(lo: int, bounds, cand_ids, cand_hits, cand_pos) -> tuple[list, list]:
        """For records lo.. of the block: the best earlier root among their candidates (at most
        MAX_CANDIDATES, most bands shared first, ties to the earlier id) at or above the threshold,
        ties to the earlier id, as (id or -1, similarity); what the loop below finds when this call's own
        roots are not among a record's candidates."""
        n = len(bounds) - 1
        best_id = np.full(n, -1, dtype=np.int64)
        best_s = np.zeros(n, dtype=np.float64)
        if not len(cand_ids):
            return best_id.tolist(), best_s.tolist()
        row = np.repeat(np.arange(n, dtype=np.int64), np.diff(bounds))
        if (np.diff(bounds) > MAX_CANDIDATES).any():
            order = np.lexsort((cand_ids, -cand_hits, row))
            start = np.repeat(bounds[:-1], np.diff(bounds))
            keep = order[(np.arange(len(order)) - start) < MAX_CANDIDATES]
            row, cand_ids, cand_pos = row[keep], cand_ids[keep], cand_pos[keep]
        k_row = row + lo
        k_cand = cand_pos + len(idx_new)
        size_row, size_cand = u_size[k_row], u_size[k_cand]
        inter = np.zeros(len(row), dtype=np.int64)
        ends = np.cumsum(size_cand)
        done = 0
        while done < len(row):  # pairs in slices of about a million shingles: bounded temporaries
            stop = max(int(np.searchsorted(ends, (ends[done - 1] if done else 0) + (1 << 20), side="right")), done + 1)
            ln = size_cand[done:stop]
            pair = np.repeat(np.arange(done, stop, dtype=np.int64), ln)
            el = np.repeat(u_off[k_cand[done:stop]] - (np.cumsum(ln) - ln), ln) + np.arange(int(ln.sum()))
            probe = k_row[pair] * width + ukey[el] % width
            hit = ukey[np.minimum(np.searchsorted(ukey, probe), len(ukey) - 1)] == probe
            inter[done:stop] = np.bincount(pair[hit] - done, minlength=stop - done)
            done = stop
        sim = inter / (size_row + size_cand - inter)
        ok = sim >= threshold
        row, cand_ids, sim = row[ok], cand_ids[ok], sim[ok]
        order = np.lexsort((cand_ids, -sim, row))
        first = order[np.concatenate(([True], row[order][1:] != row[order][:-1]))] if len(order) else order
        best_id[row[first]] = cand_ids[first]
        best_s[row[first]] = sim[first]
        return best_id.tolist(), best_s.tolist()

    tables: list[dict[int, list[int]]] = [{} for _ in range(bands)]  # the roots found in this call
    bucket_of = dict.get
    matches: dict[int, Match] = {}
    n_roots_here = 0
    new_list = new_ids[idx_new].tolist()
    keys_list = knh.tolist()
    block = 2_000  # bounds the candidate pairs held at once (at most bands * MAX_BUCKET a record)
    for b_lo in range(0, len(new_list), block):
        b_hi = min(b_lo + block, len(new_list))
        bounds, cand_ids, cand_hits, cand_pos = block_candidates(b_lo, b_hi)
        pre_id, pre_s = block_best(b_lo, bounds, cand_ids, cand_hits, cand_pos) if vector_check else (None, None)
        bounds, cand_ids, cand_hits = bounds.tolist(), cand_ids.tolist(), cand_hits.tolist()
        for i in range(b_lo, b_hi):
            rid, keys_row = new_list[i], keys_list[i]
            lo, hi = bounds[i - b_lo], bounds[i - b_lo + 1]
            found = list(filter(None, map(bucket_of, tables, keys_row))) if n_roots_here else []
            best: Match | None = None
            mine = None
            if not found and pre_id is not None:  # earlier roots only: checked above, in numpy
                if pre_id[i - b_lo] >= 0:
                    best = Match(pre_id[i - b_lo], pre_s[i - b_lo])
            elif found or hi > lo:
                k = where[rid]
                mine = set(flat[offsets[k]:offsets[k + 1]].tolist())
                n_mine = len(mine)
                ranked = cand_ids[lo:hi]
                if found:
                    ranked = ranked + list(set(chain.from_iterable(found)))
                # The candidates sharing the most bands first (their MinHash estimate of Jaccard is
                # highest), at most MAX_CANDIDATES of them: rows that all look alike (a 40,000-row file of
                # "line N") made the exact check quadratic.
                if len(ranked) > MAX_CANDIDATES:
                    hits = Counter(dict(zip(cand_ids[lo:hi], cand_hits[lo:hi], strict=True)))
                    hits.update(chain.from_iterable(found))
                    ranked = sorted(sorted(hits, key=lambda c: (-hits[c], c))[:MAX_CANDIDATES])
                elif found:
                    ranked = sorted(ranked)
                for cand in ranked:
                    theirs = sh(cand)
                    # Jaccard <= smaller size / larger size: skip a candidate that cannot reach the threshold
                    # or beat the best so far (a tie keeps the earlier root), so the answer is the same.
                    n_theirs = sizes[cand]
                    bound = min(n_mine, n_theirs) / max(n_mine, n_theirs)
                    if bound < threshold or (best is not None and bound <= best.similarity):
                        continue
                    s = jaccard(mine, theirs)
                    if s >= threshold and (best is None or s > best.similarity):
                        best = Match(cand, s)
            if best is not None:
                matches[rid] = best
            else:  # a root: later records may join it, in the buckets earlier roots left room in
                if mine is not None:
                    cache[rid] = mine
                    sizes[rid] = len(mine)
                n_roots_here += 1
                counts_row = old_count[i].tolist()
                for table, key, n_old in zip(tables, keys_row, counts_row, strict=True):
                    bucket = table.get(key)
                    if bucket is None:
                        if n_old < MAX_BUCKET:
                            table[key] = [rid]
                    elif n_old + len(bucket) < MAX_BUCKET:
                        bucket.append(rid)
    return matches
