"""Streaming readers for uploaded data files. Plain Python: no Django import.

Every reader yields `Row(number, text, label, error)` one at a time from a binary stream, so memory does
not grow with the file. Compressed uploads (.gz, single-member .zip) are read through a counter that
raises `ReadError` once the decompressed bytes pass a limit (compression bombs). Records are hashed in a
canonical form (see `canonical_text` and `record_sha256`); the hashes are what Datanet versions put in
their Merkle trees, so anyone can recompute them with nothing but hashlib.
"""
from __future__ import annotations

import codecs
import csv
import gzip
import hashlib
import io
import json
import unicodedata
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

FORMATS = ("csv", "tsv", "jsonl", "parquet", "text")
TEXT_MODES = ("line", "paragraph")
EXTENSIONS = {
    ".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl",
    ".parquet": "parquet", ".pq": "parquet", ".txt": "text", ".text": "text",
}
COMPRESSIONS = {".gz": "gzip", ".zip": "zip"}
SNIFF_BYTES = 64 * 1024
ENCODING_SAMPLE = 64 * 1024
PREFERRED_ENCODINGS = ("cp1252", "latin_1", "iso8859_15")
# How close to charset-normalizer's best guess a preferred encoding must score to win (see detect_encoding).
NEAR_CHAOS, NEAR_COHERENCE = 0.01, 0.05
CHUNK = 1024 * 1024
PREVIEW_ROWS = 20
# csv's default field limit (128 KiB) is raised so that long texts reach validation and get a row error.
csv.field_size_limit(64 * 1024 * 1024)

TEXT_COLUMN_NAMES = ("text", "content", "sentence", "sentences", "document", "body", "review", "message",
                     "utterance", "tweet", "prompt", "input", "question", "passage", "abstract")
LABEL_COLUMN_NAMES = ("label", "labels", "result", "sentiment", "class", "category", "target", "tag",
                      "y", "answer", "output", "polarity")

ERR_UNSUPPORTED = "Unsupported format '{name}': upload CSV, TSV, JSONL, Parquet or plain text (.txt), optionally .gz or .zip."
ERR_EMPTY = "The file is empty."
ERR_BINARY = "The file does not look like {fmt}: it holds binary content (NUL bytes or a binary file signature)."
ERR_BOMB = "The file decompresses to more than {limit} bytes; refusing it (compression bomb?)."
ERR_ZIP_MEMBERS = "A .zip upload must hold exactly one data file; this one holds {n}."
ERR_BAD_ARCHIVE = "The compressed file is damaged: {detail}"
ERR_PARQUET = "Not a readable Parquet file: {detail}"
ERR_NO_COLUMNS = "No header row found: the first line of a {fmt} file must name its columns."
ERR_COLUMN_MISSING = "Column '{column}' is not in the file; its columns are: {columns}."

# Binary signatures that are never a text data file.
BINARY_MAGIC = (b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"%PDF", b"\x7fELF", b"MZ", b"PK\x03\x04", b"\x1f\x8b",
                b"PAR1", b"Rar!", b"7z\xbc\xaf", b"BZh", b"\xfd7zXZ", b"SQLite format 3")


class ReadError(Exception):
    """The file as a whole cannot be read (format, encoding, bomb); the message is for the user."""


@dataclass(slots=True)
class Row:
    number: int  # 1-based data row (the header does not count); for text, the line or paragraph number
    text: str
    label: str
    error: str = ""


# --- canonical form ---------------------------------------------------------------------------------

def canonical_text(text: str) -> str:
    """NFC-normalised, line endings as \\n, surrounding whitespace stripped. Stored as the record's text."""
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = text.strip()
    if not text.isascii() and not unicodedata.is_normalized("NFC", text):
        text = unicodedata.normalize("NFC", text)
    return text


def record_sha256(text: str, label: str) -> str:
    """sha256 hex of UTF-8 `label + "\\n" + text` (text already canonical; labels never hold a newline)."""
    return hashlib.sha256(f"{label}\n{text}".encode()).hexdigest()


