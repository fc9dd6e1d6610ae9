from rest_framework import serializers

from attribution.services import MAX_EXPLAIN_CHARS, MAX_TOP_K


class IndexStatusSerializer(serializers.Serializer):
    method = serializers.CharField()
    status = serializers.CharField()
    error = serializers.CharField()
    record_count = serializers.IntegerField()
    validation_count = serializers.IntegerField()
    settings = serializers.DictField()
    timings = serializers.DictField()
    disk_bytes = serializers.IntegerField()
    finished_at = serializers.DateTimeField(allow_null=True)


class ContributorWeightSerializer(serializers.Serializer):
    user_id = serializers.IntegerField()
    username = serializers.CharField()
    weight = serializers.DecimalField(max_digits=20, decimal_places=18, help_text="Share of positive influence")
    negative = serializers.FloatField(help_text="Mean negative influence per query (reported, not charged)")
    record_count = serializers.IntegerField()


class ModelAttributionSerializer(serializers.Serializer):
    model_id = serializers.IntegerField()
    index = IndexStatusSerializer(allow_null=True)
    contributors = ContributorWeightSerializer(many=True)


class ExplainRequestSerializer(serializers.Serializer):
    text = serializers.CharField(max_length=MAX_EXPLAIN_CHARS)
    top_k = serializers.IntegerField(min_value=1, max_value=MAX_TOP_K, default=5)


class PredictionSerializer(serializers.Serializer):
    label = serializers.CharField()
    probabilities = serializers.DictField(child=serializers.FloatField())


class ExplainRecordSerializer(serializers.Serializer):
    record_id = serializers.IntegerField()
    text = serializers.CharField()
    label = serializers.CharField()
    contributor = serializers.CharField()
    contributor_id = serializers.IntegerField()
    score = serializers.FloatField()  # raw influence (what shares are computed from)
    relevance = serializers.FloatField()  # score / sqrt(self-influence): the order records are shown in


class ExplainShareSerializer(serializers.Serializer):
    user_id = serializers.IntegerField()
    username = serializers.CharField()
    share = serializers.FloatField()


class ExplainResponseSerializer(serializers.Serializer):
    model_id = serializers.IntegerField()
    method = serializers.CharField()
    prediction = PredictionSerializer()
    records = ExplainRecordSerializer(many=True)
    contributors = ExplainShareSerializer(many=True)
