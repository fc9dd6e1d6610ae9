from rest_framework import serializers

from serving.models import Inference


class InferRequestSerializer(serializers.Serializer):
    # Blank and oversize inputs pass here so the service answers them with its own 400 / 413.
    text = serializers.CharField(allow_blank=True, trim_whitespace=False, required=False, default="")


class InferenceSerializer(serializers.ModelSerializer):
    model_id = serializers.IntegerField(read_only=True)

    class Meta:
        model = Inference
        fields = ["id", "model_id", "channel", "status", "input_text", "output", "attribution", "fee", "fee_split",
                  "latency_ms", "created_at"]
        read_only_fields = fields