def text_sha256(text: str) -> str:
    """sha256 hex of the canonical text alone: same text with another label is a conflict."""
    return hashlib.sha256(text.encode()).hexdigest()


# --- format and compression ---------------------------------------------------------------------------

def detect_format(name: str, head: bytes) -> tuple[str, str]:
    """(format, compression) from the file name, checked against the first bytes. Raises ReadError."""
    suffixes = [s.lower() for s in Path(name).suffixes]
    compression = ""
    if suffixes and suffixes[-1] in COMPRESSIONS:
        compression = COMPRESSIONS[suffixes.pop()]
    fmt = EXTENSIONS.get(suffixes[-1]) if suffixes else None
    if compression == "gzip" and not head.startswith(b"\x1f\x8b"):
        raise ReadError(ERR_BAD_ARCHIVE.format(detail="not gzip data"))
    if compression == "zip":
        if not head.startswith(b"PK\x03\x04"):
            raise ReadError(ERR_BAD_ARCHIVE.format(detail="not zip data"))
        return fmt or "", compression  # the member's name decides
    if fmt is None:
        raise ReadError(ERR_UNSUPPORTED.format(name=name))
    return fmt, compression


class LimitedReader(io.RawIOBase):
    """Wrap a decompressing stream; raise ReadError when more than `limit` bytes come out."""

    def __init__(self, raw: BinaryIO, limit: int):
        self.raw, self.limit, self.count = raw, limit, 0

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        try:
            data = self.raw.read(len(b))
        except (OSError, EOFError, zipfile.BadZipFile) as exc:
            raise ReadError(ERR_BAD_ARCHIVE.format(detail=exc)) from exc
        n = len(data)
        self.count += n
        if self.count > self.limit:
            raise ReadError(ERR_BOMB.format(limit=self.limit))
        b[:n] = data
        return n


def open_payload(path: str | Path, name: str, *, max_decompressed: int) -> tuple[BinaryIO, str, str]:
    """Open an uploaded file as (binary stream of the data, format, compression). Raises ReadError."""
    path = Path(path)
    if path.stat().st_size == 0:
        raise ReadError(ERR_EMPTY)
    with open(path, "rb") as fh:
        head = fh.read(SNIFF_BYTES)
    fmt, compression = detect_format(name, head)
    raw: BinaryIO
    if compression == "gzip":
        raw = io.BufferedReader(LimitedReader(gzip.open(path, "rb"), max_decompressed), CHUNK)
        inner_head = raw.peek(SNIFF_BYTES)[:SNIFF_BYTES]
    elif compression == "zip":
        try:
            zf = zipfile.ZipFile(path)
        except zipfile.BadZipFile as exc:
            raise ReadError(ERR_BAD_ARCHIVE.format(detail=exc)) from exc
        members = [m for m in zf.infolist() if not m.is_dir()]
        if len(members) != 1:
            raise ReadError(ERR_ZIP_MEMBERS.format(n=len(members)))
        member = members[0]
        if member.file_size > max_decompressed:  # declared size; the LimitedReader checks the real one
            raise ReadError(ERR_BOMB.format(limit=max_decompressed))
        fmt = EXTENSIONS.get(Path(member.filename).suffix.lower())
        if fmt is None:
            raise ReadError(ERR_UNSUPPORTED.format(name=member.filename))
        raw = io.BufferedReader(LimitedReader(zf.open(member), max_decompressed), CHUNK)
        inner_head = raw.peek(SNIFF_BYTES)[:SNIFF_BYTES]
    else:
        raw = open(path, "rb")  # noqa: SIM115 - handed to the caller
        inner_head = head
    if not inner_head:
        raw.close()
        raise ReadError(ERR_EMPTY)
    if fmt == "parquet":
        if compression:
            raw.close()
            raise ReadError("Parquet is compressed inside already: upload the .parquet file itself, not a .gz or .zip of it.")
        if not inner_head.startswith(b"PAR1"):
            raw.close()
            raise ReadError(ERR_BINARY.format(fmt="Parquet").replace("holds binary content (NUL bytes or a binary file signature)", "the Parquet signature PAR1 is missing"))
    elif b"\x00" in inner_head or inner_head.startswith(BINARY_MAGIC):
        raw.close()
        raise ReadError(ERR_BINARY.format(fmt=fmt.upper() if fmt != "text" else "plain text"))
    return raw, fmt, compression


