"""HTML pages: browse Datanets, upload with a column-mapping step and live ingest progress (htmx)."""
from pathlib import Path

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import FileResponse, Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from core.errors import ApplicationError
from core.roles import CONTRIBUTOR, CURATOR, role_required
from datanets import harm, selectors, services
from datanets.forms import DatanetCreateForm, DatanetFilterForm, MappingForm, RecordFilterForm, UploadForm
from datanets.models import Contribution, Datanet, DatanetVersion, HarmFlag

RECORDS_PER_PAGE = 25


@require_GET
def datanet_list(request):
    form = DatanetFilterForm(request.GET or None)
    q, domain = "", ""
    if form.is_valid():
        q, domain = form.cleaned_data["q"], form.cleaned_data["domain"]
    datanets = selectors.datanet_list(search=q, domain=domain)
    template = "datanets/_list_cards.html" if request.htmx else "datanets/list.html"
    return render(request, template, {"datanets": datanets, "form": form})


@role_required(CURATOR)
@require_http_methods(["GET", "POST"])
def datanet_create(request):
    """Curators (and admins) create Datanets; the creator becomes the Datanet's first curator."""
    form = DatanetCreateForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            datanet = services.datanet_create(owner=request.user, curators=[request.user], **form.cleaned_data)
        except ApplicationError as exc:
            form.add_error(None, exc.message)
        else:
            messages.success(request, f"Datanet '{datanet.name}' created.")
            return redirect("datanets:detail", slug=datanet.slug)
    return render(request, "datanets/create.html", {"form": form})


def _records_context(request, datanet: Datanet) -> dict:
    """One keyset page of the records the caller may read, filtered; the page and its htmx fragment share it.

    Keyset (`after` = the last id shown) rather than page numbers: a page costs the same at record 1 or
    record 1,000,000 and needs no COUNT of the matches (docs/datanets.md, browsing)."""
    form = RecordFilterForm(request.GET or None, labels=datanet.labels, initial={"status": "accepted"})
    f = form.cleaned_data if form.is_valid() else {}
    status = f.get("status") or "accepted"
    records = selectors.records_visible_to(
        user=request.user, datanet=datanet, label=f.get("label", ""), contributor=f.get("contributor", ""),
        search=f.get("q", ""), status="" if status == "any" else status)
    after = f.get("after")
    if after:
        records = records.filter(id__gt=after)
    rows = list(records[:RECORDS_PER_PAGE + 1])
    more = len(rows) > RECORDS_PER_PAGE
    rows = rows[:RECORDS_PER_PAGE]
    query = request.GET.copy()
    query.pop("after", None)
    next_query = None
    if more:
        query["after"] = rows[-1].id
        next_query = query.urlencode()
        query.pop("after")
    return {"datanet": datanet, "records": rows, "filter_form": form, "next_query": next_query,
            "first_query": query.urlencode() if after else None, "filtered": any(f.get(k) for k in ("q", "label", "contributor")) or status != "accepted"}


@require_GET
def datanet_detail(request, slug):
    datanet = get_object_or_404(Datanet, slug=slug)
    context = _records_context(request, datanet)
    if request.htmx and (request.htmx.target == "records" or request.GET):  # a filter or a page: the table only
        return render(request, "datanets/_records.html", context)
    distribution = selectors.datanet_label_distribution(datanet=datanet)
    total = sum(n for _, n in distribution) or 1
    bars = [{"label": lab or "(none)", "n": n, "pct": round(100 * n / total, 1)} for lab, n in distribution]
    return render(request, "datanets/detail.html", {
        **context, "counts": selectors.datanet_counts(datanet=datanet), "bars": bars,
        "contributors": selectors.datanet_contributors_ranked(datanet=datanet),
        "versions": _with_queue_ahead(datanet.versions.all()),
        "can_curate": services.user_can_curate(user=request.user, datanet=datanet),
    })


def _with_queue_ahead(versions) -> list[DatanetVersion]:
    versions = list(versions)
    for v in versions:
        waiting = v.export_state == DatanetVersion.ExportState.QUEUED
        v.queue_ahead = selectors.cpu_queue_ahead(version=v) if waiting else 0
    return versions


