"""Datanet business logic: create, upload and ingest, curate, stake (through the ledger outbox), version.

Ingest is two phases. Phase 1 streams the file, validates and hashes each row and writes it to a
temporary staging table in batches (PostgreSQL COPY; executemany elsewhere), updating progress between
batches; nothing the rest of the app reads is touched. Phase 2 is one transaction: it moves the rows that
are new to the Datanet into `Record` (duplicates within the file and against the Datanet are dropped in
SQL), flags conflicts, and records the stake in the ledger outbox. A failure in either phase stores no
records; the contribution says why.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import shutil
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import numpy as np
from django.conf import settings
from django.contrib.auth.models import Group, Permission
from django.core.files import File
from django.db import DatabaseError, connection, transaction
from django.db.models import Count, Max, Min
from django.utils import timezone
from django.utils.text import slugify

from core.errors import ApplicationError
from core.merkle import merkle_proof, merkle_root, merkle_verify
from core.roles import CONTRIBUTOR, CURATOR, user_has_role
from datanets import chat, neardup, readers
from datanets.models import Contribution, CurationDecision, Datanet, DatanetVersion, Record
from datanets.readers import ReadError
from datanets.selectors import contribution_chain_state, user_can_curate  # noqa: F401 - user_can_curate re-exported
from ledger.governance import datanet_terms_get
from ledger.selectors import transaction_get
from ledger.services import enqueue, ledger_transaction_retry

logger = logging.getLogger(__name__)

ERR_OVERSIZE = "The file is {size} bytes; the limit is {limit} bytes."
ERR_NOT_CONTRIBUTOR = "Only contributors can upload data."
ERR_NOT_CURATOR = "You are not a curator of the Datanet '{datanet}'."
ERR_OWN_CONTRIBUTION = "You cannot review your own contribution."
ERR_ALREADY_DECIDED = "Contribution {id} was already {status}."
ERR_NOT_INGESTED = "Contribution {id} is not ingested yet ({state}); it cannot be reviewed."
ERR_REASON_REQUIRED = "A rejection needs a reason."
ERR_NOT_OWNER = "Only the contributor who uploaded it can withdraw a contribution."
ERR_WITHDRAW_DECIDED = "Contribution {id} was already {status}; only a pending one can be withdrawn."
ERR_WITHDRAW_BUSY = "Contribution {id} is being ingested; withdraw it once the ingest has finished or failed."
ERR_WITHDRAW_STAKED = ("Contribution {id} has its stake on-chain (or on its way there); the registry has no "
                       "withdrawal, so a curator's decision releases or slashes it.")
ERR_WITHDRAW_CLUSTERED = ("Contribution {id} holds the first copy of records that later uploads were clustered "
                          "with as near-duplicates; it can no longer be withdrawn.")
ERR_ROWS_INVALID = "{bad} of {total} rows failed validation; nothing was stored. Fix them, or upload again choosing to drop bad rows."
ERR_NO_VALID_ROWS = "No valid rows in the file; nothing was stored."
ERR_TEXT_NEEDS_CHAT_COLUMNS = ("Plain text has no turns: upload chat JSONL (a 'messages' list of role/content turns) or "
                               "CSV/JSONL/Parquet with prompt and response columns.")
ERR_TEXT_NEEDS_GENERATION = "Plain text has no labels: upload it to a text-generation Datanet, or use CSV/JSONL/Parquet with a label column."
ERR_NEED_TEXT_COLUMN = "Choose the column that holds the text."
ERR_NEED_LABEL_COLUMN = "Choose the column that holds the label (this Datanet classifies text)."
ERR_NOT_MAPPING = "Contribution {id} is {state}; its columns can no longer be changed."
ERR_NO_ACCEPTED = "The Datanet has no accepted records to version."
ERR_EVALUATION_NOT_CURATOR = "Only a curator of the Datanet '{datanet}' can upload evaluation data."
ERR_LABELS = "A classification Datanet needs at least two labels, each on one line and unique."
ERRORS_KEPT = 100


def decimal_str(value: Decimal) -> str:
    """A decimal as a plain string without exponent or trailing zeros: Decimal('10.000') -> '10'."""
    return format(Decimal(value).normalize(), "f")


# --- Datanets and curators ----------------------------------------------------------------------------

# Slugs that the HTML URLs use for pages of their own (datanets/urls.py).
RESERVED_SLUGS = frozenset({"new", "mine", "contributions", "versions"})

@transaction.atomic
def datanet_create(*, owner, name: str, domain: str = Datanet.Domain.OTHER, task: str = Datanet.Task.CLASSIFICATION,
                   labels: list[str] | tuple[str, ...] = (), description: str = "", license: str = "",
                   min_stake: Decimal = Decimal("10"), slash_fraction: Decimal = Decimal("0.5"),
                   max_text_length: int = 10_000, curators=(), slug: str = "",
                   near_duplicate_threshold: float = neardup.DEFAULT_THRESHOLD, harm_threshold: float = 0.0) -> Datanet:
    """Create a Datanet and register it on-chain (outbox). Labels are required for classification."""
    labels = [str(label).strip() for label in labels if str(label).strip()]
    if task == Datanet.Task.CLASSIFICATION and (len(labels) < 2 or len(set(labels)) != len(labels)
                                                  or any("\n" in label for label in labels)):
        raise ApplicationError(ERR_LABELS)
    if task in (Datanet.Task.GENERATION, Datanet.Task.CHAT):
        labels = []
    base = slug or slugify(name)[:100] or "datanet"
    slug, i = base, 2
    while slug in RESERVED_SLUGS or Datanet.objects.filter(slug=slug).exists():
        slug, i = f"{base}-{i}", i + 1
    datanet = Datanet(owner=owner, name=name, slug=slug, domain=domain, task=task, labels=labels,
                      description=description, license=license, min_stake=Decimal(min_stake),
                      slash_fraction=Decimal(slash_fraction), max_text_length=max_text_length,
                      near_duplicate_threshold=near_duplicate_threshold, harm_threshold=harm_threshold)
    datanet.full_clean()
    datanet.save()
    for curator in curators:
        curator_appoint(datanet=datanet, user=curator)
    # Everything the ledger's planner and audit need: it reads no Datanet row (ledger is a sink).
    enqueue("datanet_create", {
        "datanet_id": datanet.id, "name": datanet.name, "slug": datanet.slug, "owner_id": datanet.owner_id,
        "curator_ids": sorted(datanet.curators.values_list("pk", flat=True)),
        "min_stake": decimal_str(datanet.min_stake), "slash_bps": int(Decimal(datanet.slash_fraction) * 10_000),
    }, f"datanet_create:{datanet.id}")
    return datanet


CURATOR_PERMISSIONS = ("view_datanet", "view_contribution", "change_contribution", "view_pendingcontribution",
                       "change_pendingcontribution", "view_record",
                       "view_datanetversion", "add_datanetversion", "view_curationdecision")


def curator_group_ensure() -> Group:
    """The curator group with the admin permissions its members need (view and decide, never delete)."""
    group, _ = Group.objects.get_or_create(name=CURATOR)
    perms = Permission.objects.filter(content_type__app_label="datanets", codename__in=CURATOR_PERMISSIONS)
    group.permissions.add(*perms)
    return group


@transaction.atomic
def curator_appoint(*, datanet: Datanet, user) -> None:
    """Make `user` a curator of `datanet`: curator group (with its admin permissions) and is_staff.

    Django's admin only admits staff, so curators get is_staff; the admin then scopes them to the
    Datanets they curate (see `datanets.selectors.datanets_curated_by`).
    """
    group = curator_group_ensure()
    user.groups.add(group)
    if not user.is_staff:
        user.is_staff = True
        user.save(update_fields=["is_staff"])
    user._role_cache = None
    datanet.curators.add(user)


# --- upload -------------------------------------------------------------------------------------------

@dataclass
class UploadResult:
    contribution: Contribution
    created: bool


def _sha256_of(fileobj) -> str:
    h = hashlib.sha256()
    fileobj.seek(0)
    if hasattr(fileobj, "chunks"):
        for chunk in fileobj.chunks():
            h.update(chunk)
    else:
        while chunk := fileobj.read(readers.CHUNK):
            h.update(chunk)
    fileobj.seek(0)
    return h.hexdigest()


def _file_size(fileobj) -> int:
    size = getattr(fileobj, "size", None)
    if size is None:
        fileobj.seek(0, io.SEEK_END)
        size = fileobj.tell()
        fileobj.seek(0)
    return size


def _inspect(contribution: Contribution) -> None:
    """Format, encoding, columns and a preview of the stored file, into the contribution. Raises ReadError."""
    path = contribution.file.path
    limit = settings.DATANET_DECOMPRESSED_MAX_BYTES
    raw, fmt, compression = readers.open_payload(path, contribution.file_name, max_decompressed=limit)
    with raw:
        encoding = "" if fmt == "parquet" else readers.detect_encoding(raw)
    if fmt == "text" and contribution.datanet.task != Datanet.Task.GENERATION:
        raise ReadError(ERR_TEXT_NEEDS_CHAT_COLUMNS if contribution.datanet.task == Datanet.Task.CHAT
                        else ERR_TEXT_NEEDS_GENERATION)
    raw, fmt, compression = readers.open_payload(path, contribution.file_name, max_decompressed=limit)
    with raw:
        columns, preview = readers.read_columns(raw, fmt, encoding)
    if fmt == "parquet":
        with open(path, "rb") as fh:
            if readers.parquet_uncompressed_bytes(fh) > limit:
                raise ReadError(readers.ERR_BOMB.format(limit=limit))
    if fmt in ("csv", "tsv", "jsonl", "parquet") and not columns:
        raise ReadError(readers.ERR_NO_COLUMNS.format(fmt=fmt.upper()))
    if contribution.datanet.task == Datanet.Task.CHAT:  # messages, or prompt (text) + response (label)
        text_col, label_col = chat.guess_chat_columns(columns)
    else:
        text_col, label_col = readers.guess_columns(columns, preview, contribution.datanet.labels)
    contribution.format, contribution.compression, contribution.encoding = fmt, compression, encoding
    contribution.options = {
        **contribution.options, "columns": columns, "preview": preview[:10],
        "guess": {"text_column": text_col, "label_column": label_col},
    }
    if contribution.datanet.task == Datanet.Task.CHAT:
        contribution.options["chat_preview"] = chat_preview(preview[:5], text_column=text_col, response_column=label_col,
                                                            max_length=contribution.datanet.max_text_length)


def chat_preview(rows: list[dict], *, text_column: str, response_column: str, max_length: int) -> list[dict]:
    """The first rows as the model will see them (ChatML), or each row's validation error."""
    out = []
    for n, row in enumerate(rows, 1):
        try:
            turns = _row_conversation(row.get(text_column, ""), row.get(response_column, "") if response_column else None,
                                      max_length=max_length)
            out.append({"row": n, "text": chat.conversation_preview(turns), "error": ""})
        except chat.ChatError as exc:
            out.append({"row": n, "text": "", "error": str(exc)})
    return out


