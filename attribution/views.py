"""HTML for Proof of Attribution: a model's attribution page, the contributors partial, explain, rebuild."""
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.http import Http404, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from attribution import selectors
from attribution.forms import ExplainForm
from attribution.publication import model_publication_overview, publication_get, weights_file_name
from attribution.services import attribution_index_build_enqueue, prediction_explain
from core.errors import ApplicationError
from factory.models import FineTunedModel


def _model(model_id: int):
    return get_object_or_404(FineTunedModel.objects.select_related("base_model", "datanet_version__datanet"),
                             pk=model_id)


def user_can_rebuild(*, user, model) -> bool:
    return user.is_staff or model.developer_id == user.pk


@require_GET
@login_required
def model_attribution(request, model_id: int):
    model = _model(model_id)
    return render(request, "attribution/model.html", {
        "model": model,
        "index": selectors.attribution_index_get(model=model),
        "contributors": selectors.model_contributor_list(model=model),
        "influential": selectors.model_influential_records(model=model),
        "self_influence": selectors.model_self_influence_top(model=model),
        "form": ExplainForm(),
        "can_rebuild": user_can_rebuild(user=request.user, model=model),
        "publication": model_publication_overview(model=model),
    })


@require_GET
@login_required
def model_contributors_partial(request, model_id: int):
    """The partial the model page includes; htmx polls it while the index builds."""
    return render(request, "attribution/_model_contributors.html", {"model": _model(model_id)})


@require_POST
@login_required
def model_explain(request, model_id: int):
    model = _model(model_id)
    form = ExplainForm(request.POST)
    result, error = None, None
    if form.is_valid():
        try:
            result = prediction_explain(model=model, text=form.cleaned_data["text"], top_k=form.cleaned_data["top_k"])
        except ApplicationError as exc:
            error = exc.message
    context = {"model": model, "form": form, "result": result, "error": error}
    if request.htmx:
        return render(request, "attribution/_explain_result.html", context)
    return render(request, "attribution/explain.html", context)


@require_POST
@login_required
def model_index_rebuild(request, model_id: int):
    model = _model(model_id)
    if not user_can_rebuild(user=request.user, model=model):
        raise PermissionDenied("Only the model's developer or an admin can rebuild its attribution index.")
    with transaction.atomic():
        attribution_index_build_enqueue(model=model)
    messages.success(request, "The attribution index is queued for a rebuild.")
    return redirect("attribution:model", model_id=model.pk)


@require_GET
def model_weights_download(request, model_id: int):
    """The published weights file, as a download; public like the model page, so anyone can verify it."""
    model = _model(model_id)
    try:
        document = publication_get(model=model).document
    except ApplicationError as exc:
        raise Http404(exc.message) from None
    response = JsonResponse(document, json_dumps_params={"indent": 1})
    response["Content-Disposition"] = f'attachment; filename="{weights_file_name(model)}"'
    return response
