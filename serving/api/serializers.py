from rest_framework import serializers

from serving.models import Inference


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
    settlement = SettlementSerializer(source="*", read_only=True)

    class Meta:
        model = Inference
        fields = ["id", "model_id", "channel", "status", "input_text", "output", "attribution", "fee", "fee_split",
                  "settlement", "latency_ms", "created_at"]
        read_only_fields = fields