def _row_conversation(text: str, response: str | None, *, max_length: int) -> list[dict]:
    """A row of a chat Datanet as canonical turns: a prompt/response pair when there is a response column,
    else the text column holds the messages. Raises chat.ChatError."""
    if response is not None:
        return chat.conversation_from_pair(text, response, max_length=max_length)
    return chat.conversation_parse(text, max_length=max_length)


def _mapping_complete(contribution: Contribution, options: dict) -> bool:
    if contribution.format == "text":
        return True
    if not options.get("text_column"):
        return False
    return contribution.datanet.task != Datanet.Task.CLASSIFICATION or bool(options.get("label_column"))


# Multipart framing around the file in a request (boundaries, headers, the other fields) stays below this.
MULTIPART_OVERHEAD = 64 * 1024


def upload_size_check(*, size: int, request_body: bool = False) -> None:
    """Raise ApplicationError (413) when an upload of `size` bytes is over DATANET_UPLOAD_MAX_BYTES.

    With `request_body`, `size` is a whole request's Content-Length: the API checks it before reading
    the body, so an oversize upload is refused without being received.
    """
    limit = settings.DATANET_UPLOAD_MAX_BYTES
    if size > limit + (MULTIPART_OVERHEAD if request_body else 0):
        raise ApplicationError(ERR_OVERSIZE.format(size=size, limit=limit), extra={"size": size, "limit": limit},
                               status_code=413)


def contribution_upload(*, datanet: Datanet, contributor, file, file_name: str = "", text_column: str = "",
                        label_column: str = "", text_mode: str = "line", drop_bad_rows: bool = False,
                        auto_start: bool = True, inline: bool = False, extra_options: dict | None = None,
                        is_evaluation: bool = False) -> UploadResult:
    """Store an uploaded file as a Contribution and, when its columns are known, queue its ingest.

    Idempotent on the file's sha256 per Datanet: a second upload of the same bytes returns the first
    contribution (unless that one failed, which is then retried with the new options). Raises
    ApplicationError for oversize, empty, unsupported or binary files; nothing is stored then.
    `inline` ingests in this process instead of queueing the `cpu` task (seed_demo, benchmarks).
    `is_evaluation` marks curator-held evaluation data (no stake, never trained on or paid): 403 unless
    the uploader curates the Datanet.
    """
    if not user_has_role(contributor, CONTRIBUTOR):
        raise ApplicationError(ERR_NOT_CONTRIBUTOR, status_code=403)
    if is_evaluation and not user_can_curate(user=contributor, datanet=datanet):
        raise ApplicationError(ERR_EVALUATION_NOT_CURATOR.format(datanet=datanet.name), status_code=403)
    file_name = Path(file_name or getattr(file, "name", "") or "upload").name
    size = _file_size(file)
    upload_size_check(size=size)
    if size == 0:
        raise ApplicationError(readers.ERR_EMPTY)
    try:
        readers.detect_format(file_name, _head(file))
    except ReadError as exc:
        raise ApplicationError(str(exc)) from exc
    if text_mode not in readers.TEXT_MODES:
        raise ApplicationError(f"Text mode must be one of {', '.join(readers.TEXT_MODES)}.")
    digest = _sha256_of(file)
    options = {"text_column": text_column, "label_column": label_column, "text_mode": text_mode,
               "drop_bad_rows": bool(drop_bad_rows), **(extra_options or {})}
    existing = Contribution.objects.filter(datanet=datanet, file_sha256=digest).first()
    if existing and existing.ingest_state != Contribution.IngestState.FAILED:
        return UploadResult(existing, False)
    # The file is stored and inspected before the transaction: on SQLite a transaction holds the database's
    # one write lock, and reading a file under load takes seconds (others' writes timed out behind it).
    draft = Contribution(datanet=datanet, contributor=contributor, file_sha256=digest,
                         is_evaluation=bool(is_evaluation), file_name=file_name[:255], file_size=size, options=options)
    draft.file.save(f"{uuid.uuid4().hex}{''.join(Path(file_name).suffixes[-2:])}", File(file), save=False)
    try:
        _inspect(draft)
    except ReadError as exc:
        draft.file.delete(save=False)
        raise ApplicationError(str(exc)) from exc
    with transaction.atomic():
        existing = Contribution.objects.select_for_update().filter(datanet=datanet, file_sha256=digest).first()
        if existing and existing.ingest_state != Contribution.IngestState.FAILED:
            draft.file.delete(save=False)  # the same bytes arrived meanwhile
            return UploadResult(existing, False)
        contribution = existing or draft
        if existing:  # a failed one is retried with the new file and options
            existing.file.delete(save=False)
            for name in ("file", "file_name", "file_size", "options", "format", "compression", "encoding"):
                setattr(existing, name, getattr(draft, name))
        contribution.ingest_errors, contribution.rows_bad, contribution.rows_total = [], 0, 0
        contribution.ingest_progress = 0.0
        opts = contribution.options
        guess = opts["guess"]
        opts["text_column"] = opts["text_column"] or guess["text_column"]
        if datanet.task == Datanet.Task.CLASSIFICATION:
            opts["label_column"] = opts["label_column"] or guess["label_column"]
        elif datanet.task == Datanet.Task.CHAT:  # the response column; none when the text column holds messages
            opts["label_column"] = opts["label_column"] or (guess["label_column"] if not text_column else "")
        else:
            opts["label_column"] = ""
        for key in ("text_column", "label_column"):
            if opts[key] and contribution.format != "text" and opts[key] not in opts["columns"]:
                contribution.file.delete(save=False)
                raise ApplicationError(readers.ERR_COLUMN_MISSING.format(column=opts[key], columns=", ".join(opts["columns"])))
        ready = auto_start and _mapping_complete(contribution, opts)
        contribution.ingest_state = Contribution.IngestState.QUEUED if ready else Contribution.IngestState.MAPPING
        contribution.save()
        if ready and not inline:
            _queue_ingest(contribution)
    if ready and inline:
        contribution = contribution_ingest(contribution_id=contribution.id)
    return UploadResult(contribution, existing is None)


