"""Reads for paid inference: a user's calls and a model's earnings."""
from __future__ import annotations

from django.db.models import Count, QuerySet, Sum

from serving.models import Inference


def inference_list(*, user, model_id: int | None = None) -> QuerySet[Inference]:
    qs = Inference.objects.filter(user=user).select_related("model")
    return qs.filter(model_id=model_id) if model_id else qs


def model_inference_totals(*, model) -> dict:
    row = Inference.objects.filter(model=model, status=Inference.Status.DONE).aggregate(calls=Count("id"),
                                                                                         fees=Sum("fee"))
    return {"calls": row["calls"] or 0, "fees": row["fees"] or 0}
