"""Batch inference: a CSV of inputs in, a CSV of outputs out, run as a background job (issue 15, item 4).

The upload is checked at once (a `text` column, at most SERVING_BATCH_MAX_ROWS rows and
SERVING_BATCH_MAX_BYTES bytes, the model able to serve) and kept; a `gpu`-queue task answers it in chunks of
SERVING_MAX_BATCH rows through this worker's engine. Each row is a paid Inference (channel `batch`), charged,
attributed and settled exactly as one call of `/infer` (`inference_create` / `inference_finish`); a row the
service refuses (empty, too long) or the model fails on is not charged and says why in the output. Rows
already answered are skipped when the task runs again (a killed worker), so nothing is charged twice.
Who may see a batch and its output: the user who uploaded it (and staff).
"""
from __future__ import annotations

import csv
import io
import json
import time
from decimal import Decimal
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.db.models import Sum
from django.utils import timezone

from core.errors import ApplicationError
from serving.models import BatchInference, Inference
from serving.services import (
    _serve_errors,
    inference_create,
    inference_fail,
    inference_finish,
    inference_request,
    model_serving_path,
    serving_engine,
)

TEXT_COLUMN = "text"
OUTPUT_COLUMNS = ("output", "probabilities", "inference_id", "error")
ERR_NOT_CSV = "The file is not a CSV in UTF-8: {why}."
ERR_NO_TEXT = "The CSV needs a header row with a `text` column (found: {found})."
ERR_NO_ROWS = "The CSV has no rows under its header."
ERR_TOO_MANY = "The CSV has {n} rows; a batch takes at most {limit}."
ERR_TOO_BIG = "The file is {n} bytes; a batch takes at most {limit}."
ERR_NOT_YOURS = "No batch with id {id}."
ERR_NOT_DONE = "Batch {id} is {status}; its output is ready when it is done."


def _batch_dir(batch_id: int) -> Path:
    return Path(settings.MEDIA_ROOT) / "batches" / str(batch_id)


def batch_csv_read(data: bytes) -> tuple[list[str], list[dict]]:
    """(header, rows) of an upload, or an ApplicationError that says what is wrong with it."""
    try:
        text = data.decode("utf-8-sig")
        reader = csv.DictReader(io.StringIO(text, newline=""))
        header = list(reader.fieldnames or [])
        rows = list(reader)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise ApplicationError(ERR_NOT_CSV.format(why=exc)) from exc
    if TEXT_COLUMN not in header:
        raise ApplicationError(ERR_NO_TEXT.format(found=", ".join(header[:10]) or "no header"))
    if not rows:
        raise ApplicationError(ERR_NO_ROWS)
    return header, rows


def batch_create(*, model, user, data: bytes, file_name: str, api_key=None) -> BatchInference:
    """Check and keep an upload, then queue its run on `gpu` after commit. 400 for a bad CSV, 413 over the
    limits, 409 when the model cannot serve (nothing is kept then)."""
    if len(data) > settings.SERVING_BATCH_MAX_BYTES:
        raise ApplicationError(ERR_TOO_BIG.format(n=len(data), limit=settings.SERVING_BATCH_MAX_BYTES),
                               status_code=413)
    _, rows = batch_csv_read(data)
    if len(rows) > settings.SERVING_BATCH_MAX_ROWS:
        raise ApplicationError(ERR_TOO_MANY.format(n=len(rows), limit=settings.SERVING_BATCH_MAX_ROWS),
                               status_code=413)
    model_serving_path(model=model)
    with transaction.atomic():
        batch = BatchInference.objects.create(model=model, user=user, api_key=api_key, rows=len(rows),
                                              file_name=Path(file_name or "input.csv").name[:255], input_path="")
        folder = _batch_dir(batch.pk)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "input.csv").write_bytes(data)
        BatchInference.objects.filter(pk=batch.pk).update(input_path=str(folder / "input.csv"))
        from serving.tasks import batch_inference_run_task

        transaction.on_commit(lambda: batch_inference_run_task.apply_async(args=[batch.pk], queue="gpu"))
    batch.refresh_from_db()
    return batch


def batch_get(*, batch_id, user) -> BatchInference:
    """The user's own batch (staff: any); another's is a 404, as if it did not exist."""
    try:
        batch = BatchInference.objects.select_related("model").get(pk=int(batch_id))
    except (BatchInference.DoesNotExist, TypeError, ValueError):
        raise ApplicationError(ERR_NOT_YOURS.format(id=batch_id), status_code=404) from None
    if batch.user_id != user.pk and not user.is_staff:
        raise ApplicationError(ERR_NOT_YOURS.format(id=batch_id), status_code=404)
    return batch