def _head(file) -> bytes:
    file.seek(0)
    head = file.read(readers.SNIFF_BYTES)
    file.seek(0)
    return head


def _queue_ingest(contribution: Contribution) -> None:
    from datanets.tasks import contribution_ingest_task

    cid = contribution.id
    transaction.on_commit(lambda: contribution_ingest_task.apply_async(args=[cid], queue="cpu"))


@transaction.atomic
def contribution_start(*, contribution: Contribution, user, text_column: str = "", label_column: str = "",
                       text_mode: str = "line", drop_bad_rows: bool = False) -> Contribution:
    """The mapping step: set the columns (and options) of a contribution waiting for them and queue it."""
    contribution = Contribution.objects.select_for_update().select_related("datanet").get(pk=contribution.pk)
    if contribution.contributor_id != user.pk and not user.is_superuser:
        raise ApplicationError("This is not your contribution.", status_code=403)
    if contribution.ingest_state != Contribution.IngestState.MAPPING:
        raise ApplicationError(ERR_NOT_MAPPING.format(id=contribution.id, state=contribution.get_ingest_state_display()))
    if text_mode not in readers.TEXT_MODES:
        raise ApplicationError(f"Text mode must be one of {', '.join(readers.TEXT_MODES)}.")
    opts = contribution.options
    columns = opts.get("columns", [])
    if contribution.format != "text":
        if not text_column:
            raise ApplicationError(ERR_NEED_TEXT_COLUMN)
        if contribution.datanet.task == Datanet.Task.CLASSIFICATION and not label_column:
            raise ApplicationError(ERR_NEED_LABEL_COLUMN)
        for column in (text_column, label_column):
            if column and column not in columns:
                raise ApplicationError(readers.ERR_COLUMN_MISSING.format(column=column, columns=", ".join(columns)))
        if text_column == label_column:
            raise ApplicationError("Text and label must be different columns.")
    opts.update(text_column=text_column, label_column=label_column if contribution.datanet.task != Datanet.Task.GENERATION else "",
                text_mode=text_mode, drop_bad_rows=bool(drop_bad_rows))
    contribution.options = opts
    contribution.ingest_state = Contribution.IngestState.QUEUED
    contribution.save(update_fields=["options", "ingest_state", "updated_at"])
    _queue_ingest(contribution)
    return contribution


ERR_NOT_RETRYABLE = "Contribution {id} is {state}; only a failed ingest can be retried."
ERR_NOTHING_TO_KEEP = "No row of this file is valid; dropping the bad rows would leave nothing."


@transaction.atomic
def contribution_retry(*, contribution: Contribution, user, drop_bad_rows: bool = True) -> Contribution:
    """Queue a failed ingest again from the stored file, typically choosing to drop the bad rows.

    Raises ApplicationError (403) for someone else's contribution, (400) unless the ingest failed.
    """
    contribution = Contribution.objects.select_for_update().get(pk=contribution.pk)
    if contribution.contributor_id != user.pk and not user.is_superuser:
        raise ApplicationError("This is not your contribution.", status_code=403)
    if contribution.ingest_state != Contribution.IngestState.FAILED:
        raise ApplicationError(ERR_NOT_RETRYABLE.format(id=contribution.id,
                                                        state=contribution.get_ingest_state_display().lower()))
    if drop_bad_rows and contribution.rows_total and contribution.rows_bad >= contribution.rows_total:
        raise ApplicationError(ERR_NOTHING_TO_KEEP)
    contribution.options = {**contribution.options, "drop_bad_rows": bool(drop_bad_rows)}
    contribution.ingest_state = Contribution.IngestState.QUEUED
    contribution.ingest_progress = 0.0
    contribution.save(update_fields=["options", "ingest_state", "ingest_progress", "updated_at"])
    _queue_ingest(contribution)
    return contribution


# --- ingest -------------------------------------------------------------------------------------------

@dataclass
class _Stats:
    total: int = 0
    bad: int = 0
    errors: list = field(default_factory=list)


_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


class _Staging:
    """A temporary table on this connection holding validated, hashed rows of one ingest."""

    COLUMNS = ("row_number", "text", "label", "sha256", "text_sha256", "minhash")

    def __init__(self):
        self.name = f"mf_ingest_{uuid.uuid4().hex[:12]}"
        self.postgres = connection.vendor == "postgresql"
        self.temp_store: int | None = None  # SQLite: the connection's setting, restored by drop()

    def create(self) -> None:
        # Hex hashes compare bytewise: the "C" collation of Record's hash columns (migration 0005) here too.
        hex64 = 'varchar(64) COLLATE "C"' if self.postgres else "char(64)"
        with connection.cursor() as cur:
            if not self.postgres:
                # The embedded default keeps temporary tables in memory (settings: temp_store=MEMORY), which
                # held the whole staged file: 1.4 GB of RSS at 1M rows. An ingest's go to a temporary file
                # (changing temp_store drops this connection's temporary tables; drop() sets it back).
                cur.execute("PRAGMA temp_store")
                current = cur.fetchone()[0]
                try:
                    cur.execute("PRAGMA temp_store = FILE")
                    self.temp_store = current
                except DatabaseError:  # not inside a transaction (a test's): staged in memory then
                    logger.info("ingest staging stays in memory: temp_store cannot change in a transaction")
            cur.execute(f"CREATE TEMPORARY TABLE {self.name} (row_number integer NOT NULL, text text NOT NULL, "
                        f"label varchar(120) NOT NULL, sha256 {hex64} NOT NULL, text_sha256 {hex64} NOT NULL, "
                        f"minhash {'bytea' if self.postgres else 'blob'} NOT NULL)")

    def write(self, rows: list[tuple]) -> None:
        if not rows:
            return
        with connection.cursor() as cur:
            if self.postgres:
                # COPY text format: backslash, tab, newline and CR escaped; a NUL never gets here. bytea
                # as hex, its backslash doubled.
                buf = "".join(
                    f"{n}\t{t.translate(_COPY_ESCAPES) if _needs_escape(t) else t}\t{lab.translate(_COPY_ESCAPES)}\t{h}\t{th}"
                    f"\t\\\\x{mh.hex()}\n"
                    for n, t, lab, h, th, mh in rows)
                with cur.cursor.copy(f"COPY {self.name} ({', '.join(self.COLUMNS)}) FROM STDIN") as copy:
                    copy.write(buf)
            else:
                cur.executemany(f"INSERT INTO {self.name} ({', '.join(self.COLUMNS)}) VALUES (%s, %s, %s, %s, %s, %s)", rows)  # noqa: S608 - generated name

    def drop(self) -> None:
        try:
            with connection.cursor() as cur:
                cur.execute(f"DROP TABLE IF EXISTS {self.name}")
                if not self.postgres and self.temp_store is not None:
                    cur.execute(f"PRAGMA temp_store = {int(self.temp_store)}")
        except Exception:  # the connection may be broken; a temp table dies with it anyway
            logger.warning("could not drop staging table %s", self.name, exc_info=True)