# --- encoding -----------------------------------------------------------------------------------------

def detect_encoding(stream: BinaryIO) -> str:
    """Read the whole stream once: 'utf-8' (or 'utf-8-sig') when it all decodes, else charset-normalizer's guess.

    Streaming: one chunk at a time through an incremental decoder. A file that is UTF-8 for its first
    megabytes and Latin-1 later is still caught, which a sample alone would miss. The guess comes from a
    sample, so it is checked against every byte value the file holds: a single-byte code page that
    leaves one of them undefined (cp1250 has no 0x88) is replaced by one that decodes them all.
    """
    decoder = codecs.getincrementaldecoder("utf-8")()
    first = b""
    bad_sample = b""
    utf8 = True
    seen: set[int] = set()
    while chunk := stream.read(CHUNK):
        if not first:
            first = chunk[:ENCODING_SAMPLE]
        seen.update(chunk.translate(None, _ASCII))
        if utf8:
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                bad_sample = chunk[max(0, exc.start - 32 * 1024): exc.start + 32 * 1024]
                utf8 = False
    if utf8:
        try:
            decoder.decode(b"", final=True)
            return "utf-8-sig" if first.startswith(codecs.BOM_UTF8) else "utf-8"
        except UnicodeDecodeError as exc:
            bad_sample = first[max(0, exc.start - 1024):]
    if first.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    from charset_normalizer import from_bytes

    results = from_bytes(first + b"\n" + bad_sample)
    best = results.best()
    encoding = best.encoding if best else "cp1252"
    if best:
        # Many single-byte code pages (nearly) tie on a sample with few non-ASCII bytes: the evidence is
        # weak, so prefer the common Western ones then (otherwise one share of a file may come out cp1250).
        near = {m.encoding for m in results
                if m.chaos <= best.chaos + NEAR_CHAOS and m.coherence >= best.coherence - NEAR_COHERENCE}
        encoding = next((e for e in PREFERRED_ENCODINGS if e in near), encoding)
    if encoding in ("utf_8", "ascii"):  # it did not decode as UTF-8; the sample alone may look like it
        encoding = "cp1252"
    present = bytes(sorted(seen))
    if _single_byte(encoding) and not _decodes(present, encoding):
        others = [m.encoding for m in results if _single_byte(m.encoding)]
        encoding = next((e for e in (*PREFERRED_ENCODINGS, *others) if _decodes(present, e)), "latin_1")
    # cp1252 leaves five bytes undefined; Latin-1 decodes every byte.
    return "latin-1" if encoding in ("cp1252", "windows-1252", "latin_1") and _has_cp1252_holes(present) else encoding


_ASCII = bytes(range(128))


def _single_byte(encoding: str) -> bool:
    """A code page that maps each byte alone (so decoding the bag of byte values present is a fair test)."""
    import importlib

    name = codecs.lookup(encoding).name.replace("-", "_")
    if name in ("latin_1", "iso8859_1"):
        return True
    try:
        return hasattr(importlib.import_module(f"encodings.{name}"), "decoding_table")
    except ImportError:
        return False


def _decodes(data: bytes, encoding: str) -> bool:
    try:
        data.decode(encoding)
    except (UnicodeDecodeError, LookupError):
        return False
    return True


def _has_cp1252_holes(sample: bytes) -> bool:
    return any(b in sample for b in (b"\x81", b"\x8d", b"\x8f", b"\x90", b"\x9d"))


# --- column mapping -----------------------------------------------------------------------------------