@role_required(CONTRIBUTOR)
@require_http_methods(["GET", "POST"])
def upload(request, slug):
    datanet = get_object_or_404(Datanet, slug=slug)
    form = UploadForm(request.POST or None, request.FILES or None)
    if datanet.task == Datanet.Task.CLASSIFICATION:
        del form.fields["text_mode"]  # plain text (the only use of it) goes to generation Datanets only
    can_curate = services.user_can_curate(user=request.user, datanet=datanet)
    if not can_curate:
        del form.fields["is_evaluation"]  # curators only (the service refuses anyone else too)
    if request.method == "POST" and form.is_valid():
        try:
            result = services.contribution_upload(
                datanet=datanet, contributor=request.user, file=form.cleaned_data["file"],
                file_name=form.cleaned_data["file"].name, text_mode=form.cleaned_data.get("text_mode", "line"),
                drop_bad_rows=form.cleaned_data["drop_bad_rows"], auto_start=False,
                is_evaluation=form.cleaned_data.get("is_evaluation", False))
        except ApplicationError as exc:
            form.add_error("file", exc.message)
        else:
            if not result.created and result.contribution.ingest_state != Contribution.IngestState.MAPPING:
                messages.info(request, "This file was uploaded before; here is its contribution.")
            return redirect("datanets:contribution", pk=result.contribution.pk)
    return render(request, "datanets/upload.html", {"datanet": datanet, "form": form, "can_curate": can_curate})


def _own_contribution(request, pk) -> Contribution:
    contribution = get_object_or_404(Contribution.objects.select_related("datanet", "contributor"), pk=pk)
    if contribution.contributor_id != request.user.pk and not services.user_can_curate(user=request.user, datanet=contribution.datanet):
        raise PermissionDenied("This is not your contribution.")
    return contribution


@login_required
@require_http_methods(["GET", "POST"])
def contribution_detail(request, pk):
    contribution = _own_contribution(request, pk)
    opts = contribution.options
    form = None
    if contribution.ingest_state == Contribution.IngestState.MAPPING:
        initial = {"text_column": opts.get("text_column") or opts.get("guess", {}).get("text_column"),
                   "label_column": opts.get("label_column") or opts.get("guess", {}).get("label_column"),
                   "text_mode": opts.get("text_mode", "line"), "drop_bad_rows": opts.get("drop_bad_rows", False)}
        form = MappingForm(request.POST or None, initial=initial, columns=opts.get("columns", []),
                           needs_label=contribution.datanet.task == Datanet.Task.CLASSIFICATION,
                           is_text=contribution.format == "text", is_chat=contribution.datanet.task == Datanet.Task.CHAT)
        if request.method == "POST" and form.is_valid():
            try:
                services.contribution_start(contribution=contribution, user=request.user,
                                            text_column=form.cleaned_data.get("text_column", ""),
                                            label_column=form.cleaned_data.get("label_column", ""),
                                            text_mode=form.cleaned_data.get("text_mode", "line"),
                                            drop_bad_rows=form.cleaned_data["drop_bad_rows"])
            except ApplicationError as exc:
                form.add_error(None, exc.message)
            else:
                return redirect("datanets:contribution", pk=contribution.pk)
    preview_columns = opts.get("columns", [])
    preview = [[row.get(c, "") for c in preview_columns] for row in opts.get("preview", [])]
    return render(request, "datanets/contribution.html", {
        "c": contribution, "form": form, "preview_columns": preview_columns, "preview": preview,
        "chat_preview": opts.get("chat_preview", []),
        "can_withdraw": selectors.contribution_withdrawable(contribution=contribution, user=request.user),
        "records": contribution.records.order_by("row_number")[:10],
        "labels": services.contribution_label_counts(contribution=contribution) if contribution.record_count else {},
        "chain": selectors.contribution_chain_state(contribution=contribution),
        "near_dups": selectors.contribution_near_duplicates(contribution=contribution) if contribution.record_count else None,
        "harm_flags": harm.harm_flags_visible_to(user=request.user, contribution=contribution),
        "can_curate": services.user_can_curate(user=request.user, datanet=contribution.datanet),
        "ahead": _ingests_ahead(contribution),
    })