def _needs_escape(text: str) -> bool:
    return "\\" in text or "\t" in text or "\n" in text or "\r" in text


def _progress(contribution_id: int, value: float) -> None:
    Contribution.objects.filter(pk=contribution_id).update(ingest_progress=round(min(value, 1.0), 4))


def contribution_ingest_fail(*, contribution_id: int, reason: str) -> None:
    """The task base's failure hook (a crash, the time limit): an unfinished ingest fails with the reason;
    its staged rows were dropped, so nothing half-stored stays."""
    Contribution.objects.filter(
        pk=contribution_id, ingest_state__in=(Contribution.IngestState.QUEUED, Contribution.IngestState.RUNNING),
    ).update(ingest_state=Contribution.IngestState.FAILED, ingest_errors=[{"row": None, "error": reason}],
             updated_at=timezone.now())


def _fail(contribution: Contribution, errors: list[dict], stats: _Stats | None = None) -> Contribution:
    Contribution.objects.filter(pk=contribution.pk).update(
        ingest_state=Contribution.IngestState.FAILED, ingest_errors=errors[:ERRORS_KEPT],
        rows_total=stats.total if stats else 0, rows_bad=stats.bad if stats else 0, updated_at=timezone.now())
    contribution.refresh_from_db()
    return contribution


def _stage(contribution: Contribution, staging: _Staging) -> _Stats:
    """Phase 1: stream, validate, hash and stage every row. Raises ReadError for a file-level problem."""
    datanet = contribution.datanet
    opts = contribution.options
    classification = datanet.task == Datanet.Task.CLASSIFICATION
    is_chat = datanet.task == Datanet.Task.CHAT
    allowed = frozenset(datanet.labels)
    max_len = datanet.max_text_length
    limit = settings.DATANET_DECOMPRESSED_MAX_BYTES
    batch_rows = settings.DATANET_INGEST_BATCH_ROWS
    path = contribution.file.path
    size = max(1, Path(path).stat().st_size)
    raw, fmt, _ = readers.open_payload(path, contribution.file_name, max_decompressed=limit)
    if fmt != "parquet" and not contribution.encoding:
        with raw:
            contribution.encoding = readers.detect_encoding(raw)
        raw, fmt, _ = readers.open_payload(path, contribution.file_name, max_decompressed=limit)
    stats = _Stats()
    batch: list[tuple] = []
    canonical, rec_hash, txt_hash = readers.canonical_text, readers.record_sha256, readers.text_sha256

    def flush(batch: list[tuple]) -> None:  # + the MinHash signature of each row, computed per batch
        if batch:
            sigs = neardup.signatures([row[1] for row in batch]).tobytes()
            size = neardup.SIGNATURE_BYTES
            staging.write([(*row, sigs[i * size:(i + 1) * size]) for i, row in enumerate(batch)])
    compressed_pos = _position_reader(raw, path)
    with raw:
        for row in readers.iter_rows(raw, fmt, contribution.encoding, text_column=opts.get("text_column", ""),
                                     label_column=opts.get("label_column", ""), text_mode=opts.get("text_mode", "line"),
                                     max_decompressed=limit):
            stats.total += 1
            error = row.error
            if not error and is_chat:  # validated turn by turn, stored as canonical JSON, no label
                try:
                    turns = _row_conversation(row.text, row.label if opts.get("label_column") else None,
                                              max_length=max_len)
                except chat.ChatError as exc:
                    error = str(exc)
                else:
                    text, label = chat.conversation_text(turns), ""
            elif not error:
                text = canonical(row.text)
                label = row.label.strip() if classification else ""
                if not text:
                    error = "empty text"
                elif len(text) > max_len:
                    error = f"text is {len(text)} characters; the limit is {max_len}"
                elif "\x00" in text:
                    error = "text holds a NUL character"
                elif classification and not label:
                    error = "no label"
                elif classification and label not in allowed:
                    error = f"unknown label '{label[:60]}' (allowed: {', '.join(datanet.labels)})"
            if error:
                stats.bad += 1
                if len(stats.errors) < ERRORS_KEPT:
                    stats.errors.append({"row": row.number, "error": error})
                continue
            batch.append((row.number, text, label, rec_hash(text, label), txt_hash(text)))
            if len(batch) >= batch_rows:
                flush(batch)
                batch = []
                _progress(contribution.pk, 0.85 * compressed_pos() / size)
        flush(batch)
    return stats


def _position_reader(raw, path):
    """A callable giving how far through the stored (possibly compressed) file the reader is."""
    inner = getattr(raw, "raw", None)
    if isinstance(inner, readers.LimitedReader):
        src = inner.raw
        fileobj = getattr(src, "fileobj", None) or getattr(src, "_fileobj", None)
        return (lambda: fileobj.tell()) if fileobj is not None and hasattr(fileobj, "tell") else (lambda: 0)
    return lambda: raw.tell() if not raw.closed else 0


def contribution_ingest(*, contribution_id: int) -> Contribution:
    """Ingest a queued contribution's file into Records; safe to run again (a finished one is left alone).

    All or nothing: rows that fail validation fail the whole file unless the contributor chose
    `drop_bad_rows`. Duplicates (same canonical text and label) within the file and against the Datanet's
    live records are dropped and counted; the same text with another label is kept and flagged.
    """
    contribution = Contribution.objects.select_related("datanet").get(pk=contribution_id)
    if contribution.ingest_state == Contribution.IngestState.DONE:
        return contribution
    if contribution.ingest_state == Contribution.IngestState.MAPPING:
        raise ApplicationError("Choose the columns before ingesting.")
    Contribution.objects.filter(pk=contribution.pk).update(
        ingest_state=Contribution.IngestState.RUNNING, ingest_progress=0.0, ingest_errors=[])
    staging = _Staging()
    try:
        staging.create()
        try:
            stats = _stage(contribution, staging)
        except ReadError as exc:
            return _fail(contribution, [{"row": None, "error": str(exc)}])
        if stats.bad and not contribution.options.get("drop_bad_rows"):
            return _fail(contribution, [{"row": None, "error": ERR_ROWS_INVALID.format(bad=stats.bad, total=stats.total)},
                                        *stats.errors], stats)
        if stats.total - stats.bad == 0:
            return _fail(contribution, [{"row": None, "error": ERR_NO_VALID_ROWS}, *stats.errors], stats)
        _progress(contribution.pk, 0.9)
        with transaction.atomic():
            _commit_records(contribution, staging, stats)
    finally:
        staging.drop()
    contribution.refresh_from_db()
    return contribution


