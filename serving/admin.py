from django.contrib import admin

from serving.models import Inference, SpanIndex


@admin.register(Inference)
class InferenceAdmin(admin.ModelAdmin):
    list_display = ("id", "model", "user", "channel", "status", "fee", "latency_ms", "created_at")
    list_filter = ("status", "channel")
    raw_id_fields = ("model", "user", "api_key")
    readonly_fields = ("output", "attribution", "fee", "fee_split", "created_at", "finished_at")


@admin.register(SpanIndex)
class SpanIndexAdmin(admin.ModelAdmin):
    list_display = ("id", "version", "base_model", "status", "record_count", "token_count", "segments", "built_at")
    list_filter = ("status",)
    raw_id_fields = ("version", "base_model", "derived_from")
