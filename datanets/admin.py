"""Curation console in the Django admin.

Curators (users in the `curator` group, given is_staff by `curator_appoint`) see only the Datanets they
curate and those Datanets' contributions, records and versions; superusers and staff admins see all.
Every decision goes through `datanets.services` (which also refuses a contributor's own contribution);
the admin only collects the curator's choice and reason.
"""
from django import forms
from django.contrib import admin, messages
from django.db.models import Count
from django.shortcuts import render
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from core.errors import ApplicationError
from datanets import selectors, services
from datanets.models import Contribution, CurationDecision, Datanet, DatanetVersion, PendingContribution, Record

PREVIEW_RECORDS = 20


class ScopedAdmin(admin.ModelAdmin):
    """Rows of Datanets the user curates only; `datanet_path` leads from the model to its Datanet."""

    datanet_path = "datanet"

    def get_queryset(self, request):
        qs = super().get_queryset(request)
        scope = selectors.datanets_curated_by(user=request.user)
        return qs.filter(**{f"{self.datanet_path}__in": scope})

    def has_delete_permission(self, request, obj=None):
        return request.user.is_superuser

    def has_add_permission(self, request):
        return False


def _bars(counts: list[tuple[str, int]]):
    total = sum(n for _, n in counts) or 1
    return format_html(
        '<table class="mf-bars">{}</table>',
        format_html_join("", '<tr><td>{}</td><td><span style="display:inline-block;height:.8em;background:#4f46e5;'
                             'width:{}px"></span> {} ({}%)</td></tr>',
                         ((label or "—", int(240 * n / total), n, round(100 * n / total, 1)) for label, n in counts)),
    )


@admin.register(Datanet)
class DatanetAdmin(ScopedAdmin):
    datanet_path = "pk"
    list_display = ("name", "domain", "task", "min_stake", "slash_fraction", "record_total", "version_total")
    list_filter = ("domain", "task")
    search_fields = ("name", "slug", "description")
    filter_horizontal = ("curators",)
    readonly_fields = ("label_distribution",)
    actions = ["create_version"]

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(_records=Count("records", distinct=True),
                                                      _versions=Count("versions", distinct=True))

    def has_add_permission(self, request):
        return request.user.is_superuser

    @admin.display(description="records", ordering="_records")
    def record_total(self, obj):
        return obj._records

    @admin.display(description="versions", ordering="_versions")
    def version_total(self, obj):
        return obj._versions

    @admin.display(description="Label distribution (accepted)")
    def label_distribution(self, obj):
        return _bars(selectors.datanet_label_distribution(datanet=obj)) if obj.pk else "—"

    @admin.action(description="Create a version from the accepted records")
    def create_version(self, request, queryset):
        for datanet in queryset:
            try:
                version = services.datanet_version_create(datanet=datanet, user=request.user)
            except ApplicationError as exc:
                self.message_user(request, f"{datanet.name}: {exc.message}", messages.ERROR)
            else:
                self.message_user(request, f"{datanet.name}: version {version.number} created, "
                                           f"{version.record_count} records, root {version.merkle_root}", messages.SUCCESS)


class DecisionInline(admin.TabularInline):
    model = CurationDecision
    extra = 0
    can_delete = False
    fields = readonly_fields = ("created_at", "curator", "decision", "reason")
    verbose_name_plural = "Audit trail"

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class DecideForm(forms.ModelForm):
    decision = forms.ChoiceField(required=False, choices=[("", "— no decision —"), ("accepted", "Accept"),
                                                          ("rejected", "Reject (slash the stake)")])
    decision_reason = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 3}),
                                      help_text="Why; required to reject. Kept in the audit trail.")

    class Meta:
        model = Contribution
        fields = ()

    def clean(self):
        data = super().clean()
        if data.get("decision") == "rejected" and not data.get("decision_reason", "").strip():
            self.add_error("decision_reason", services.ERR_REASON_REQUIRED)
        user = getattr(self, "request_user", None)
        if data.get("decision") and user is not None and self.instance.contributor_id == user.pk:
            self.add_error("decision", services.ERR_OWN_CONTRIBUTION)
        return data