# Staged rows clustered at a time in phase 2: bounds the signatures, texts and shingle ids held in memory
# whatever the file's size (the clusters do not depend on it: chunks go in id order, each against the roots
# before it). The peak is numpy's temporaries numbering the shingles of a chunk and its hot roots
# (neardup.shingle_ids, ~3 KB a text): 20,000 took a 1M-row ingest to 345 MB of peak RSS, 10,000 keeps it
# under 300 MB (benchmarks/results/ingest_1m.md). Smaller chunks cost CPU: each chunk shingles its hot
# roots again.
NEAR_DUP_CHUNK = 10_000
# Texts of the roots found in this ingest kept between chunks (a later chunk's candidates), up to this many
# characters; past it they are read back from the staging table.
ROOT_TEXT_CACHE_CHARS = 8_000_000


def _commit_records(contribution: Contribution, staging: _Staging, stats: _Stats) -> None:
    """Phase 2 (inside a transaction): staged rows -> Records, counts, conflicts, the stake.

    Set-based and one pass over the new rows: their ids are drawn from the sequence and their
    near-duplicate clusters found *before* the insert, from the signatures staged in phase 1, so one
    INSERT writes each record once, clusters included (an UPDATE afterwards rewrote most rows and every
    index entry of them: a third of phase 2, benchmarks/results/ingest.md)."""
    c = Contribution.objects.select_for_update().select_related("datanet").get(pk=contribution.pk)
    # One phase 2 at a time per Datanet: the duplicate check and the near-duplicate clusters then see
    # every earlier ingest's records, and record ids grow in ingest order (what "earlier" means).
    datanet = Datanet.objects.select_for_update().get(pk=c.datanet_id)
    s = staging.name
    live = "c.status <> 'rejected' AND c.ingest_state = 'done'"
    postgres = connection.vendor == "postgresql"
    with connection.cursor() as cur:
        if postgres:
            cur.execute(f"ANALYZE {s}")  # PostgreSQL's plan (sorts and hashes) uses no index on it
        else:
            cur.execute(f"CREATE INDEX {s}_sha ON {s} (sha256)")
        # The rows to store: the first of equal rows in the file, unless the Datanet holds it live.
        new_rows = (f"SELECT s.row_number, s.minhash, s.text FROM {s} s "  # noqa: S608 - generated table name
                    f"WHERE s.row_number IN (SELECT MIN(row_number) FROM {s} GROUP BY sha256) "
                    f"AND NOT EXISTS (SELECT 1 FROM datanets_record r JOIN datanets_contribution c ON c.id = r.contribution_id "
                    f"WHERE r.datanet_id = %s AND r.sha256 = s.sha256 AND {live}) ORDER BY s.row_number")
        keep = f"{s}_keep"
        if stats.total - stats.bad > NEAR_DUP_CHUNK:  # clustered in chunks: later ones look up earlier roots
            cur.execute(f"CREATE INDEX {s}_row ON {s} (row_number)")
        cur.execute(f"CREATE TEMPORARY TABLE {keep} (row_number integer NOT NULL, id bigint NOT NULL, root bigint, "
                    f"sim double precision)")
        _new_records_cluster(datanet=datanet, staging=s, keep=keep, select=new_rows)
        # In the join's order, unsorted: sorting by sha256 (so that index grows in order) cost more than
        # it saved, 51.0 against 46.0 s of backend CPU for 1M rows with every index (and 8.7 against 7.8 at
        # 200,000; docs/datanets.md, Performance).
        cur.execute(
            f"INSERT INTO datanets_record (id, datanet_id, contribution_id, contributor_id, text, label, sha256, "  # noqa: S608 - generated table name; values are parameters
            f"text_sha256, row_number, is_conflict, minhash, near_dup_of_id, near_dup_similarity) "
            f"SELECT k.id, %s, %s, %s, s.text, s.label, s.sha256, s.text_sha256, s.row_number, %s, s.minhash, k.root, k.sim "
            f"FROM {keep} k JOIN {s} s ON s.row_number = k.row_number",
            [datanet.id, c.id, c.contributor_id, False])
        inserted = cur.rowcount
        conflicts = 0
        if datanet.task == Datanet.Task.CLASSIFICATION:
            # Texts with more than one label among the staged rows and the Datanet's live records. Computed
            # into Python (the set is small) so the plan never depends on statistics of fresh rows.
            cur.execute(
                f"SELECT u.text_sha256 FROM (SELECT DISTINCT text_sha256, label FROM {s} UNION "  # noqa: S608 - generated table name; values are parameters
                f"SELECT r.text_sha256, r.label FROM datanets_record r JOIN datanets_contribution c ON c.id = r.contribution_id "
                f"WHERE r.datanet_id = %s AND {live} AND r.text_sha256 IN (SELECT text_sha256 FROM {s})) u "
                f"GROUP BY u.text_sha256 HAVING COUNT(*) > 1", [datanet.id])
            texts = [row[0] for row in cur.fetchall()]
            for i in range(0, len(texts), 1000):
                Record.objects.filter(datanet=datanet, text_sha256__in=texts[i:i + 1000]).update(is_conflict=True)
            if texts:
                conflicts = Record.objects.filter(contribution=c, is_conflict=True).count()
        # Per-label counts of what was stored, for the Datanet page (summed there, never re-grouped).
        cur.execute(f"SELECT s.label, COUNT(*) FROM {keep} k JOIN {s} s ON s.row_number = k.row_number "  # noqa: S608 - generated table name
                    f"GROUP BY s.label")
        c.label_counts = {label: n for label, n in cur.fetchall()}
        cur.execute(f"DROP TABLE {keep}")
    c.record_count = inserted
    c.duplicates_dropped = stats.total - stats.bad - inserted
    c.conflicts = conflicts
    c.rows_total, c.rows_bad = stats.total, stats.bad
    c.ingest_errors = stats.errors
    c.ingest_state = Contribution.IngestState.DONE
    c.ingest_progress = 1.0
    if c.is_evaluation:  # curator-held evaluation data: nothing is paid for it, so nothing is staked
        c.stake = Decimal(0)
        c.save()
        return
    terms = datanet_terms_get(datanet_id=datanet.pk)  # OPEN holders may have changed it on-chain since creation
    c.stake = terms["min_stake"] if terms else datanet.min_stake
    c.save()
    enqueue("contribution_stake", {
        "contribution_id": c.id, "datanet_id": datanet.id, "contributor_id": c.contributor_id,
        "content_hash": "0x" + c.file_sha256, "stake": decimal_str(c.stake),
    }, f"contribution_stake:{c.id}")


def _record_ids_draw(n: int, after: int) -> np.ndarray:
    """n new ids for datanets_record, ascending and above `after` (the last drawn), from its sequence.
    SQLite: past the largest id used (AUTOINCREMENT's counter included); the writer lock this transaction
    holds keeps them ours, and the insert moves the counter past them."""
    with connection.cursor() as cur:
        if connection.vendor == "postgresql":
            # Nearly always one contiguous run (no other ingest drew in between): two numbers come back,
            # not n rows; the list only when another session's draws interleaved.
            cur.execute("WITH drawn AS (SELECT nextval(pg_get_serial_sequence('datanets_record', 'id')) AS v "
                        "FROM generate_series(1, %s)) SELECT min(v), max(v), CASE WHEN max(v) - min(v) + 1 = count(*) "
                        "THEN NULL ELSE array_agg(v ORDER BY v) END FROM drawn", [n])
            low, high, values = cur.fetchone()
            if values is None:
                return np.arange(low, high + 1, dtype=np.int64)
            return np.asarray(values, dtype=np.int64)
        cur.execute("SELECT MAX(m) FROM (SELECT MAX(id) AS m FROM datanets_record UNION ALL "
                    "SELECT seq FROM sqlite_sequence WHERE name = 'datanets_record')")
        first = max(cur.fetchone()[0] or 0, after) + 1
    return np.arange(first, first + n, dtype=np.int64)


