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
