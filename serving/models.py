from django.conf import settings
from django.db import models

from core.fields import ExactDecimalField

TOKEN_DIGITS = {"max_digits": 36, "decimal_places": 18}


class Inference(models.Model):
    """One paid call to a fine-tuned model: what was asked, answered, attributed and charged."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    class Channel(models.TextChoices):
        API = "api", "API"
        PLAYGROUND = "playground", "Playground"
        BATCH = "batch", "Batch (CSV)"

    class Settlement(models.TextChoices):
        # The contributors' part of a charged fee waits for the model's attribution index (docs/serving.md).
        PENDING = "pending", "Held until the attribution index is ready"
        SETTLED = "settled", "Settled"

    class Rule(models.TextChoices):
        ATTRIBUTION = "attribution", "By this answer's attribution"
        MODEL_WEIGHTS = "model_weights", "By the model's contributor weights (no positive influence)"
        TREASURY = "treasury", "To the treasury (no attribution signal, no model weights)"

    model = models.ForeignKey("factory.FineTunedModel", on_delete=models.PROTECT, related_name="inferences")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="inferences")
    api_key = models.ForeignKey("accounts.ApiKey", null=True, blank=True, on_delete=models.SET_NULL,
                                related_name="inferences")
    channel = models.CharField(max_length=12, choices=Channel.choices, default=Channel.API)
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.PENDING, db_index=True)
    input_text = models.TextField()
    params = models.JSONField(default=dict, blank=True,
                              help_text="Generation settings asked for: max_new_tokens, temperature, top_p, stop")
    output = models.JSONField(default=dict, blank=True, help_text="label + probabilities, or generated text")
    attribution = models.JSONField(default=dict, blank=True, help_text="method, top records, contributor shares")
    fee = ExactDecimalField(**TOKEN_DIGITS, default=0, help_text="OPEN charged for this call")
    fee_split = models.JSONField(default=dict, blank=True,
                                 help_text="Amounts (as strings) to contributors (per user id), developer, protocol")
    settlement = models.CharField(max_length=8, choices=Settlement.choices, blank=True, db_index=True,
                                  help_text="Blank: nothing charged (the call failed)")
    settlement_rule = models.CharField(max_length=16, choices=Rule.choices, blank=True,
                                       help_text="How the contributors' part was split, once settled")
    settled_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)
    latency_ms = models.FloatField(null=True, blank=True)
    # A row of a batch job (channel batch): its position in the uploaded CSV; a batch rerun skips rows it has.
    batch = models.ForeignKey("serving.BatchInference", null=True, blank=True, on_delete=models.CASCADE,
                              related_name="inferences")
    batch_row = models.PositiveIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["model", "-created_at"]), models.Index(fields=["user", "-created_at"])]
        constraints = [models.UniqueConstraint(fields=["batch", "batch_row"], condition=models.Q(batch__isnull=False),
                                               name="unique_batch_row")]

    def __str__(self) -> str:
        return f"inference {self.pk} of model {self.model_id} ({self.status})"


class SpanIndex(models.Model):
    """The suffix-array span index over one Datanet version in one base model's tokens.

    Built in the background (`span_index_build_task`); a version that only adds records to an indexed
    earlier version starts from a copy of that index plus a small delta segment, then is compacted.
    """

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        BUILDING = "building", "Building"
        READY = "ready", "Ready"
        FAILED = "failed", "Failed"

    version = models.ForeignKey("datanets.DatanetVersion", on_delete=models.CASCADE, related_name="span_indexes")
    base_model = models.ForeignKey("factory.BaseModel", on_delete=models.CASCADE, related_name="span_indexes")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED, db_index=True)
    directory = models.CharField(max_length=500, blank=True)
    record_count = models.PositiveIntegerField(default=0)
    token_count = models.BigIntegerField(default=0)
    segments = models.PositiveIntegerField(default=0, help_text="1 = compacted; more = base + deltas")
    disk_bytes = models.BigIntegerField(default=0)
    build_seconds = models.FloatField(default=0)
    derived_from = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    built_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [models.UniqueConstraint(fields=["version", "base_model"], name="unique_span_index")]

    def __str__(self) -> str:
        return f"span index of version {self.version_id} / base {self.base_model_id} ({self.status})"


class BatchInference(models.Model):
    """A CSV of inputs run through one model as a background job (`gpu` queue): each row is a paid Inference
    (channel batch), the job writes a CSV of outputs. Rows already answered are skipped on a rerun."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    model = models.ForeignKey("factory.FineTunedModel", on_delete=models.PROTECT, related_name="batches")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="batches")
    api_key = models.ForeignKey("accounts.ApiKey", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.QUEUED, db_index=True)
    file_name = models.CharField(max_length=255)
    input_path = models.CharField(max_length=500)
    output_path = models.CharField(max_length=500, blank=True)
    rows = models.PositiveIntegerField(default=0)
    done_rows = models.PositiveIntegerField(default=0)
    failed_rows = models.PositiveIntegerField(default=0)
    fee = ExactDecimalField(**TOKEN_DIGITS, default=0, help_text="OPEN charged in all (answered rows)")
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"batch {self.pk} of model {self.model_id} ({self.status})"

    @property
    def progress_percent(self) -> float:
        return round(100 * (self.done_rows + self.failed_rows) / self.rows, 1) if self.rows else 0.0
