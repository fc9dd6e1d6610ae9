"""Reads for Proof of Attribution: index status, contributor weights, the per-model summary lists."""
from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

from django.contrib.auth import get_user_model

from attribution.models import AttributionIndex, ModelContributorWeight
from datanets.models import Record

SUMMARY_FILE = "summary.json"  # beside the index: its most influential and self-influential records (services writes it)


def attribution_index_get(*, model) -> AttributionIndex | None:
    return AttributionIndex.objects.filter(model=model, method=AttributionIndex.Method.GRADIENT).first()


def model_contributor_weights(*, model) -> dict[int, Decimal]:
    """{user id: weight} of a model's contributors with a positive weight; sums to exactly 1.

    What the ledger and serving split a model's contributor fees by. Empty while the model has no
    ready index: serving then holds the contributors' part of a fee until it is (docs/serving.md).
    """
    rows = ModelContributorWeight.objects.filter(model=model, weight__gt=0).values_list("contributor_id", "weight")
    return {uid: weight for uid, weight in rows}


def model_contributor_list(*, model, limit: int | None = None) -> list[ModelContributorWeight]:
    qs = ModelContributorWeight.objects.filter(model=model).select_related("contributor").order_by("-weight",
                                                                                                   "contributor_id")
    return list(qs[:limit] if limit else qs)


def usernames(ids: list[int]) -> dict[int, str]:
    User = get_user_model()  # noqa: N806
    return dict(User.objects.filter(pk__in=ids).values_list("pk", User.USERNAME_FIELD))


def _summary(index: AttributionIndex | None) -> dict:
    if index is None or index.status != AttributionIndex.Status.READY or not index.directory:
        return {}
    path = Path(index.directory) / SUMMARY_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def _with_records(entries: list[dict], limit: int) -> list[dict]:
    entries = entries[:limit]
    found = Record.objects.in_bulk([e["record_id"] for e in entries])
    out = []
    for e in entries:
        record = found.get(e["record_id"])
        if record is None:  # a record deleted since the build: skip it rather than show a hole
            continue
        out.append({"record_id": record.pk, "text": record.text, "label": record.label,
                    "contributor_id": record.contributor_id, "score": e["score"]})
    names = usernames(sorted({e["contributor_id"] for e in out}))
    for e in out:
        e["contributor"] = names.get(e["contributor_id"], "")
    return out


def model_influential_records(*, model, limit: int = 20) -> list[dict]:
    """Training records with the most positive influence summed over the validation set."""
    return _with_records(_summary(attribution_index_get(model=model)).get("influential", []), limit)


def model_self_influence_top(*, model, limit: int = 20) -> list[dict]:
    """Training records with the largest self-influence: the ones most likely mislabeled or atypical."""
    return _with_records(_summary(attribution_index_get(model=model)).get("self_influence", []), limit)


def model_attribution_overview(*, model, limit: int = 10) -> dict:
    """Index status and top contributors, as the API and the model page show them."""
    index = attribution_index_get(model=model)
    return {
        "model_id": model.pk,
        "index": None if index is None else {
            "method": index.method, "status": index.status, "error": index.error,
            "record_count": index.record_count, "validation_count": index.validation_count,
            "settings": index.settings, "timings": index.timings, "disk_bytes": index.disk_bytes,
            "finished_at": index.finished_at,
        },
        "contributors": [
            {"user_id": w.contributor_id, "username": w.contributor.get_username(), "weight": w.weight,
             "negative": w.negative, "record_count": w.record_count}
            for w in model_contributor_list(model=model, limit=limit)
        ],
    }
