"""HTML pages of the Model Factory: the fine-tune form with its live estimate, jobs (live curves, cancel,
retry, comparison), the base-model catalog, and fine-tuned models with their card and download (the
playground on the model page is the serving app's).
Views stay thin: services write, factory.ui_services reads and lays out charts."""
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import FileResponse, Http404, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.html import escape
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from core.errors import ApplicationError
from core.roles import MODEL_DEVELOPER, role_required, user_has_role
from factory import exports, selectors, services, ui_services
from factory.forms import FineTuneForm, JobFilterForm, fine_tune_initial
from factory.models import BaseModel, FineTunedModel, FineTuneJob

JOBS_PER_PAGE = 25
MODELS_PER_PAGE = 24
MAX_COMPARE = 8
POLL_SECONDS = 2


@require_GET
def factory_home(request):
    recent = []
    if request.user.is_authenticated:
        recent = list(ui_services.job_list(user=request.user, mine=True)[:5])
    return render(request, "factory/home.html", {
        "recent_jobs": recent, "base_models": ui_services.base_model_list(),
        "models": ui_services.model_list()[:6],
        "can_train": user_has_role(request.user, MODEL_DEVELOPER),
    })


@require_GET
def base_model_list(request):
    """The catalog, and the bases being pre-trained here (the page polls their progress while there are any)."""
    building = ui_services.base_model_builds()
    context = {"base_models": ui_services.base_model_list(), "building": building}
    if request.htmx:
        return render(request, "factory/_base_builds.html", context)
    return render(request, "factory/base_models.html", context)


# --- the fine-tune form ------------------------------------------------------------------------------

def _base_model_from(query) -> BaseModel | None:
    """The base model the form is drawn for: the chosen one, else the first in the catalog."""
    qs = ui_services.base_model_list()
    pk = query.get("base_model")
    if pk:
        try:
            return qs.filter(pk=int(pk)).first()
        except (TypeError, ValueError):
            return None
    return qs.first()


def _form_context(form: FineTuneForm, base_model: BaseModel | None) -> dict:
    return {"form": form, "base_model": base_model, "presets": services.PRESETS, "preset_help": services.PRESET_HELP}


def _preset_or_custom(*, preset: str, base_model: BaseModel, params: dict, datanet_version, task: str) -> str:
    """Keep the preset's name on the job only when the submitted values are still that preset's (its epochs
    sized for this version)."""
    if preset not in services.PRESETS or not services.preset_fits_task(preset, task):
        return ""
    expected = services.preset_params(preset=preset, base_model=base_model, datanet_version=datanet_version,
                                      task=task)
    same = all(params.get(k) == v if k != "target_modules" else sorted(params.get(k, [])) == sorted(v)
               for k, v in expected.items())
    return preset if same else ""


@role_required(MODEL_DEVELOPER)
@require_http_methods(["GET", "POST"])
def finetune_new(request):
    """GET draws the form (a preset button or a change of base model redraws its body via htmx);
    POST validates through the service and queues the job."""
    if request.method == "POST":
        base_model = _base_model_from(request.POST)
        form = FineTuneForm(request.POST, base_model=base_model)
        if form.is_valid():
            data = form.cleaned_data
            try:
                job = services.finetune_job_create(
                    owner=request.user, datanet_version=data["datanet_version"], base_model=data["base_model"],
                    task=data["task"], params=data["params"], name=data["name"],
                    preset=_preset_or_custom(preset=data.get("preset", ""), base_model=data["base_model"],
                                             params=data["params"], datanet_version=data["datanet_version"],
                                             task=data["task"]))
            except ApplicationError as exc:
                for field, message in exc.extra.get("errors", {}).items():
                    form.add_error(field if field in form.fields else None, message)
                if not exc.extra.get("errors"):
                    form.add_error(None, exc.message)
            else:
                messages.success(request, f"Job {job.id} queued. This page follows it live.")
                return redirect("factory:job", pk=job.pk)
        return render(request, "factory/finetune_new.html", _form_context(form, base_model))
    base_model = _base_model_from(request.GET)
    form = FineTuneForm(initial=fine_tune_initial(query=request.GET, base_model=base_model), base_model=base_model)
    context = _form_context(form, base_model)
    if request.htmx:
        response = render(request, "factory/_finetune_fields.html", context)
        response["HX-Trigger"] = "ft-redrawn"  # the estimate panel refreshes for the new values
        return response
    return render(request, "factory/finetune_new.html", context)


