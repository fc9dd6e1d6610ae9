"""Admin for the Model Factory: the base-model catalog (added by inspecting the model, like
register_base_model), fine-tune jobs (read-only, cancel/retry through the services) and trained models."""
from django import forms
from django.contrib import admin, messages
from django.utils.html import format_html

from core.errors import ApplicationError
from factory import services
from factory.models import BaseModel, FineTunedModel, FineTuneJob, JobMetric


class BaseModelForm(forms.ModelForm):
    """Only what a person knows (where the model is); the rest is read from the model on save."""

    class Meta:
        model = BaseModel
        fields = ("name", "source_kind", "source", "description", "tasks", "chat_template", "is_active")
        help_texts = {"tasks": 'JSON list, e.g. ["classification"]; leave [] to infer from the model.',
                      "chat_template": "Jinja chat template for this base; leave empty to use the tokenizer's own."}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["tasks"].required = False

    def clean(self):
        data = super().clean()
        if self.errors:
            return data
        try:
            self.inspected = services.base_model_inspect(source_kind=data["source_kind"], source=data["source"])
        except ApplicationError as exc:
            raise forms.ValidationError(exc.message) from exc
        given = (data.get("chat_template") or "").strip()
        own = self.inspected.get("chat_template", "")
        if given and given != own.strip():
            try:
                self.template = services.base_model_chat_template_pick(
                    source_kind=data["source_kind"], source=data["source"], given=given, own=own)
            except ApplicationError as exc:
                self.add_error("chat_template", exc.message)
        else:
            self.template = (own, "tokenizer" if own else "")
        tasks = data.get("tasks") or []
        unsupported = sorted(set(tasks) - set(self.inspected["tasks"]))
        if unsupported:
            self.add_error("tasks", f"This model cannot do {', '.join(unsupported)}; it supports "
                                    f"{', '.join(self.inspected['tasks'])}.")
        return data


@admin.register(BaseModel)
class BaseModelAdmin(admin.ModelAdmin):
    form = BaseModelForm
    list_display = ("name", "source_kind", "architecture", "task_list", "parameter_count", "max_length",
                    "chat_template_source", "status", "is_active")
    list_filter = ("source_kind", "architecture", "is_active")
    search_fields = ("name", "source", "description")
    readonly_fields = ("architecture", "chat_template_source", "status", "build", "parameter_count", "max_length",
                       "hidden_size", "num_layers", "vocab_size",
                       "target_modules", "default_target_modules", "module_shapes", "created_at")
    actions = ("reinspect",)

    @admin.display(description="tasks")
    def task_list(self, obj):
        return ", ".join(obj.tasks)

    def save_model(self, request, obj, form, change):
        info = getattr(form, "inspected", None)
        if info:
            tasks = obj.tasks or info["tasks"]
            for key in services.INSPECTED_FIELDS:
                setattr(obj, key, info[key])
            obj.tasks = tasks
            obj.chat_template, obj.chat_template_source = form.template
        super().save_model(request, obj, form, change)

    @admin.action(description="Re-inspect the selected models (target modules, size)")
    def reinspect(self, request, queryset):
        for model in queryset:
            if model.status != BaseModel.BuildStatus.READY:  # a base still being pre-trained here
                self.message_user(request, f"{model.name}: {model.get_status_display().lower()}; not inspected",
                                  messages.WARNING)
                continue
            try:
                services.base_model_register(
                    path=model.source, name=model.name, tasks=model.tasks, description=model.description,
                    source_kind=model.source_kind,
                    chat_template=model.chat_template if model.chat_template_source == "catalog" else "")
            except ApplicationError as exc:
                self.message_user(request, f"{model.name}: {exc.message}", messages.ERROR)
            else:
                self.message_user(request, f"{model.name}: refreshed")


class EvalInline(admin.TabularInline):
    model = JobMetric
    verbose_name_plural = "evaluations"
    fields = ("step", "epoch", "loss", "values")
    readonly_fields = fields
    extra = 0
    can_delete = False

    def get_queryset(self, request):
        return super().get_queryset(request).filter(kind=JobMetric.Kind.EVAL)

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(FineTuneJob)
class FineTuneJobAdmin(admin.ModelAdmin):
    list_display = ("id", "name", "owner", "status", "task", "base_model_label", "datanet_version_label",
                    "progress", "loss", "created_at")
    list_filter = ("status", "task", "base_model_label")
    search_fields = ("name", "owner__username", "datanet_version_label", "base_model_label")
    list_select_related = ("owner",)
    inlines = (EvalInline,)
    actions = ("cancel", "retry")
    readonly_fields = [f.name for f in FineTuneJob._meta.fields]

    @admin.display(description="progress")
    def progress(self, obj):
        return f"{obj.step}/{obj.total_steps}" if obj.total_steps else "—"

    def has_add_permission(self, request):
        return False  # jobs are created through the form or the API, with their validation

    def _apply(self, request, queryset, fn, verb):
        for job in queryset:
            try:
                fn(job=job, user=request.user)
            except ApplicationError as exc:
                self.message_user(request, exc.message, messages.WARNING)
            else:
                self.message_user(request, f"job {job.id}: {verb}")

    @admin.action(description="Cancel the selected jobs")
    def cancel(self, request, queryset):
        self._apply(request, queryset, services.finetune_job_cancel, "cancel requested")

    @admin.action(description="Retry the selected jobs (resume from the last checkpoint)")
    def retry(self, request, queryset):
        self._apply(request, queryset, services.finetune_job_retry, "queued again")


@admin.register(FineTunedModel)
class FineTunedModelAdmin(admin.ModelAdmin):
    list_display = ("name", "task", "base_model", "status", "sha", "developer", "created_at")
    list_filter = ("status", "task", "base_model")
    search_fields = ("name", "adapter_sha256", "developer__username")
    list_select_related = ("base_model", "developer")
    readonly_fields = [f.name for f in FineTunedModel._meta.fields]

    @admin.display(description="adapter sha256")
    def sha(self, obj):
        return format_html("<code>{}…</code>", obj.adapter_sha256[:16])

    def has_add_permission(self, request):
        return False
