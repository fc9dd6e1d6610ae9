"""Reads for paid inference: a user's calls and a model's earnings."""
from __future__ import annotations

from django.db.models import QuerySet

from serving.models import Inference


def inference_list(*, user, model_id: int | None = None) -> QuerySet[Inference]:
    qs = Inference.objects.filter(user=user).select_related("model")
    return qs.filter(model_id=model_id) if model_id else qs


def output_segments(*, text: str, spans: list[dict]) -> list[dict]:
    """The generated text cut at its attributed spans, for a template to highlight without `|safe`:
    [{"text", "span": None | {count, records, tokens}}] in order; overlapping spans merge into the first."""
    cuts = sorted((s["char_start"], s["char_end"], s) for s in spans
                  if s.get("char_start") is not None and s.get("char_end") is not None)
    out, pos = [], 0
    for start, end, span in cuts:
        start = max(start, pos)
        if end <= start:
            continue
        if start > pos:
            out.append({"text": text[pos:start], "span": None})
        out.append({"text": text[start:end],
                    "span": {k: span.get(k) for k in ("count", "records", "tokens", "context_tokens")}})
        pos = end
    if pos < len(text):
        out.append({"text": text[pos:], "span": None})
    return out


ERR_NO_MODEL_NAMED = "The model {name!r} does not exist (GET /v1/models lists the models you can call)."


def generator_models_list() -> QuerySet:
    """Fine-tuned generators that can be called by name, newest first (a model whose job did not
    succeed is left out; one that cannot serve for another reason answers 409 when called)."""
    from factory.models import FineTunedModel, FineTuneJob

    return (FineTunedModel.objects.filter(task="generation", job__status=FineTuneJob.Status.SUCCEEDED)
            .select_related("developer", "base_model").order_by("-created_at"))


def model_get_by_name(*, name):
    """The fine-tuned model called `name`: its slug, or its id for a model without one; a 404 otherwise."""
    from core.errors import ApplicationError
    from factory.models import FineTunedModel

    models = FineTunedModel.objects.select_related("base_model", "job", "datanet_version", "developer")
    found = None
    if isinstance(name, str) and name:
        found = models.filter(slug=name).first()
        if found is None and name.isdigit():
            found = models.filter(pk=int(name), slug="").first()
    if found is None:
        raise ApplicationError(ERR_NO_MODEL_NAMED.format(name=name), status_code=404,
                               extra={"param": "model", "code": "model_not_found"})
    return found