@role_required(MODEL_DEVELOPER)
@require_GET
def finetune_estimate(request):
    """The estimate panel: trainable parameters, memory, steps and time for the values in the form."""
    base_model = _base_model_from(request.GET)
    form = FineTuneForm(request.GET, base_model=base_model)
    estimate, problems = None, []
    if form.is_valid():
        data = form.cleaned_data
        estimate = services.finetune_estimate(datanet_version=data["datanet_version"], base_model=data["base_model"],
                                              task=data["task"], params=data["params"])
    else:
        problems = [m for errors in form.errors.values() for m in errors]
    return render(request, "factory/_estimate.html", {"estimate": estimate, "problems": problems})


# --- jobs --------------------------------------------------------------------------------------------

@login_required
@require_GET
def job_list(request):
    form = JobFilterForm(request.GET or None)
    filters: dict = {}
    if form.is_valid():
        data = form.cleaned_data
        filters = {"status": data["status"], "base_model_id": data["base_model"].pk if data["base_model"] else None,
                   "datanet_id": data["datanet"], "mine": data["mine"]}
    jobs = ui_services.job_list(user=request.user, **filters)
    page = Paginator(jobs, JOBS_PER_PAGE).get_page(request.GET.get("page"))
    context = {"form": form, "page": page, "can_train": user_has_role(request.user, MODEL_DEVELOPER)}
    template = "factory/_job_rows.html" if request.htmx else "factory/jobs.html"
    return render(request, template, context)


def _job_context(request, job: FineTuneJob) -> dict:
    metrics = ui_services.job_metrics(job=job)
    can_manage = services.user_can_manage_job(user=request.user, job=job)
    model = FineTunedModel.objects.filter(job=job).first()
    matrix = (job.metrics or {}).get("confusion_matrix") or []
    labels = (job.metrics or {}).get("labels") or (model.labels if model else [])
    return {
        "job": job, "charts": ui_services.job_charts(job=job, metrics=metrics),
        "final_metrics": ui_services.job_final_metrics(job), "confusion_labels": labels,
        "baseline": ui_services.job_baseline(job) if job.task == FineTuneJob.Task.CLASSIFICATION else None,
        "early_stop": ui_services.job_early_stop(job, evaluations=len(metrics["eval"])),
        "confusion_rows": list(zip(labels, matrix, strict=False)),
        "eval_rows": metrics["eval"], "can_manage": can_manage,
        "can_cancel": can_manage and job.status in FineTuneJob.ACTIVE,
        "can_retry": can_manage and job.status in (FineTuneJob.Status.FAILED, FineTuneJob.Status.CANCELLED),
        "model": model, "poll_seconds": POLL_SECONDS, "hp_rows": ui_services.hyperparameter_rows(job),
        "queue": selectors.finetune_job_queue_position(job=job) if job.status == FineTuneJob.Status.QUEUED else None,
        "disk_bytes": services.finetune_job_disk_bytes(job=job),
    }


@login_required
@require_GET
def job_detail(request, pk):
    job = _job_or_404(pk)
    return render(request, "factory/job.html", _job_context(request, job))


@login_required
@require_GET
def job_live(request, pk):
    """The part of the job page that htmx polls while the job is active; once it ends, the fragment it
    returns carries no trigger, so polling stops."""
    job = _job_or_404(pk)
    return render(request, "factory/_job_live.html", _job_context(request, job))


def _job_or_404(pk) -> FineTuneJob:
    try:
        return ui_services.job_get(pk=pk)
    except FineTuneJob.DoesNotExist as exc:
        raise Http404("No such job.") from exc


