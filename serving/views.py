"""HTML of paid inference: the playground on a model's page (the page itself is the factory's; this app
fills its `paid_inference` slot) and, for generators, the streaming chat playground. Views stay thin:
serving.services and serving.completions run, charge and attribute."""
import json

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db import transaction
from django.http import FileResponse, Http404, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.template.loader import render_to_string
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from attribution.selectors import usernames
from core.errors import ApplicationError
from factory import ui_services
from serving import batch as batches
from serving.completions import (
    chat_messages_clean,
    chat_prompt_render,
    chat_template_kind,
    completion_stream_start,
    generation_params_clean,
)
from serving.forms import PlaygroundForm
from serving.models import BatchInference, Inference
from serving.selectors import output_segments
from serving.services import ERR_FAILED, GENERATION, inference_execute
from serving.sse import sse_response


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


# --- the chat playground (templates/serving/chat.html, static/js/chat.js; docs/openai_api.md) ---------

ERR_CHAT_JSON = "Send the chat as a JSON object: {messages, temperature, top_p, max_tokens}."
ERR_NOT_CHAT = "Only generators chat; a classifier has its playground on the model page."


def _generator_or_404(pk):
    model = get_object_or_404(ui_services.model_page_queryset(), pk=pk)
    if model.task != GENERATION:
        raise Http404(ERR_NOT_CHAT)
    return model


@login_required
@require_GET
def model_chat(request, pk):
    """The chat page: turns kept in the browser, each answer streamed from `model_chat_stream`."""
    model = _generator_or_404(pk)
    try:
        kind = chat_template_kind(model=model)
    except ApplicationError:
        kind = ""  # the model cannot serve now; the first message says why
    return render(request, "serving/chat.html", {
        "model": model, "fee": settings.SERVING_FEE_PER_CALL, "template_kind": kind,
        "max_tokens": settings.SERVING_MAX_NEW_TOKENS, "max_tokens_limit": settings.SERVING_MAX_NEW_TOKENS_LIMIT})


@login_required
@require_POST
@transaction.non_atomic_requests  # the answer is charged after the view has returned, as it streams
def model_chat_stream(request, pk):
    """One paid chat answer as server-sent events: {"inference_id"}, {"delta"}..., then {"text", "html"}
    (the answer rendered with its reused spans and the contributors paid) or {"error"}. Refusals are
    JSON {"error"} with the service's status, before any event."""
    model = _generator_or_404(pk)
    try:
        body = json.loads(request.body or b"{}")
    except ValueError:
        body = None
    if not isinstance(body, dict):
        return JsonResponse({"error": ERR_CHAT_JSON}, status=400)
    try:
        messages = chat_messages_clean(messages=body.get("messages"))
        prompt, stops = chat_prompt_render(model=model, messages=messages, fit_chars=settings.SERVING_MAX_INPUT_CHARS)
        params = generation_params_clean(max_tokens=body.get("max_tokens"), temperature=body.get("temperature"),
                                         top_p=body.get("top_p"), extra_stop=stops)
        stream = completion_stream_start(model=model, user=request.user, text=prompt, params=params,
                                         channel=Inference.Channel.PLAYGROUND)
    except ApplicationError as exc:
        return JsonResponse({"error": exc.message}, status=exc.status_code)
    return sse_response(_chat_events(request, stream), on_close=stream.close)


def _chat_events(request, stream):
    pieces = iter(stream)
    try:
        yield {"inference_id": stream.inference.pk}
        for piece in pieces:
            yield {"delta": piece}
    finally:
        pieces.close()  # a closed stream (Stop, a closed tab) ends the generation; the row is finished
    if stream.error:
        yield {"error": ERR_FAILED.format(error=stream.error)}
        return
    done = stream.inference
    html = render_to_string("serving/_chat_answer.html", inference_attribution_context(done), request=request)
    yield {"text": done.output.get("text", ""), "html": html}


@login_required
@require_GET
def inference_answer(request, pk):
    """One of your answers rendered for the chat (after Stop): 202 while it is still being finished."""
    inference = get_object_or_404(Inference.objects.select_related("model"), pk=pk, user=request.user)
    if inference.status == Inference.Status.PENDING:
        return HttpResponse(status=202)
    if inference.status == Inference.Status.FAILED:
        return render(request, "serving/_chat_answer.html", {"inference": inference, "error": inference.error})
    return render(request, "serving/_chat_answer.html", inference_attribution_context(inference))


@login_required
@require_http_methods(["GET", "POST"])
def model_batches(request, pk):
    """Batch inference for a model: upload a CSV (POST), and your batches of it with their progress (the
    table polls while one is queued or running) and output downloads."""
    model = get_object_or_404(ui_services.model_page_queryset(), pk=pk)
    if request.method == "POST":
        upload = request.FILES.get("file")
        if upload is None:
            messages.error(request, "Choose a CSV file to upload.")
        else:
            try:
                batch = batches.batch_create(model=model, user=request.user, data=upload.read(), file_name=upload.name)
            except ApplicationError as exc:
                messages.error(request, exc.message)
            else:
                messages.success(request, f"Batch {batch.pk} queued: {batch.rows} rows.")
        return redirect("serving:model-batches", pk=pk)
    rows = BatchInference.objects.filter(model=model, user=request.user)[:50]
    active = any(b.status in (BatchInference.Status.QUEUED, BatchInference.Status.RUNNING) for b in rows)
    context = {"model": model, "batches": rows, "active": active, "max_rows": settings.SERVING_BATCH_MAX_ROWS,
               "fee": settings.SERVING_FEE_PER_CALL}
    if request.htmx:
        return render(request, "serving/_batches.html", context)
    return render(request, "serving/batches.html", context)


@login_required
@require_GET
def batch_output(request, pk):
    try:
        batch = batches.batch_get(batch_id=pk, user=request.user)
        path = batches.batch_output_path(batch=batch)
    except ApplicationError as exc:
        raise Http404(exc.message) from exc
    return FileResponse(open(path, "rb"), as_attachment=True, content_type="text/csv",  # noqa: SIM115
                        filename=f"batch-{batch.pk}-output.csv")