class ContributionAdmin(ScopedAdmin):
    form = DecideForm
    list_display = ("id", "file_name", "datanet", "contributor", "status", "ingest_state", "record_count",
                    "duplicates_dropped", "conflicts", "stake", "created_at")
    list_filter = ("status", "ingest_state", "datanet")
    search_fields = ("file_name", "contributor__username", "file_sha256")
    list_select_related = ("datanet", "contributor")
    inlines = [DecisionInline]
    actions = ["accept_selected", "reject_selected"]
    fieldsets = (
        ("Decision", {"fields": ("decision", "decision_reason")}),
        ("Contribution", {"fields": ("datanet", "contributor", "file_name", "file_sha256", "status", "curator", "reason",
                                     "decided_at", "stake", "ingest_state", "format", "encoding", "rows_total", "rows_bad",
                                     "record_count", "duplicates_dropped", "conflicts", "created_at")}),
        ("Review", {"fields": ("label_distribution", "conflict_list", "record_preview", "error_list")}),
    )
    readonly_fields = ("datanet", "contributor", "file_name", "file_sha256", "status", "curator", "reason", "decided_at",
                       "stake", "ingest_state", "format", "encoding", "rows_total", "rows_bad", "record_count",
                       "duplicates_dropped", "conflicts", "created_at", "label_distribution", "conflict_list",
                       "record_preview", "error_list")

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change, **kwargs)
        form.request_user = request.user
        return form

    def save_model(self, request, obj, form, change):
        decision = form.cleaned_data.get("decision")
        if not decision:
            return
        reason = form.cleaned_data.get("decision_reason", "")
        try:
            if decision == Contribution.Status.ACCEPTED:
                services.contribution_accept(contribution=obj, curator=request.user, reason=reason)
            else:
                services.contribution_reject(contribution=obj, curator=request.user, reason=reason)
        except ApplicationError as exc:
            self.message_user(request, exc.message, messages.ERROR)
        else:
            self.message_user(request, f"Contribution {obj.id} {decision}.", messages.SUCCESS)

    @admin.display(description="Label distribution")
    def label_distribution(self, obj):
        return _bars(list(services.contribution_label_counts(contribution=obj).items()))

    @admin.display(description="Conflicts (same text, other label)")
    def conflict_list(self, obj):
        rows = selectors.contribution_conflicts(contribution=obj)
        if not rows:
            return "none"
        return format_html('<table><tr><th>record</th><th>text</th><th>label here</th><th>elsewhere</th></tr>{}</table>',
                           format_html_join("", "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                                            ((r["id"], r["text"][:300], r["label"], ", ".join(r["others"])) for r in rows)))

    @admin.display(description=f"First {PREVIEW_RECORDS} records")
    def record_preview(self, obj):
        rows = obj.records.order_by("row_number").values_list("row_number", "label", "text")[:PREVIEW_RECORDS]
        link = reverse("admin:datanets_record_changelist") + f"?contribution__id__exact={obj.pk}"
        return format_html('<table><tr><th>row</th><th>label</th><th>text</th></tr>{}</table><p><a href="{}">all {} records</a>, '
                           '{} duplicates dropped at ingest</p>',
                           format_html_join("", "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                                            ((n, lab, text[:500]) for n, lab, text in rows)),
                           link, obj.record_count, obj.duplicates_dropped)

    @admin.display(description="Ingest errors")
    def error_list(self, obj):
        if not obj.ingest_errors:
            return "none"
        return format_html("<ul>{}</ul>", format_html_join("", "<li>{}{}</li>", (
            (f"row {e['row']}: " if e.get("row") else "", e.get("error", "")) for e in obj.ingest_errors[:50])))

    @admin.action(description="Accept selected contributions")
    def accept_selected(self, request, queryset):
        done, errors = services.contributions_decide(contributions=list(queryset), curator=request.user,
                                                     decision=Contribution.Status.ACCEPTED)
        self._report(request, done, errors, "accepted")

    @admin.action(description="Reject selected contributions (asks for a reason)")
    def reject_selected(self, request, queryset):
        if request.POST.get("apply"):
            reason = request.POST.get("reason", "").strip()
            if reason:
                done, errors = services.contributions_decide(contributions=list(queryset), curator=request.user,
                                                             decision=Contribution.Status.REJECTED, reason=reason)
                self._report(request, done, errors, "rejected")
                return None
            self.message_user(request, services.ERR_REASON_REQUIRED, messages.ERROR)
        return render(request, "datanets/admin/reject_reason.html", {
            **self.admin_site.each_context(request), "title": "Reject contributions", "queryset": queryset,
            "opts": self.model._meta, "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
        })

    def _report(self, request, done, errors, verb):
        if done:
            self.message_user(request, f"{len(done)} contribution(s) {verb}.", messages.SUCCESS)
        for e in errors:
            self.message_user(request, e, messages.ERROR)


admin.site.register(Contribution, ContributionAdmin)


@admin.register(PendingContribution)
class ReviewQueueAdmin(ContributionAdmin):
    """Pending, ingested contributions: what curators have to decide."""

    list_filter = ("datanet",)

    def get_queryset(self, request):
        return super().get_queryset(request).filter(status=Contribution.Status.PENDING,
                                                    ingest_state=Contribution.IngestState.DONE)


@admin.register(Record)
class RecordAdmin(ScopedAdmin):
    list_display = ("id", "short_text", "label", "contributor", "contribution", "is_conflict", "row_number")
    list_filter = ("is_conflict", "label", "datanet")
    search_fields = ("text", "sha256")
    list_select_related = ("contributor", "contribution")
    readonly_fields = ("datanet", "contribution", "contributor", "text", "label", "sha256", "text_sha256", "row_number",
                       "is_conflict")
    show_full_result_count = False

    def has_change_permission(self, request, obj=None):
        return False

    @admin.display(description="text")
    def short_text(self, obj):
        return obj.text[:120]


@admin.register(DatanetVersion)
class DatanetVersionAdmin(ScopedAdmin):
    list_display = ("datanet", "number", "record_count", "contributor_count", "merkle_root", "created_by", "created_at")
    list_filter = ("datanet",)
    readonly_fields = ("datanet", "number", "merkle_root", "record_count", "contributor_count", "label_counts",
                       "export_path", "created_by", "created_at")
    exclude = ("records",)

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(CurationDecision)
class CurationDecisionAdmin(ScopedAdmin):
    datanet_path = "contribution__datanet"
    list_display = ("created_at", "curator", "decision", "contribution", "reason")
    list_filter = ("decision", "contribution__datanet")
    search_fields = ("curator__username", "reason")
    readonly_fields = ("contribution", "curator", "decision", "reason", "created_at")

    def has_change_permission(self, request, obj=None):
        return False