def _new_records_cluster(*, datanet: Datanet, staging: str, keep: str, select: str) -> None:
    """Give each new staged row (from `select`, in file order) an id and its near-duplicate cluster
    (datanets/neardup.py) against the Datanet's roots, any contributor's, and the rows before it; write
    (row_number, id, root, similarity) into the `keep` table. In chunks of NEAR_DUP_CHUNK rows."""
    roots = list(Record.objects.filter(datanet=datanet, near_dup_of__isnull=True, minhash__isnull=False)
                 .order_by("id").values_list("id", "minhash"))
    root_ids = np.asarray([r[0] for r in roots], dtype=np.int64)
    root_sigs = neardup.from_bytes([r[1] for r in roots])
    del roots
    new_root_rows: dict[int, int] = {}  # id -> staged row number, for the roots found in earlier chunks
    root_text: dict[int, str] = {}  # id -> text of such roots, while ROOT_TEXT_CACHE_CHARS allows
    root_chars = 0
    last_id = 0
    postgres = connection.vendor == "postgresql"
    raw = connection.connection
    reader = raw.cursor(name=f"{staging}_new") if postgres else raw.cursor()
    with connection.cursor() as cur:
        try:
            reader.execute(select.replace("%s", "%s" if postgres else "?"), [datanet.id])
            while chunk := reader.fetchmany(NEAR_DUP_CHUNK):
                rows = np.fromiter((r[0] for r in chunk), dtype=np.int64, count=len(chunk))
                sigs = np.frombuffer(b"".join(bytes(r[1]) for r in chunk), dtype=neardup.SIGNATURE_DTYPE)
                sigs = sigs.reshape(-1, neardup.NUM_PERM)
                ids = _record_ids_draw(len(chunk), after=last_id)
                last_id = int(ids[-1])
                chunk_text = {int(i): r[2] for i, r in zip(ids, chunk, strict=True)}
                del chunk

                def texts(wanted: list[int], chunk_text=chunk_text) -> dict[int, str]:
                    out = {i: t for i in wanted if (t := chunk_text.get(i) or root_text.get(i)) is not None}
                    # Roots of earlier chunks: from the staging table (by its row-number index).
                    staged = {new_root_rows[i]: i for i in wanted if i not in out and i in new_root_rows}
                    keys = list(staged)
                    for j in range(0, len(keys), 10_000):
                        part = keys[j:j + 10_000]
                        cur.execute(f"SELECT row_number, text FROM {staging} WHERE row_number IN "  # noqa: S608 - generated name
                                    f"({', '.join(['%s'] * len(part))})", part)
                        out.update({staged[r]: t for r, t in cur.fetchall()})
                    out.update(_record_texts([i for i in wanted if i not in out]))
                    return out

                matches = neardup.cluster_assign(new_ids=ids, new_sigs=sigs, root_ids=root_ids, root_sigs=root_sigs,
                                                 texts=texts, threshold=datanet.near_duplicate_threshold)
                is_root = np.fromiter((int(i) not in matches for i in ids), dtype=bool, count=len(ids))
                root_ids = np.concatenate((root_ids, ids[is_root]))
                root_sigs = np.concatenate((root_sigs, sigs[is_root]))
                new_root_rows.update(zip(ids[is_root].tolist(), rows[is_root].tolist(), strict=True))
                for i in ids[is_root].tolist():
                    if root_chars >= ROOT_TEXT_CACHE_CHARS:
                        break
                    root_text[i] = chunk_text[i]
                    root_chars += len(chunk_text[i])
                out = [(int(r), int(i), *((m.root, round(m.similarity, 6)) if (m := matches.get(int(i))) else (None, None)))
                       for r, i in zip(rows, ids, strict=True)]
                _keep_write(cur, keep, out)
                del chunk_text, out, sigs
        finally:
            reader.close()
        if postgres:
            cur.execute(f"ANALYZE {keep}")  # for the insert's join plan


_NULL = "\\N"  # NULL in COPY's text format


def _keep_write(cur, keep: str, rows: list[tuple]) -> None:
    if connection.vendor == "postgresql":
        with cur.cursor.copy(f"COPY {keep} (row_number, id, root, sim) FROM STDIN") as copy:
            copy.write("".join(f"{r}\t{i}\t{_NULL if root is None else root}\t{_NULL if sim is None else repr(sim)}\n"
                               for r, i, root, sim in rows))
    else:
        cur.executemany(f"INSERT INTO {keep} (row_number, id, root, sim) VALUES (%s, %s, %s, %s)", rows)  # noqa: S608 - generated name


def _near_duplicates_write(matches: dict[int, neardup.Match]) -> None:
    """Store the clusters found; on PostgreSQL one COPY and one UPDATE (a file of copies has many)."""
    if not matches:
        return
    rows = [(rid, m.root, round(m.similarity, 6)) for rid, m in matches.items()]
    with connection.cursor() as cur:
        if connection.vendor != "postgresql":
            cur.executemany("UPDATE datanets_record SET near_dup_of_id = %s, near_dup_similarity = %s WHERE id = %s",
                            [(root, sim, rid) for rid, root, sim in rows])
            return
        name = f"mf_neardup_{uuid.uuid4().hex[:12]}"
        cur.execute(f"CREATE TEMPORARY TABLE {name} (id bigint PRIMARY KEY, root bigint, sim double precision) ON COMMIT DROP")
        with cur.cursor.copy(f"COPY {name} (id, root, sim) FROM STDIN") as copy:
            copy.write("".join(f"{rid}\t{root}\t{sim!r}\n" for rid, root, sim in rows))
        cur.execute(f"UPDATE datanets_record r SET near_dup_of_id = t.root, near_dup_similarity = t.sim "  # noqa: S608 - generated name
                    f"FROM {name} t WHERE r.id = t.id")


def _record_texts(ids: list[int]) -> dict[int, str]:
    out: dict[int, str] = {}
    for i in range(0, len(ids), 10_000):
        out.update(Record.objects.filter(id__in=ids[i:i + 10_000]).values_list("id", "text"))
    return out


def datanet_near_duplicates_rebuild(*, datanet: Datanet) -> int:
    """Recompute every record's signature and cluster in id (ingest) order, e.g. after the threshold
    changed or for records ingested before clusters existed. Same result as ingesting them in order.
    Returns how many records are in a cluster other than their own."""
    with transaction.atomic():
        datanet = Datanet.objects.select_for_update().get(pk=datanet.pk)
        rows = Record.objects.filter(datanet=datanet).order_by("id").values_list("id", "text")
        ids, sigs = [], []
        batch: list[tuple[int, str]] = []
        for row in rows.iterator(chunk_size=10_000):
            batch.append(row)
            if len(batch) >= 10_000:
                ids.extend(r[0] for r in batch)
                sigs.append(neardup.signatures([r[1] for r in batch]))
                batch = []
        ids.extend(r[0] for r in batch)
        sigs.append(neardup.signatures([r[1] for r in batch]))
        all_sigs = np.vstack(sigs)
        Record.objects.filter(datanet=datanet).update(near_dup_of=None, near_dup_similarity=None)
        with connection.cursor() as cur:
            size = neardup.SIGNATURE_BYTES
            blob = all_sigs.tobytes()
            cur.executemany("UPDATE datanets_record SET minhash = %s WHERE id = %s",
                            [(blob[i * size:(i + 1) * size], rid) for i, rid in enumerate(ids)])
            matches = neardup.cluster_assign(new_ids=ids, new_sigs=all_sigs, root_ids=[],
                                             root_sigs=neardup.from_bytes([]), texts=_record_texts,
                                             threshold=datanet.near_duplicate_threshold)
        _near_duplicates_write(matches)
    return len(matches)