def _ingests_ahead(contribution: Contribution) -> int | None:
    if contribution.ingest_state != Contribution.IngestState.QUEUED:
        return None
    return selectors.cpu_queue_ahead(contribution=contribution)


@login_required
@require_POST
def harm_flag_decide(request, pk, action):
    """A curator slashes a harm flag's bonded contributions (a reason is required) or dismisses it; the
    service checks that the user curates the flag's Datanet and is not the flagged contributor."""
    if action not in ("slash", "dismiss"):
        raise Http404("No such action.")
    flag = get_object_or_404(HarmFlag.objects.select_related("datanet"), pk=pk)
    if not services.user_can_curate(user=request.user, datanet=flag.datanet):
        raise PermissionDenied("You do not curate this Datanet.")
    reason = request.POST.get("reason", "")
    try:
        if action == "slash":
            slashed = harm.harm_flag_slash(flag=flag, curator=request.user, reason=reason)
            messages.success(request, f"Slashed {len(slashed)} contribution(s); the chain shows it once mined.")
        else:
            harm.harm_flag_dismiss(flag=flag, curator=request.user, reason=reason)
            messages.success(request, "Flag dismissed.")
    except ApplicationError as exc:
        messages.error(request, exc.message)
    back = request.POST.get("contribution")
    if back and back.isdigit() and flag.contributions.filter(pk=int(back)).exists():
        return redirect("datanets:contribution", pk=int(back))
    return redirect("datanets:detail", slug=flag.datanet.slug)


@login_required
@require_POST
def contribution_chain_retry(request, pk):
    """Send a failed stake/accept/reject again, once its cause is fixed."""
    contribution = _own_contribution(request, pk)
    try:
        services.contribution_chain_retry(contribution=contribution, user=request.user)
    except ApplicationError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, "Sent again: the page shows the outcome once the chain answers.")
    return redirect("datanets:contribution", pk=contribution.pk)


@login_required
@require_POST
def contribution_retry(request, pk):
    """After a failed ingest: the contributor's choice to store the valid rows and drop the bad ones."""
    contribution = _own_contribution(request, pk)
    try:
        services.contribution_retry(contribution=contribution, user=request.user, drop_bad_rows=True)
    except ApplicationError as exc:
        messages.error(request, exc.message)
    return redirect("datanets:contribution", pk=contribution.pk)


@login_required
@require_GET
def contribution_status(request, pk):
    """The progress fragment that the contribution page polls while the ingest runs."""
    contribution = _own_contribution(request, pk)
    response = render(request, "datanets/_status.html", {"c": contribution, "ahead": _ingests_ahead(contribution)})
    if contribution.ingest_state in (Contribution.IngestState.DONE, Contribution.IngestState.FAILED):
        response["HX-Refresh"] = "true"  # the whole page shows the outcome
    return response


@login_required
@require_GET
def my_contributions(request):
    page = Paginator(selectors.contributions_of(user=request.user), 50).get_page(request.GET.get("page"))
    busy = (Contribution.IngestState.QUEUED, Contribution.IngestState.RUNNING)
    # While an ingest on this page runs, the table polls itself (htmx) until none does.
    return render(request, "datanets/mine.html", {"page": page, "polling": any(c.ingest_state in busy for c in page)})


@login_required
@require_POST
def version_create(request, slug):
    datanet = get_object_or_404(Datanet, slug=slug)
    try:
        version = services.datanet_version_create(datanet=datanet, user=request.user)
    except ApplicationError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"Version {version.number} created: {version.record_count} records, root {version.merkle_root}.")
    return redirect("datanets:detail", slug=slug)


@require_GET
def version_export_status(request, pk):
    """The export cell that the Datanet page polls while a version's export waits or runs."""
    version = get_object_or_404(DatanetVersion, pk=pk)
    ahead = selectors.cpu_queue_ahead(version=version) if version.export_state == DatanetVersion.ExportState.QUEUED else 0
    return render(request, "datanets/_version_export.html", {"v": version, "ahead": ahead})


