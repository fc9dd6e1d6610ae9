"""API shapes for Datanets. Serializers only validate and present; services do the work."""
from django.conf import settings
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.reverse import reverse

from datanets.models import Contribution, Datanet, DatanetVersion, Record
from datanets.readers import TEXT_MODES
from datanets.selectors import contribution_chain_state, contribution_near_duplicates

DOWNLOAD_FORMATS = ("parquet", "jsonl")


class DatanetSerializer(serializers.ModelSerializer):
    owner = serializers.CharField(source="owner.username", read_only=True)
    curators = serializers.SlugRelatedField(many=True, read_only=True, slug_field="username")
    accepted_records = serializers.IntegerField(read_only=True, required=False,
                                                help_text="Records of accepted contributions (list only).")

    class Meta:
        model = Datanet
        fields = ("id", "slug", "name", "domain", "task", "labels", "description", "license", "max_text_length",
                  "min_stake", "slash_fraction", "harm_threshold", "owner", "curators", "accepted_records", "created_at")
        read_only_fields = fields


class DatanetCreateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=120)
    domain = serializers.ChoiceField(choices=Datanet.Domain.choices, default=Datanet.Domain.OTHER)
    task = serializers.ChoiceField(choices=Datanet.Task.choices, default=Datanet.Task.CLASSIFICATION)
    labels = serializers.ListField(child=serializers.CharField(max_length=120), required=False, default=list,
                                   help_text="Allowed labels; at least two for classification, ignored for generation.")
    description = serializers.CharField(required=False, allow_blank=True, default="")
    license = serializers.CharField(required=False, allow_blank=True, default="", max_length=120)
    min_stake = serializers.DecimalField(max_digits=38, decimal_places=18, min_value=0, default="10")
    slash_fraction = serializers.DecimalField(max_digits=5, decimal_places=4, min_value=0, max_value=1, default="0.5")
    max_text_length = serializers.IntegerField(min_value=1, max_value=1_000_000, default=10_000)
    harm_threshold = serializers.FloatField(min_value=0, max_value=1, default=0.0,
                                            help_text="Harm flags: see docs/attribution.md (harmful data).")


class LabelCountSerializer(serializers.Serializer):
    label = serializers.CharField()
    records = serializers.IntegerField()


class ContributorRankSerializer(serializers.Serializer):
    username = serializers.CharField(source="contributor__username")
    records = serializers.IntegerField()


class DatanetDetailSerializer(DatanetSerializer):
    counts = serializers.DictField(read_only=True, help_text="contributions (total/pending/accepted/rejected), "
                                   "records (total/accepted/conflicts/contributors), versions")
    label_distribution = LabelCountSerializer(many=True, read_only=True)
    contributors = ContributorRankSerializer(many=True, read_only=True, help_text="Ranked by accepted records.")

    class Meta(DatanetSerializer.Meta):
        fields = (*DatanetSerializer.Meta.fields, "counts", "label_distribution", "contributors")
        read_only_fields = fields


class ContributionSerializer(serializers.ModelSerializer):
    datanet = serializers.CharField(source="datanet.slug", read_only=True)
    contributor = serializers.CharField(source="contributor.username", read_only=True)
    curator = serializers.CharField(source="curator.username", read_only=True, default=None, allow_null=True)
    columns = serializers.SerializerMethodField()
    guess = serializers.SerializerMethodField()
    text_column = serializers.SerializerMethodField()
    label_column = serializers.SerializerMethodField()
    drop_bad_rows = serializers.SerializerMethodField()
    url = serializers.SerializerMethodField()
    chain = serializers.SerializerMethodField(help_text="The stake/accept/reject writes on-chain: "
                                                        "state none|pending|confirmed|failed, and each step")

    class Meta:
        model = Contribution
        fields = ("id", "url", "datanet", "contributor", "file_name", "file_sha256", "file_size", "format",
                  "compression", "encoding", "columns", "guess", "text_column", "label_column", "drop_bad_rows",
                  "ingest_state", "ingest_progress", "ingest_errors", "rows_total", "rows_bad", "record_count",
                  "duplicates_dropped", "conflicts", "stake", "status", "curator", "reason", "created_at",
                  "decided_at", "chain", "is_evaluation")
        read_only_fields = fields

    @extend_schema_field({"type": "object", "properties": {
        "state": {"type": "string", "enum": ["none", "pending", "confirmed", "failed"]},
        "steps": {"type": "array", "items": {"type": "object"}}, "failed": {"type": "object", "nullable": True}}})
    def get_chain(self, obj) -> dict:
        return contribution_chain_state(contribution=obj)

    def get_columns(self, obj) -> list[str]:
        return obj.options.get("columns", [])

    @extend_schema_field({"type": "object", "properties": {"text_column": {"type": "string"},
                                                           "label_column": {"type": "string"}}})
    def get_guess(self, obj) -> dict:
        return obj.options.get("guess", {})

    def get_text_column(self, obj) -> str:
        return obj.options.get("text_column", "")

    def get_label_column(self, obj) -> str:
        return obj.options.get("label_column", "")

    def get_drop_bad_rows(self, obj) -> bool:
        return bool(obj.options.get("drop_bad_rows"))

    def get_url(self, obj) -> str:
        return reverse("api-contribution", args=[obj.id], request=self.context.get("request"))