def _job_action(request, pk, action, done: str):
    job = _job_or_404(pk)
    try:
        action(job=job, user=request.user)
    except ApplicationError as exc:
        if exc.status_code == 403:
            raise PermissionDenied(exc.message) from exc
        messages.error(request, exc.message)
    else:
        messages.success(request, done.format(id=job.id))
    url = reverse("factory:job", kwargs={"pk": job.pk})
    if request.htmx:  # a full reload shows the new state and the message
        response = HttpResponse(status=204)
        response["HX-Redirect"] = url
        return response
    return redirect(url)


@role_required(MODEL_DEVELOPER)
@require_POST
def job_cancel(request, pk):
    return _job_action(request, pk, services.finetune_job_cancel, "Cancel requested for job {id}.")


@role_required(MODEL_DEVELOPER)
@require_POST
def job_retry(request, pk):
    return _job_action(request, pk, services.finetune_job_retry, "Job {id} queued again; it resumes from its last checkpoint.")


@login_required
@require_GET
def job_compare(request):
    """Two or more runs side by side: hyperparameters (differences marked), final metrics (best marked)
    and their training-loss curves overlaid."""
    ids = []
    for raw in request.GET.getlist("ids"):
        for part in raw.split(","):
            if part.strip().isdigit() and int(part) not in ids:
                ids.append(int(part))
    jobs_by_id = {j.id: j for j in ui_services.job_list().filter(pk__in=ids[:MAX_COMPARE])}
    jobs = [jobs_by_id[i] for i in ids if i in jobs_by_id]
    if len(jobs) < 2:
        messages.warning(request, "Pick two or more jobs to compare.")
        return redirect("factory:jobs")
    return render(request, "factory/compare.html", {
        "jobs": jobs, "table": ui_services.jobs_compare(jobs=jobs), "chart": ui_services.jobs_loss_chart(jobs=jobs),
    })


# --- models ------------------------------------------------------------------------------------------

@require_GET
def model_list(request):
    page = Paginator(ui_services.model_list(), MODELS_PER_PAGE).get_page(request.GET.get("page"))
    return render(request, "factory/models.html", {"page": page})


def _model_or_404(pk) -> FineTunedModel:
    return get_object_or_404(ui_services.model_page_queryset(), pk=pk)


@require_GET
def model_detail(request, pk):
    return render(request, "factory/model.html", ui_services.model_page_context(model=_model_or_404(pk)))


@login_required
@require_GET
def model_download(request, pk):
    model = _model_or_404(pk)
    try:
        data = services.adapter_archive(model=model)
    except ApplicationError as exc:
        raise Http404(exc.message) from exc
    response = HttpResponse(data, content_type="application/zip")
    response["Content-Disposition"] = f'attachment; filename="model-{model.id}-adapter.zip"'
    response["X-Adapter-SHA256"] = model.adapter_sha256
    return response


def _merged_cell(request, model: FineTunedModel):
    return render(request, "factory/_model_merged.html", {"model": model})


@login_required
@require_POST
def model_merge(request, pk):
    """Request the merged export (again, when it failed); htmx gets the polling cell, others the page."""
    model = _model_or_404(pk)
    try:
        model = exports.finetuned_model_merged_request(model=model, retry=True)
    except ApplicationError as exc:
        if request.htmx:
            return HttpResponse(f'<div id="model-merged" class="merged-failed">{escape(exc.message)}</div>')
        messages.error(request, exc.message)
        return redirect("factory:model", pk=pk)
    if request.htmx:
        return _merged_cell(request, model)
    messages.success(request, "The merged model is being prepared; this page shows when it is ready.")
    return redirect("factory:model", pk=pk)


@login_required
@require_GET
def model_merged_status(request, pk):
    """The merged-export cell the model page polls while it is queued or running."""
    return _merged_cell(request, _model_or_404(pk))


@login_required
@require_GET
def model_merged_download(request, pk):
    model = _model_or_404(pk)
    path = exports.finetuned_model_merged_file(model=model)
    if path is None:
        messages.info(request, "The merged model is not ready yet: prepare it first.")
        return redirect("factory:model", pk=pk)
    return FileResponse(open(path, "rb"), as_attachment=True, content_type="application/zip",  # noqa: SIM115
                        filename=f"{exports.merged_folder_name(model=model)}.zip")