# --- curation -----------------------------------------------------------------------------------------

def _decide(*, contribution: Contribution, curator, decision: str, reason: str) -> Contribution:
    c = Contribution.objects.select_for_update().select_related("datanet").get(pk=contribution.pk)
    # The own-contribution rule guards a stake and a payout; curator-held evaluation data has neither, and
    # its uploader is already a curator, so they may decide it.
    if c.contributor_id == curator.pk and not c.is_evaluation:
        raise ApplicationError(ERR_OWN_CONTRIBUTION, status_code=403)
    if not user_can_curate(user=curator, datanet=c.datanet):
        raise ApplicationError(ERR_NOT_CURATOR.format(datanet=c.datanet.name), status_code=403)
    # 409: the request is well formed, the contribution's state does not allow it (now)
    if c.status != Contribution.Status.PENDING:
        raise ApplicationError(ERR_ALREADY_DECIDED.format(id=c.id, status=c.get_status_display().lower()),
                               status_code=409)
    if c.ingest_state != Contribution.IngestState.DONE:
        raise ApplicationError(ERR_NOT_INGESTED.format(id=c.id, state=c.get_ingest_state_display().lower()),
                               status_code=409)
    c.status = decision
    c.curator = curator
    c.reason = reason
    c.decided_at = timezone.now()
    c.save(update_fields=["status", "curator", "reason", "decided_at", "updated_at"])
    CurationDecision.objects.create(contribution=c, curator=curator, decision=decision, reason=reason)
    return c


def _decider_id(c: Contribution) -> int:
    """Whose custodial key signs the on-chain decision: the deciding curator, else the Datanet's owner."""
    return c.curator_id or c.datanet.owner_id


@transaction.atomic
def contribution_accept(*, contribution: Contribution, curator, reason: str = "") -> Contribution:
    """Accept: the records join the Datanet; the stake is bonded for LEDGER_STAKE_BOND_SECONDS (slashable for
    harm found later, released after: datanets/harm.py), then released (outbox)."""
    c = _decide(contribution=contribution, curator=curator, decision=Contribution.Status.ACCEPTED, reason=reason)
    if c.is_evaluation:  # no stake on-chain to bond or decide (the version's root covers its records)
        return c
    if settings.LEDGER_STAKE_BOND_SECONDS > 0:  # the chain's bond starts when the accept is mined (a bit later)
        c.bond, c.bonded_until = Contribution.Bond.BONDED, c.decided_at + timedelta(seconds=settings.LEDGER_STAKE_BOND_SECONDS)
        c.save(update_fields=["bond", "bonded_until"])
    enqueue("contribution_accept", {"contribution_id": c.id, "datanet_id": c.datanet_id,
                                    "content_hash": "0x" + c.file_sha256, "decider_id": _decider_id(c)},
            f"contribution_accept:{c.id}")
    return c


@transaction.atomic
def contribution_reject(*, contribution: Contribution, curator, reason: str) -> Contribution:
    """Reject: the Datanet's slash fraction of the stake is slashed (outbox). A reason is required."""
    reason = (reason or "").strip()
    if not reason:
        raise ApplicationError(ERR_REASON_REQUIRED)
    c = _decide(contribution=contribution, curator=curator, decision=Contribution.Status.REJECTED, reason=reason)
    if c.is_evaluation:  # no stake to slash
        return c
    enqueue("contribution_reject", {"contribution_id": c.id, "datanet_id": c.datanet_id,
                                    "content_hash": "0x" + c.file_sha256,
                                    "slash_fraction": decimal_str(c.datanet.slash_fraction), "reason": reason,
                                    "decider_id": _decider_id(c)},
            f"contribution_reject:{c.id}")
    return c


ERR_NOTHING_TO_RETRY = "This contribution has no failed chain write to retry."


def contribution_chain_retry(*, contribution: Contribution, user) -> None:
    """Send a contribution's failed stake/accept/reject again (after its cause is fixed, e.g. a usable wallet
    or a funded stake); only its contributor or a curator of its Datanet may."""
    if contribution.contributor_id != user.pk and not user_can_curate(user=user, datanet=contribution.datanet):
        raise ApplicationError(ERR_NOT_CURATOR.format(datanet=contribution.datanet.name), status_code=403)
    failed = contribution_chain_state(contribution=contribution)["failed"]
    if failed is None:
        raise ApplicationError(ERR_NOTHING_TO_RETRY)
    ledger_transaction_retry(row=transaction_get(idempotency_key=failed["key"]))


def contributions_decide(*, contributions, curator, decision: str, reason: str = "") -> tuple[list, list[str]]:
    """Bulk accept/reject; each in its own transaction. Returns (decided, error messages)."""
    done, errors = [], []
    for c in contributions:
        try:
            fn = contribution_accept if decision == Contribution.Status.ACCEPTED else contribution_reject
            done.append(fn(contribution=c, curator=curator, reason=reason))
        except ApplicationError as exc:
            errors.append(f"#{c.id} {c.file_name}: {exc.message}")
    return done, errors


@transaction.atomic
def contribution_withdraw(*, contribution: Contribution, user) -> None:
    """The contributor takes back a pending contribution that nothing on-chain holds: one waiting for its
    column mapping, one whose ingest failed, or curator-held evaluation data (no stake). Its records and
    stored file are deleted.

    Fails with 403 for anyone but its contributor, 409 once it is decided, while its ingest runs, once a
    stake has been sent (DatanetRegistry has no withdrawal: the curator decides), or when later uploads'
    near-duplicates point at its records.
    """
    c = Contribution.objects.select_for_update().get(pk=contribution.pk)
    if c.contributor_id != user.pk:
        raise ApplicationError(ERR_NOT_OWNER, status_code=403)
    if c.status != Contribution.Status.PENDING:
        raise ApplicationError(ERR_WITHDRAW_DECIDED.format(id=c.id, status=c.get_status_display().lower()),
                               status_code=409)
    if c.ingest_state in (Contribution.IngestState.QUEUED, Contribution.IngestState.RUNNING):
        raise ApplicationError(ERR_WITHDRAW_BUSY.format(id=c.id), status_code=409)
    if contribution_chain_state(contribution=c)["steps"]:
        raise ApplicationError(ERR_WITHDRAW_STAKED.format(id=c.id), status_code=409)
    own = Record.objects.filter(contribution=c)
    if Record.objects.filter(near_dup_of__in=own.values("pk")).exclude(contribution=c).exists():
        raise ApplicationError(ERR_WITHDRAW_CLUSTERED.format(id=c.id), status_code=409)
    file = c.file
    own.delete()
    c.delete()
    if file:
        # after the commit: a rolled-back withdrawal keeps its file
        transaction.on_commit(lambda: file.storage.delete(file.name))
    logger.info("contribution %s withdrawn by its contributor %s", contribution.pk, user.pk)


# --- versions -----------------------------------------------------------------------------------------

def version_leaves(*, version: DatanetVersion) -> list[bytes]:
    return [bytes.fromhex(h) for h in version.records.values_list("sha256", flat=True).iterator(chunk_size=10_000)]


def _export_dir(datanet: Datanet, number: int) -> Path:
    return Path(settings.MEDIA_ROOT) / "datanets" / datanet.slug / f"v{number}"


EXPORT_BATCH = 10_000


