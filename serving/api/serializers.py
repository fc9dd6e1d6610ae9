from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from serving.models import BatchInference, Inference

# The stored attribution of a paid answer (serving.services.answer_settlement): records and contributors named
# as POST .../explain names them. Nothing is required: a pending or failed call has empty lists, a generator's
# records come from its spans (with `share`), and a record deleted since keeps what was stored.
ATTRIBUTION_SCHEMA = {"type": "object", "properties": {
    "method": {"type": "string", "description": "gradient | tracin | random | spans ('' while pending)"},
    "status": {"type": "string", "description": "ready | pending | unavailable | queued | building"},
    "label": {"type": "string", "description": "The label explained (classifiers): the one served"},
    "reason": {"type": "string"},
    "records": {"type": "array", "items": {"type": "object", "properties": {
        "record_id": {"type": "integer"}, "score": {"type": "number"}, "share": {"type": "number"},
        "text": {"type": "string"}, "label": {"type": "string"},
        "contributor": {"type": "string", "description": "username"}, "contributor_id": {"type": "integer"}}}},
    "contributors": {"type": "array", "items": {"type": "object", "properties": {
        "user_id": {"type": "integer"}, "username": {"type": "string"}, "share": {"type": "number"}}}},
    "spans": {"type": "array", "items": {"type": "object"}, "description": "Generators: spans of the output"},
    "coverage": {"type": "number"}}}


@extend_schema_field(ATTRIBUTION_SCHEMA)
class AttributionField(serializers.JSONField):
    pass


class InferRequestSerializer(serializers.Serializer):
    # Blank and oversize inputs pass here so the service answers them with its own 400 / 413.
    text = serializers.CharField(allow_blank=True, trim_whitespace=False, required=False, default="")


class SettlementSerializer(serializers.Serializer):
    """How the contributors' part of the fee was (or will be) split: docs/serving.md, "Settlement"."""

    status = serializers.CharField(source="settlement", help_text="pending | settled ('' for a failed call)")
    rule = serializers.CharField(source="settlement_rule",
                                 help_text="attribution | model_weights | treasury ('' while pending)")
    rule_text = serializers.CharField(source="get_settlement_rule_display")
    settled_at = serializers.DateTimeField(allow_null=True)


class InferenceSerializer(serializers.ModelSerializer):
    model_id = serializers.IntegerField(read_only=True)
    attribution = AttributionField(read_only=True)
    settlement = SettlementSerializer(source="*", read_only=True)

    class Meta:
        model = Inference
        fields = ["id", "model_id", "channel", "status", "input_text", "output", "attribution", "fee", "fee_split",
                  "settlement", "latency_ms", "created_at"]
        read_only_fields = fields


class BatchCreateSerializer(serializers.Serializer):
    file = serializers.FileField(help_text="A UTF-8 CSV with a header row and a `text` column; other columns are "
                                           "copied to the output")


class BatchSerializer(serializers.ModelSerializer):
    model_id = serializers.IntegerField(read_only=True)
    progress_percent = serializers.FloatField(read_only=True)
    output = serializers.SerializerMethodField()

    class Meta:
        model = BatchInference
        fields = ["id", "model_id", "status", "file_name", "rows", "done_rows", "failed_rows", "progress_percent",
                  "fee", "error", "output", "created_at", "started_at", "finished_at"]
        read_only_fields = fields

    def get_output(self, obj) -> str | None:
        """The output CSV's URL once the batch is done."""
        if obj.status != BatchInference.Status.DONE:
            return None
        from rest_framework.reverse import reverse

        return reverse("api-batch-output", args=[obj.pk], request=self.context.get("request"))