DOWNLOADS = {"parquet": ("data.parquet", "application/vnd.apache.parquet"), "jsonl": ("data.jsonl", "application/x-ndjson")}


@login_required
@require_GET
def version_download(request, pk, fmt):
    version = get_object_or_404(DatanetVersion.objects.select_related("datanet"), pk=pk)
    if fmt not in DOWNLOADS or not version.export_path:
        raise Http404("No such export.")
    name, content_type = DOWNLOADS[fmt]
    path = Path(version.export_path) / name
    if not path.is_file():
        raise Http404("The export file is missing.")
    return FileResponse(open(path, "rb"), as_attachment=True, content_type=content_type,  # noqa: SIM115 - FileResponse closes it
                        filename=f"{version.datanet.slug}-v{version.number}.{fmt}")


# --- curator console ----------------------------------------------------------------------------------

TRAIL_PER_PAGE = 25


def _curated(request, slug) -> Datanet:
    datanet = get_object_or_404(Datanet, slug=slug)
    if not services.user_can_curate(user=request.user, datanet=datanet):
        raise PermissionDenied(f"You are not a curator of the Datanet '{datanet.name}'.")
    return datanet


@login_required
@require_GET
def review_home(request):
    """The curator console's entry: the Datanets the user curates, with how many contributions wait."""
    datanets = selectors.datanets_to_review(user=request.user)
    if not datanets and not request.user.is_staff:
        raise PermissionDenied("The curator console is for curators of a Datanet.")
    return render(request, "datanets/review_home.html", {"datanets": datanets})


@login_required
@require_GET
def review_queue(request, slug):
    """A Datanet's review queue (record previews, near-duplicate and label hints, bulk decisions) and its
    audit trail. Curators of the Datanet only (403)."""
    datanet = _curated(request, slug)
    trail = Paginator(selectors.curation_trail(datanet=datanet), TRAIL_PER_PAGE).get_page(request.GET.get("trail"))
    if request.htmx and request.GET.get("trail"):
        return render(request, "datanets/_review_trail.html", {"datanet": datanet, "trail": trail})
    return render(request, "datanets/review.html", {
        "datanet": datanet, "queue": selectors.review_queue(datanet=datanet), "trail": trail,
        "counts": selectors.datanet_counts(datanet=datanet),
    })


@login_required
@require_POST
def review_decide(request, slug):
    """Accept or reject the chosen contributions (a reason is required to reject); each is decided on its
    own, and the ones that cannot be (own upload, already decided) are listed."""
    datanet = _curated(request, slug)
    decision = request.POST.get("decision", "")
    reason = request.POST.get("reason", "").strip()
    ids = [int(i) for i in request.POST.getlist("ids") if i.isdigit()]
    if decision not in (Contribution.Status.ACCEPTED, Contribution.Status.REJECTED):
        messages.error(request, "Choose accept or reject.")
    elif not ids:
        messages.error(request, "Tick at least one contribution.")
    elif decision == Contribution.Status.REJECTED and not reason:
        messages.error(request, "A rejection needs a reason: it is shown to the contributor and kept in the audit trail.")
    else:
        chosen = datanet.contributions.filter(pk__in=ids).order_by("created_at", "id")
        done, errors = services.contributions_decide(contributions=chosen, curator=request.user, decision=decision,
                                                     reason=reason)
        if done:
            messages.success(request, f"{len(done)} contribution(s) {decision}.")
        for error in errors:
            messages.error(request, error)
    return redirect("datanets:review", slug=datanet.slug)


@login_required
@require_POST
def contribution_withdraw(request, pk):
    """The contributor deletes a pending contribution that nothing on-chain holds (a failed ingest, one
    waiting for its columns); the service says why when it cannot."""
    contribution = _own_contribution(request, pk)
    name = contribution.file_name
    try:
        services.contribution_withdraw(contribution=contribution, user=request.user)
    except ApplicationError as exc:
        messages.error(request, exc.message)
        return redirect("datanets:contribution", pk=contribution.pk)
    messages.success(request, f"'{name}' withdrawn and deleted.")
    return redirect("datanets:mine")
