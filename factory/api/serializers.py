"""API shapes of the factory: input serializers only collect fields (the rules are in
services.finetune_params_validate, shared with the form); output serializers are read-only."""
from rest_framework import serializers

from factory import services
from factory.models import BaseModel, FineTunedModel, FineTuneJob, JobMetric


class BaseModelSerializer(serializers.ModelSerializer):
    class Meta:
        model = BaseModel
        fields = ["id", "name", "source_kind", "source", "description", "architecture", "tasks", "parameter_count",
                  "max_length", "hidden_size", "num_layers", "target_modules", "default_target_modules",
                  "chat_template", "chat_template_source", "status", "build"]
        read_only_fields = fields


class JobCreateSerializer(serializers.Serializer):
    """A fine-tune request. With `preset`, missing hyperparameters come from it (fitted to the base model);
    without, all of them are required."""

    datanet_version = serializers.IntegerField(help_text="DatanetVersion id")
    base_model = serializers.IntegerField(help_text="BaseModel id (see /factory/base-models/)")
    task = serializers.ChoiceField(choices=FineTuneJob.Task.choices)
    name = serializers.CharField(max_length=120, required=False, allow_blank=True)
    preset = serializers.ChoiceField(choices=list(services.PRESETS), required=False, allow_blank=True)
    lora_r = serializers.JSONField(required=False, help_text="LoRA rank, 1-256")
    lora_alpha = serializers.JSONField(required=False, help_text="1-1024")
    lora_dropout = serializers.JSONField(required=False, help_text="0-0.9")
    target_modules = serializers.ListField(child=serializers.CharField(), required=False,
                                           help_text="Layer names from the base model's target_modules")
    epochs = serializers.JSONField(required=False, help_text="1-50; the most epochs (a preset sizes them from the "
                                                             "version's records and labels)")
    patience = serializers.JSONField(required=False, help_text="0-50: stop after this many epochs without a better "
                                                               "validation score, keeping the best (0: off, the default)")
    learning_rate = serializers.JSONField(required=False, help_text="1e-7-1")
    loraplus_ratio = serializers.JSONField(required=False, help_text="1-64, LoRA+: the LoRA B matrices' learning "
                                                                     "rate over the others' (1: plain LoRA, the "
                                                                     "default)")
    batch_size = serializers.JSONField(required=False, help_text="1-1024")
    max_length = serializers.JSONField(required=False, help_text="8 to the base model's limit")
    eval_split = serializers.JSONField(required=False, help_text="0.05-0.5")
    seed = serializers.JSONField(required=False)
    packing = serializers.BooleanField(required=False, help_text="Generation only: pack examples into full rows")
    keep_epoch = serializers.ChoiceField(
        choices=list(services.KEEP_EPOCHS), required=False,
        help_text="best (default): the adapter of the epoch with the best validation score; last: the last epoch's")
    quantization = serializers.ChoiceField(
        choices=list(services.QUANTIZATIONS), required=False,
        help_text="none (default) or nf4: QLoRA, a 4-bit NF4 base with gradient checkpointing; refused (400) "
                  "unless a GPU worker is connected")


PARAM_NAMES = (*services.PARAM_RULES, "target_modules", "packing", "quantization", "keep_epoch")


class JobMetricSerializer(serializers.ModelSerializer):
    class Meta:
        model = JobMetric
        fields = ["kind", "step", "epoch", "loss", "values", "created_at"]
        read_only_fields = fields


class JobSerializer(serializers.ModelSerializer):
    owner = serializers.CharField(source="owner.username", read_only=True)
    datanet_version = serializers.IntegerField(source="datanet_version_id", read_only=True, allow_null=True)
    base_model = serializers.IntegerField(source="base_model_id", read_only=True, allow_null=True)
    progress_percent = serializers.FloatField(read_only=True)
    model = serializers.SerializerMethodField()

    class Meta:
        model = FineTuneJob
        fields = ["id", "name", "owner", "status", "task", "preset", "datanet_version", "datanet_version_label",
                  "base_model", "base_model_label", "hyperparameters", "cancel_requested", "error", "attempts",
                  "step", "total_steps", "epoch", "loss", "learning_rate", "examples_per_s", "tokens_per_s",
                  "eta_seconds", "checkpoint_step", "resumed_from_step", "progress_percent", "metrics", "best_epoch",
                  "model", "created_at", "started_at", "finished_at"]
        read_only_fields = fields

    def get_model(self, job) -> int | None:
        model = getattr(job, "model", None)  # the reverse one-to-one raises an AttributeError when absent
        return model.id if model else None


class JobDetailSerializer(JobSerializer):
    metric_rows = JobMetricSerializer(many=True, read_only=True)

    class Meta(JobSerializer.Meta):
        fields = [*JobSerializer.Meta.fields, "log", "metric_rows"]
        read_only_fields = fields


class FineTunedModelSerializer(serializers.ModelSerializer):
    developer = serializers.CharField(source="developer.username", read_only=True)
    base_model = serializers.CharField(source="base_model.name", read_only=True, allow_null=True, default=None)
    datanet_version = serializers.IntegerField(source="datanet_version_id", read_only=True, allow_null=True)

    class Meta:
        model = FineTunedModel
        fields = ["id", "name", "task", "status", "job", "base_model", "datanet_version", "version_root", "labels",
                  "adapter_sha256", "metrics", "developer", "created_at"]
        read_only_fields = fields


class FineTunedModelDetailSerializer(FineTunedModelSerializer):
    class Meta(FineTunedModelSerializer.Meta):
        fields = [*FineTunedModelSerializer.Meta.fields, "model_card"]
        read_only_fields = fields


class MergedStateSerializer(serializers.Serializer):
    """Where a model's merged export stands; `download` is set once it is done."""

    state = serializers.ChoiceField(choices=FineTunedModel.MergedState.choices, source="merged_state",
                                    help_text="'' (not requested), queued, running, done or failed")
    progress = serializers.FloatField(source="merged_progress", help_text="0-1 while running")
    error = serializers.CharField(source="merged_error")
    bytes = serializers.IntegerField(source="merged_bytes", help_text="Size of the zip when done")
    download = serializers.SerializerMethodField()

    def get_download(self, obj) -> str | None:
        if obj.merged_state != FineTunedModel.MergedState.DONE:
            return None
        from rest_framework.reverse import reverse

        return reverse("api-factory-model-merged", args=[obj.pk], request=self.context.get("request"))
