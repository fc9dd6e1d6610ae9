from django.contrib import admin, messages
from django.db import transaction

from attribution.models import AttributionIndex, ModelContributorWeight
from attribution.services import attribution_index_build_enqueue


@admin.register(AttributionIndex)
class AttributionIndexAdmin(admin.ModelAdmin):
    list_display = ("id", "model", "method", "status", "record_count", "validation_count", "finished_at")
    list_filter = ("status", "method")
    search_fields = ("model__name",)
    readonly_fields = [f.name for f in AttributionIndex._meta.fields]
    actions = ["rebuild"]

    @admin.action(description="Rebuild the selected indexes")
    def rebuild(self, request, queryset):
        with transaction.atomic():
            for index in queryset.select_related("model"):
                attribution_index_build_enqueue(model=index.model)
        messages.success(request, f"{queryset.count()} index build(s) queued.")


@admin.register(ModelContributorWeight)
class ModelContributorWeightAdmin(admin.ModelAdmin):
    list_display = ("model", "contributor", "weight", "negative", "record_count", "computed_at")
    list_select_related = ("model", "contributor")
    search_fields = ("model__name", "contributor__username")
    readonly_fields = [f.name for f in ModelContributorWeight._meta.fields]