def _export(version: DatanetVersion, out: Path, progress=lambda fraction: None) -> None:
    """Write data.parquet and data.jsonl by streaming, then the Arrow dataset (save_to_disk) from the Parquet.
    `progress(fraction)` is called after each batch (the rows are 80 % of the work, the Arrow copy the rest)."""
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    # `evaluation`: curator-held evaluation records, in the root but never to be trained on (docs/datanets.md).
    schema = pa.schema([("text", pa.string()), ("label", pa.string()), ("record_id", pa.int64()),
                        ("contributor", pa.int64()), ("evaluation", pa.bool_())])
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    qs = version.records.order_by("id").values_list("text", "label", "id", "contributor_id", "contribution__is_evaluation")
    total, done = max(1, version.record_count), 0
    with pq.ParquetWriter(tmp / "data.parquet", schema) as pw, open(tmp / "data.jsonl", "w", encoding="utf-8") as jl:
        batch: list[tuple] = []
        for row in qs.iterator(chunk_size=EXPORT_BATCH):
            batch.append(row)
            jl.write(json.dumps({"text": row[0], "label": row[1], "record_id": row[2], "contributor": row[3],
                                 "evaluation": row[4]}, ensure_ascii=False) + "\n")
            if len(batch) >= EXPORT_BATCH:
                pw.write_table(pa.Table.from_pylist([dict(zip(schema.names, r, strict=True)) for r in batch], schema))
                done += len(batch)
                batch = []
                progress(0.8 * done / total)
        if batch:
            pw.write_table(pa.Table.from_pylist([dict(zip(schema.names, r, strict=True)) for r in batch], schema))
    progress(0.8)
    cache = tmp / "cache"
    datasets.disable_progress_bars()  # worker and command logs, not a terminal
    ds = datasets.Dataset.from_parquet(str(tmp / "data.parquet"), cache_dir=str(cache), keep_in_memory=False)
    ds.save_to_disk(str(tmp / "arrow"))
    del ds
    shutil.rmtree(cache, ignore_errors=True)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)


def datanet_version_create(*, datanet: Datanet, user) -> DatanetVersion:
    """Freeze the accepted records: Merkle root over their sha256s and an outbox registration, in one short
    transaction; the exports are written after commit by a `cpu` task (`datanet_version_export`)."""
    if not user_can_curate(user=user, datanet=datanet):
        raise ApplicationError(ERR_NOT_CURATOR.format(datanet=datanet.name), status_code=403)
    with transaction.atomic():
        Datanet.objects.select_for_update().get(pk=datanet.pk)
        accepted = Record.objects.filter(datanet=datanet, contribution__status=Contribution.Status.ACCEPTED)
        # One record per canonical hash (the first), should two accepted contributions share one.
        ids = list(accepted.values("sha256").annotate(first=Min("id")).values_list("first", flat=True))
        if not ids:
            raise ApplicationError(ERR_NO_ACCEPTED)
        number = (datanet.versions.aggregate(m=Max("number"))["m"] or 0) + 1
        records = Record.objects.filter(id__in=ids)
        leaves = [bytes.fromhex(h) for h in records.values_list("sha256", flat=True).iterator(chunk_size=10_000)]
        root = "0x" + merkle_root(leaves).hex()
        label_counts = dict(records.values_list("label").annotate(n=Count("id")).order_by())
        # Curator-held evaluation records are frozen with the rest (the root covers them) and counted apart.
        evaluation = records.filter(contribution__is_evaluation=True).count()
        version = DatanetVersion.objects.create(
            datanet=datanet, number=number, merkle_root=root, record_count=len(ids), evaluation_count=evaluation,
            contributor_count=records.filter(contribution__is_evaluation=False).values("contributor").distinct().count(),
            label_counts={k or "": v for k, v in label_counts.items()}, created_by=user)
        through = DatanetVersion.records.through
        for i in range(0, len(ids), 50_000):
            through.objects.bulk_create([through(datanetversion_id=version.id, record_id=r) for r in ids[i:i + 50_000]])
        enqueue("version_register", {"version_id": version.id, "datanet_id": datanet.id, "number": number,
                                     "merkle_root": root, "record_count": len(ids)}, f"version_register:{version.id}")
        from datanets.tasks import datanet_version_export_task

        transaction.on_commit(lambda: datanet_version_export_task.apply_async(args=[version.id], queue="cpu"))
    return version


def datanet_version_export(*, version_id: int) -> DatanetVersion | None:
    """Write a version's exports (Parquet, JSONL, Arrow), with progress on the row. Safe to run again: a
    done export is left alone, and a half-written one (a killed worker) is written again from the start
    (the files appear in their folder only when complete). No transaction is held while it writes."""
    version = DatanetVersion.objects.select_related("datanet").filter(pk=version_id).first()
    if version is None or version.export_state == DatanetVersion.ExportState.DONE:
        return version
    rows = DatanetVersion.objects.filter(pk=version_id)
    rows.update(export_state=DatanetVersion.ExportState.RUNNING, export_progress=0.0, export_error="")
    out = _export_dir(version.datanet, version.number)
    _export(version, out, progress=lambda fraction: rows.update(export_progress=round(fraction, 3)))
    rows.update(export_state=DatanetVersion.ExportState.DONE, export_progress=1.0, export_path=str(out))
    version.refresh_from_db()
    return version


def datanet_version_export_fail(*, version_id: int, reason: str) -> None:
    """The task base's failure hook: the version stays (its root and records are committed); its export
    says why it failed, and the page offers nothing to download."""
    DatanetVersion.objects.filter(pk=version_id).exclude(export_state=DatanetVersion.ExportState.DONE).update(
        export_state=DatanetVersion.ExportState.FAILED, export_error=reason)


@dataclass
class RecordProof:
    record_id: int
    leaf: str
    proof: list[str]
    root: str
    verified: bool


def version_record_proof(*, version: DatanetVersion, record_id: int) -> RecordProof:
    """Inclusion proof of one record in a version's Merkle tree (sorted-pair sha256)."""
    record = version.records.filter(pk=record_id).first()
    if record is None:
        raise ApplicationError(f"Record {record_id} is not in {version}.", status_code=404)
    leaf = bytes.fromhex(record.sha256)
    leaves = version_leaves(version=version)
    proof = merkle_proof(leaves, leaf)
    root = bytes.fromhex(version.merkle_root[2:])
    return RecordProof(record_id, "0x" + leaf.hex(), ["0x" + p.hex() for p in proof], version.merkle_root,
                       merkle_verify(leaf, proof, root))


@dataclass
class VersionCheck:
    stored_root: str
    db_root: str
    export_root: str
    bad_hashes: list[int]
    export_rows: int

    @property
    def ok(self) -> bool:
        return not self.bad_hashes and self.stored_root == self.db_root == self.export_root


def version_verify(*, version: DatanetVersion) -> VersionCheck:
    """Recompute the root from the records' text and label (not their stored hashes), and from the export."""
    bad, leaves = [], []
    for rid, text, label, sha in version.records.values_list("id", "text", "label", "sha256").iterator(chunk_size=10_000):
        h = readers.record_sha256(text, label)
        if h != sha:
            bad.append(rid)
        leaves.append(bytes.fromhex(h))
    db_root = "0x" + merkle_root(leaves).hex() if leaves else ""
    export_root, export_rows = "", 0
    arrow = Path(version.export_path) / "arrow"
    if arrow.exists():
        import datasets

        ds = datasets.load_from_disk(str(arrow))
        export_rows = len(ds)
        ex = [bytes.fromhex(readers.record_sha256(r["text"], r["label"])) for r in ds.select_columns(["text", "label"])]
        export_root = "0x" + merkle_root(ex).hex() if ex else ""
    return VersionCheck(version.merkle_root, db_root, export_root, bad, export_rows)


def contribution_label_counts(*, contribution: Contribution) -> dict[str, int]:
    return dict(contribution.records.values_list("label").annotate(n=Count("id")).order_by("-n"))
