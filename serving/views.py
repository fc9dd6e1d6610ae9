"""HTML of paid inference: the playground on a model's page (the page itself is the factory's; this app
fills its `paid_inference` slot). Views stay thin: serving.services runs, charges and attributes."""
from django.contrib.auth.decorators import login_required
from django.db import transaction
from django.shortcuts import get_object_or_404, render
from django.views.decorators.http import require_POST

from attribution.selectors import usernames
from core.errors import ApplicationError
from factory import ui_services
from serving.forms import PlaygroundForm
from serving.models import Inference
from serving.selectors import output_segments
from serving.services import inference_execute


def inference_attribution_context(inference) -> dict:
    """What the playground shows beside a paid answer: contributor shares and top records with user
    names, the generated text cut at its attributed spans, and the fee."""
    if inference is None:
        return {}
    attribution = inference.attribution or {}
    contributors = attribution.get("contributors", [])
    records = attribution.get("records", [])
    ids = {c.get("user_id") for c in contributors} | {r.get("contributor_id") for r in records}
    names = usernames([i for i in ids if i])
    shares = [{"name": names.get(c.get("user_id"), "?"), "pct": round(100 * float(c.get("share", 0)), 1)}
              for c in sorted(contributors, key=lambda c: -float(c.get("share", 0)))]
    top = [{"text": r.get("text", ""), "score": r.get("score"), "name": names.get(r.get("contributor_id"), "")}
           for r in records]
    segments = []
    if "text" in (inference.output or {}) and attribution.get("spans"):
        segments = output_segments(text=inference.output["text"], spans=attribution["spans"])
    return {"inference": inference, "attribution_method": attribution.get("method", ""),
            "attribution_status": attribution.get("status", ""), "shares": shares, "top_records": top,
            "segments": segments}


@login_required
@require_POST
@transaction.non_atomic_requests  # the paid call commits its row and fee itself (a gpu worker may run it)
def model_playground(request, pk):
    """A paid inference from the model's page (the API's path): the answer, who it is owed to and the fee.
    An htmx fragment, or the whole model page without JavaScript."""
    model = get_object_or_404(ui_services.model_page_queryset(), pk=pk)
    form = PlaygroundForm(request.POST)
    result, error, inference = None, "", None
    if form.is_valid():
        try:
            inference = inference_execute(model=model, user=request.user, text=form.cleaned_data["text"],
                                          channel=Inference.Channel.PLAYGROUND)
            result = inference.output
        except ApplicationError as exc:
            error = exc.message
    else:
        error = " ".join(m for errors in form.errors.values() for m in errors)
    bars = []
    if result and "probabilities" in result:
        bars = [{"label": k, "p": v, "pct": round(100 * v, 1)} for k, v in result["probabilities"].items()]
    context = {"model": model, "result": result, "bars": bars, "error": error, "playground": form,
               **inference_attribution_context(inference)}
    if request.htmx:  # htmx swaps only 2xx answers; the fragment itself says what went wrong
        return render(request, "serving/_playground_result.html", context)
    return render(request, "factory/model.html", {**ui_services.model_page_context(model=model), **context},
                  status=200 if not error else 400)
