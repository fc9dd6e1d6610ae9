"""Downloads of a fine-tuned model: the adapter (a zip of its folder, at once) and the merged model (base +
adapter folded in with PEFT `merge_and_unload`, safetensors + config + tokenizer, zipped), written by a
`cpu`-queue task on first request and kept (a model's adapter and base never change).

Who may download: any signed-in user, as for the adapter (models are public in the catalog; see
docs/factory.md, "Downloads"). The merge is requested by the first download; its state (queued, running with
progress, done, failed with the reason) is on the model row, as a version's export state is on the version.
"""
from __future__ import annotations

import logging
import re
from pathlib import Path

from django.conf import settings
from django.db import transaction

from core.errors import ApplicationError
from factory.models import FineTunedModel
from factory.services import base_model_check

logger = logging.getLogger(__name__)

State = FineTunedModel.MergedState
ERR_MERGE_FAILED = "The merged export failed: {error} Request it again (POST) to retry."
ERR_NO_BASE = "The base model of this model was removed from the catalog, so it cannot be merged."
ACTIVE = (State.QUEUED, State.RUNNING)


def merged_dir(*, model: FineTunedModel) -> Path:
    return Path(settings.MODELS_DIR) / "merged" / f"model-{model.pk}"


def merged_folder_name(*, model: FineTunedModel) -> str:
    """The zip's one top folder: `<slug>-merged` (file-name safe)."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", model.slug or f"model-{model.pk}").strip("-") or f"model-{model.pk}"
    return f"{stem}-merged"


def finetuned_model_merged_file(*, model: FineTunedModel) -> Path | None:
    """The merged zip when it is done and still on disk; None otherwise."""
    if model.merged_state == State.DONE and model.merged_path and Path(model.merged_path).is_file():
        return Path(model.merged_path)
    return None


def finetuned_model_merged_request(*, model: FineTunedModel, retry: bool = False) -> FineTunedModel:
    """Queue the merge unless it is done, queued or running: safe to call on every download attempt. A failed
    merge is queued again only with `retry` (a GET must not loop on a merge that fails every time); a done
    one whose file has gone is queued again."""
    if model.base_model_id is None:
        raise ApplicationError(ERR_NO_BASE, status_code=409)
    rows = FineTunedModel.objects.filter(pk=model.pk)
    if model.merged_state == State.DONE and finetuned_model_merged_file(model=model) is None:
        rows.filter(merged_state=State.DONE).update(merged_state=State.NONE, merged_path="", merged_bytes=0)
    startable = [State.NONE, State.FAILED] if retry else [State.NONE]
    with transaction.atomic():
        if rows.filter(merged_state__in=startable).update(merged_state=State.QUEUED, merged_progress=0.0,
                                                          merged_error=""):
            from factory.tasks import finetuned_model_merge_task

            transaction.on_commit(lambda: finetuned_model_merge_task.apply_async(args=[model.pk], queue="cpu"))
    model.refresh_from_db()
    return model


def finetuned_model_merge(*, model_id: int) -> FineTunedModel | None:
    """The task's body: merge and zip, with progress on the row. A done merge is left alone; a redelivered
    one (a killed worker) starts again from the beginning (the zip appears only when complete). No
    transaction is held while it works."""
    from factory.training.export import merged_model_write

    model = FineTunedModel.objects.select_related("base_model").filter(pk=model_id).first()
    if model is None or model.merged_state not in ACTIVE:
        return model
    rows = FineTunedModel.objects.filter(pk=model_id, merged_state__in=ACTIVE)
    rows.update(merged_state=State.RUNNING, merged_progress=0.0, merged_error="")
    if model.base_model is None:
        raise ApplicationError(ERR_NO_BASE)
    base_path = base_model_check(model.base_model)
    path = merged_model_write(
        base_path=base_path, adapter_dir=model.adapter_dir, out_dir=merged_dir(model=model),
        name=merged_folder_name(model=model), chat_template=model.base_model.chat_template,
        progress=lambda fraction: rows.update(merged_progress=round(fraction, 3)))
    rows.update(merged_state=State.DONE, merged_progress=1.0, merged_path=str(path), merged_bytes=path.stat().st_size)
    model.refresh_from_db()
    return model


def finetuned_model_merge_fail(*, model_id: int, reason: str) -> None:
    """The task base's failure hook: the merge says why; a later POST retries it."""
    FineTunedModel.objects.filter(pk=model_id).exclude(merged_state=State.DONE).update(
        merged_state=State.FAILED, merged_error=reason)