def batch_output_path(*, batch: BatchInference) -> Path:
    if batch.status != BatchInference.Status.DONE or not batch.output_path or not Path(batch.output_path).is_file():
        raise ApplicationError(ERR_NOT_DONE.format(id=batch.pk, status=batch.status), status_code=409)
    return Path(batch.output_path)


def _progress(batch_id: int) -> None:
    rows = Inference.objects.filter(batch_id=batch_id)
    BatchInference.objects.filter(pk=batch_id).update(
        done_rows=rows.filter(status=Inference.Status.DONE).count(),
        failed_rows=rows.filter(status=Inference.Status.FAILED).count())


def _answer_chunk(batch: BatchInference, chunk: list[tuple[int, str]], base_path: str) -> None:
    """Write the chunk's rows (refused ones failed at once), run the rest in one engine call, finish each."""
    pending: list[Inference] = []
    for number, text in chunk:
        try:
            row = inference_create(model=batch.model, user=batch.user, text=text, api_key=batch.api_key,
                                   channel=Inference.Channel.BATCH)
        except ApplicationError as exc:  # an empty or too long input: a failed row, not charged
            Inference.objects.create(model=batch.model, user=batch.user, api_key=batch.api_key,
                                     channel=Inference.Channel.BATCH, input_text=(text or "")[:10_000],
                                     status=Inference.Status.FAILED, error=exc.message, batch=batch,
                                     batch_row=number, finished_at=timezone.now())
            continue
        Inference.objects.filter(pk=row.pk).update(batch=batch, batch_row=number)
        row.batch_id, row.batch_row = batch.pk, number
        pending.append(row)
    if not pending:
        return
    started = time.perf_counter()
    try:
        results = serving_engine().infer([inference_request(inference=r, base_path=base_path) for r in pending])
    except _serve_errors() as exc:
        for r in pending:
            inference_fail(inference=r, error=exc)
        return
    seconds = (time.perf_counter() - started) / len(pending)
    for r, result in zip(pending, results, strict=True):
        inference_finish(inference=r, result=result, seconds=seconds)


def batch_run(*, batch_id: int) -> BatchInference | None:
    """The task's body: answer every row not yet answered, then write the output CSV. Safe to run again."""
    batch = BatchInference.objects.select_related("model", "model__base_model", "model__job", "user", "api_key") \
        .filter(pk=batch_id).first()
    if batch is None or batch.status in (BatchInference.Status.DONE, BatchInference.Status.FAILED):
        return batch
    BatchInference.objects.filter(pk=batch_id).update(status=BatchInference.Status.RUNNING,
                                                      started_at=batch.started_at or timezone.now())
    base_path = model_serving_path(model=batch.model)
    _, rows = batch_csv_read(Path(batch.input_path).read_bytes())
    seen = set(Inference.objects.filter(batch=batch).values_list("batch_row", flat=True))
    todo = [(i, row.get(TEXT_COLUMN) or "") for i, row in enumerate(rows) if i not in seen]
    size = max(1, settings.SERVING_MAX_BATCH)
    for start in range(0, len(todo), size):
        _answer_chunk(batch, todo[start:start + size], base_path)
        _progress(batch_id)
    out = _write_output(batch, rows)
    _progress(batch_id)
    fee = Inference.objects.filter(batch=batch, status=Inference.Status.DONE).aggregate(s=Sum("fee"))["s"]
    BatchInference.objects.filter(pk=batch_id).update(status=BatchInference.Status.DONE, output_path=str(out),
                                                      fee=fee or Decimal(0), finished_at=timezone.now())
    batch.refresh_from_db()
    return batch


def _write_output(batch: BatchInference, rows: list[dict]) -> Path:
    """The input's columns, then output (label or generated text), probabilities (JSON, classifiers),
    the row's inference id (its fee and attribution in the API) and the error of a row not answered."""
    header = list(rows[0].keys()) if rows else [TEXT_COLUMN]
    answers = {i.batch_row: i for i in Inference.objects.filter(batch=batch)}
    final = _batch_dir(batch.pk) / "output.csv"
    tmp = final.with_suffix(".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow([*header, *OUTPUT_COLUMNS])
        for n, row in enumerate(rows):
            inf = answers.get(n)
            out = (inf.output or {}) if inf else {}
            writer.writerow([*(row.get(h, "") for h in header),
                             out.get("label", out.get("text", "")),
                             json.dumps(out["probabilities"]) if "probabilities" in out else "",
                             inf.pk if inf else "", inf.error if inf else "not run"])
    tmp.replace(final)
    return final


def batch_fail(*, batch_id: int, reason: str) -> None:
    """The task base's failure hook: rows answered so far stay answered (and charged); the batch says why."""
    BatchInference.objects.filter(pk=batch_id).exclude(status=BatchInference.Status.DONE).update(
        status=BatchInference.Status.FAILED, error=reason, finished_at=timezone.now())