def guess_columns(columns: list[str], preview: list[dict], labels: list[str]) -> tuple[str, str]:
    """(text column, label column) guessed from the names, then from the preview values; '' if unknown."""
    lower = {c.lower().strip(): c for c in columns}
    text = next((lower[n] for n in TEXT_COLUMN_NAMES if n in lower), "")
    label = next((lower[n] for n in LABEL_COLUMN_NAMES if n in lower), "")
    if labels and not label:
        allowed = set(labels)
        for c in columns:
            values = [str(r.get(c, "")).strip() for r in preview if r.get(c) not in (None, "")]
            if c != text and values and all(v in allowed for v in values):
                label = c
                break
    if not text:
        def avg_len(c):
            values = [str(r.get(c) or "") for r in preview]
            return sum(map(len, values)) / max(1, len(values))
        candidates = [c for c in columns if c != label]
        if candidates:
            text = max(candidates, key=avg_len)
    return text, label


# --- readers ------------------------------------------------------------------------------------------

def _value(v) -> str:
    if v is None:
        return ""
    if isinstance(v, str):
        return v
    if isinstance(v, (dict, list)):
        return json.dumps(v, ensure_ascii=False)
    return str(v)


def _text_stream(raw: BinaryIO, encoding: str) -> io.TextIOWrapper:
    return io.TextIOWrapper(raw, encoding=encoding, errors="strict", newline="")


def read_columns(raw: BinaryIO, fmt: str, encoding: str, *, limit: int = PREVIEW_ROWS) -> tuple[list[str], list[dict]]:
    """Column names and the first `limit` rows as dicts, for the mapping step. Raises ReadError."""
    if fmt == "parquet":
        pf = _parquet(raw)
        columns = pf.schema_arrow.names
        preview: list[dict] = []
        for batch in pf.iter_batches(batch_size=limit):
            preview = [{k: _value(v) for k, v in r.items()} for r in batch.to_pylist()]
            break
        return columns, preview
    if fmt == "text":
        return [], []
    stream = _text_stream(raw, encoding)
    try:
        if fmt in ("csv", "tsv"):
            reader = csv.reader(stream, delimiter="," if fmt == "csv" else "\t")
            header = next(reader, None)
            if not header:
                raise ReadError(ERR_NO_COLUMNS.format(fmt=fmt.upper()))
            header = [h.strip() for h in header]
            rows = []
            for row in reader:
                rows.append(dict(zip(header, row, strict=False)))
                if len(rows) >= limit:
                    break
            return header, rows
        columns: list[str] = []
        rows = []
        for line in stream:
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(obj, dict):
                for k in obj:
                    if k not in columns:
                        columns.append(k)
                rows.append({k: _value(v) for k, v in obj.items()})
            if len(rows) >= limit:
                break
        return columns, rows
    except UnicodeDecodeError as exc:
        raise ReadError(f"The file is not valid {encoding}: {exc}") from exc
    except csv.Error as exc:
        raise ReadError(f"Malformed {fmt.upper()}: {exc}") from exc
    finally:
        stream.detach()


def _parquet(raw: BinaryIO):
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(raw)
    except (pa.ArrowInvalid, OSError) as exc:
        raise ReadError(ERR_PARQUET.format(detail=exc)) from exc


def parquet_uncompressed_bytes(raw: BinaryIO) -> int:
    meta = _parquet(raw).metadata
    return sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))


def iter_rows(raw: BinaryIO, fmt: str, encoding: str, *, text_column: str = "", label_column: str = "",
              text_mode: str = "line", max_decompressed: int | None = None) -> Iterator[Row]:
    """Yield Rows (text and label raw, not yet canonical). Row-level problems come as Row.error."""
    if fmt == "parquet":
        yield from _iter_parquet(raw, text_column, label_column, max_decompressed)
        return
    stream = _text_stream(raw, encoding)
    try:
        if fmt in ("csv", "tsv"):
            yield from _iter_csv(stream, fmt, text_column, label_column)
        elif fmt == "jsonl":
            yield from _iter_jsonl(stream, text_column, label_column)
        elif fmt == "text":
            yield from (_iter_paragraphs(stream) if text_mode == "paragraph" else _iter_lines(stream))
        else:
            raise ReadError(ERR_UNSUPPORTED.format(name=fmt))
    except UnicodeDecodeError as exc:
        raise ReadError(f"The file is not valid {encoding}: {exc}") from exc
    except csv.Error as exc:
        raise ReadError(f"Malformed {fmt.upper()}: {exc}") from exc