class ContributionDetailSerializer(ContributionSerializer):
    near_duplicates = serializers.SerializerMethodField(
        help_text="Records that joined an earlier record's near-duplicate cluster at ingest (no credit of their "
                  "own): twins within this contribution, copies of earlier records by contributor, examples")

    class Meta(ContributionSerializer.Meta):
        fields = (*ContributionSerializer.Meta.fields, "near_duplicates")
        read_only_fields = fields

    @extend_schema_field({"type": "object", "properties": {
        "records": {"type": "integer"}, "twins": {"type": "integer"}, "copies_of_earlier": {"type": "integer"},
        "threshold": {"type": "number"}, "by_contributor": {"type": "array", "items": {"type": "object"}},
        "examples": {"type": "array", "items": {"type": "object"}}}})
    def get_near_duplicates(self, obj) -> dict:
        return contribution_near_duplicates(contribution=obj)


class UploadSerializer(serializers.Serializer):
    file = serializers.FileField(help_text="CSV, TSV, JSONL, Parquet or plain text; .gz or .zip of one. "
                                           f"At most {settings.DATANET_UPLOAD_MAX_BYTES} bytes (DATANET_UPLOAD_MAX_BYTES).")
    text_column = serializers.CharField(required=False, allow_blank=True, default="",
                                        help_text="Column with the text; guessed when left out.")
    label_column = serializers.CharField(required=False, allow_blank=True, default="",
                                         help_text="Column with the label (classification); guessed when left out.")
    text_mode = serializers.ChoiceField(choices=TEXT_MODES, default="line",
                                        help_text="Plain text: one record per line or per paragraph.")
    drop_bad_rows = serializers.BooleanField(default=False,
                                             help_text="Store the valid rows even if some fail validation.")
    is_evaluation = serializers.BooleanField(
        default=False, help_text="Curator-held evaluation data (curators of the Datanet only; 403 otherwise): in "
                                 "versions, never trained on, never paid, no stake.")


class ContributionStartSerializer(serializers.Serializer):
    text_column = serializers.CharField(required=False, allow_blank=True, default="")
    label_column = serializers.CharField(required=False, allow_blank=True, default="")
    text_mode = serializers.ChoiceField(choices=TEXT_MODES, default="line")
    drop_bad_rows = serializers.BooleanField(default=False)


class RecordSerializer(serializers.ModelSerializer):
    contributor = serializers.CharField(source="contributor.username", read_only=True)
    contribution = serializers.IntegerField(source="contribution_id", read_only=True)

    class Meta:
        model = Record
        fields = ("id", "text", "label", "sha256", "contribution", "contributor", "row_number", "is_conflict")
        read_only_fields = fields


class VersionSerializer(serializers.ModelSerializer):
    datanet = serializers.CharField(source="datanet.slug", read_only=True)
    created_by = serializers.CharField(source="created_by.username", read_only=True)
    downloads = serializers.SerializerMethodField()

    class Meta:
        model = DatanetVersion
        fields = ("id", "datanet", "number", "merkle_root", "record_count", "evaluation_count", "contributor_count",
                  "label_counts",
                  "created_by", "created_at", "export_state", "export_progress", "export_error", "downloads")
        read_only_fields = fields

    @extend_schema_field({"type": "object", "properties": {f: {"type": "string", "format": "uri"}
                                                           for f in DOWNLOAD_FORMATS}})
    def get_downloads(self, obj) -> dict:
        if obj.export_state != DatanetVersion.ExportState.DONE or not obj.export_path:
            return {}  # the cpu task writes the exports after the version is committed
        request = self.context.get("request")
        return {fmt: reverse("api-version-download", args=[obj.datanet.slug, obj.number, fmt], request=request)
                for fmt in DOWNLOAD_FORMATS}


class ProofSerializer(serializers.Serializer):
    record_id = serializers.IntegerField()
    leaf = serializers.CharField(help_text="0x + sha256 of the record's canonical (text, label) form")
    proof = serializers.ListField(child=serializers.CharField(), help_text="Sibling hashes, leaf to root")
    root = serializers.CharField(help_text="The version's Merkle root (sorted-pair sha256)")
    verified = serializers.BooleanField(help_text="The server's own check of the proof against the root")


class DecisionSerializer(serializers.Serializer):
    reason = serializers.CharField(required=False, allow_blank=True, default="", max_length=2000,
                                   help_text="Why; kept in the audit trail")


class RejectSerializer(serializers.Serializer):
    reason = serializers.CharField(max_length=2000, help_text="Why; required, shown to the contributor and kept "
                                                              "in the audit trail")


class BulkDecisionSerializer(serializers.Serializer):
    ids = serializers.ListField(child=serializers.IntegerField(min_value=1), min_length=1, max_length=500,
                                help_text="Contribution ids of this Datanet")
    decision = serializers.ChoiceField(choices=[Contribution.Status.ACCEPTED, Contribution.Status.REJECTED])
    reason = serializers.CharField(required=False, allow_blank=True, default="", max_length=2000,
                                   help_text="Required to reject")

    def validate(self, attrs):
        if attrs["decision"] == Contribution.Status.REJECTED and not attrs["reason"].strip():
            raise serializers.ValidationError({"reason": ["A rejection needs a reason."]})
        return attrs


class BulkDecisionResultSerializer(serializers.Serializer):
    decided = ContributionSerializer(many=True)
    errors = serializers.ListField(child=serializers.CharField(), help_text="One line per contribution left "
                                                                            "undecided: `#id file: why`")