def _iter_csv(stream, fmt: str, text_column: str, label_column: str) -> Iterator[Row]:
    reader = csv.reader(stream, delimiter="," if fmt == "csv" else "\t")
    header = next(reader, None)
    if not header:
        raise ReadError(ERR_NO_COLUMNS.format(fmt=fmt.upper()))
    header = [h.strip() for h in header]
    for column in (text_column, label_column):
        if column and column not in header:
            raise ReadError(ERR_COLUMN_MISSING.format(column=column, columns=", ".join(header)))
    ti = header.index(text_column)
    li = header.index(label_column) if label_column else -1
    width = len(header)
    n = 0
    for row in reader:
        n += 1
        if not row:
            yield Row(n, "", "", "empty line")
            continue
        if len(row) != width:
            yield Row(n, "", "", f"expected {width} fields, found {len(row)}")
            continue
        yield Row(n, row[ti], row[li] if li >= 0 else "")


def _iter_jsonl(stream, text_column: str, label_column: str) -> Iterator[Row]:
    for n, line in enumerate(stream, 1):
        if not line.strip():
            yield Row(n, "", "", "empty line")
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            yield Row(n, "", "", f"invalid JSON: {exc.msg}")
            continue
        if not isinstance(obj, dict):
            yield Row(n, "", "", "not a JSON object")
            continue
        if text_column not in obj:
            yield Row(n, "", "", f"no '{text_column}' field")
            continue
        yield Row(n, _value(obj.get(text_column)), _value(obj.get(label_column)) if label_column else "")


def _iter_lines(stream) -> Iterator[Row]:
    n = 0
    for line in stream:
        if line.strip():
            n += 1
            yield Row(n, line, "")


def _iter_paragraphs(stream) -> Iterator[Row]:
    """Blank-line-separated paragraphs; a paragraph's lines are kept joined by newlines."""
    n = 0
    buf: list[str] = []
    for line in stream:
        if line.strip():
            buf.append(line.rstrip("\r\n"))
        elif buf:
            n += 1
            yield Row(n, "\n".join(buf), "")
            buf = []
    if buf:
        yield Row(n + 1, "\n".join(buf), "")


def _iter_parquet(raw: BinaryIO, text_column: str, label_column: str, max_decompressed: int | None) -> Iterator[Row]:
    pf = _parquet(raw)
    names = pf.schema_arrow.names
    for column in (text_column, label_column):
        if column and column not in names:
            raise ReadError(ERR_COLUMN_MISSING.format(column=column, columns=", ".join(names)))
    if max_decompressed is not None:
        meta = pf.metadata
        total = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
        if total > max_decompressed:
            raise ReadError(ERR_BOMB.format(limit=max_decompressed))
    columns = [text_column] + ([label_column] if label_column else [])
    n = decoded = 0
    # The metadata's sizes are of encoded pages: a dictionary-encoded column can expand far beyond them.
    # Small batches, and the decoded bytes counted against the limit as they come.
    for batch in pf.iter_batches(batch_size=2_000, columns=columns):
        decoded += batch.nbytes
        if max_decompressed is not None and decoded > max_decompressed:
            raise ReadError(ERR_BOMB.format(limit=max_decompressed))
        texts = batch.column(0).to_pylist()
        labels = batch.column(1).to_pylist() if label_column else [""] * len(texts)
        for t, lab in zip(texts, labels, strict=True):
            n += 1
            yield Row(n, _value(t), _value(lab))
