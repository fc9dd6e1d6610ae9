from decimal import Decimal

from django.conf import settings
from django.db import models

from core.fields import ExactDecimalField


class AttributionIndex(models.Model):
    """One method's fitted index for one fine-tuned model: the row says what is done, the files hold it.

    The index itself (projected gradients as a float16 memmap, the preconditioner, self-influence) lives
    in `directory`, next to the model's adapter; see docs/attribution.md for the layout.
    """

    class Method(models.TextChoices):
        GRADIENT = "gradient", "Gradient influence (Gauss-Newton, LoRA)"

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Building"
        READY = "ready", "Ready"
        FAILED = "failed", "Failed"
        UNSUPPORTED = "unsupported", "Not available for this model"

    ACTIVE = (Status.QUEUED, Status.RUNNING)

    model = models.ForeignKey("factory.FineTunedModel", on_delete=models.CASCADE, related_name="attribution_indexes")
    method = models.CharField(max_length=20, choices=Method.choices, default=Method.GRADIENT)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.QUEUED, db_index=True)
    directory = models.CharField(max_length=500, blank=True)
    record_count = models.PositiveIntegerField(default=0, help_text="Training records in the index")
    validation_count = models.PositiveIntegerField(default=0, help_text="Held-out queries the weights average over")
    settings = models.JSONField(default=dict, blank=True, help_text="projection_dim, damping, seed")
    timings = models.JSONField(default=dict, blank=True, help_text="Seconds per phase")
    disk_bytes = models.BigIntegerField(default=0)
    error = models.TextField(blank=True)
    attempts = models.PositiveIntegerField(default=0)
    worker = models.CharField(max_length=255, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [models.UniqueConstraint(fields=["model", "method"], name="unique_index_per_model_method")]
        verbose_name_plural = "attribution indexes"

    def __str__(self) -> str:
        return f"{self.method} index of model {self.model_id} ({self.status})"

    @property
    def is_active(self) -> bool:
        return self.status in self.ACTIVE


class ModelContributorWeight(models.Model):
    """A contributor's share of a model's positive influence over its validation set: what the ledger
    pays by. A model's weights sum to exactly 1."""

    model = models.ForeignKey("factory.FineTunedModel", on_delete=models.CASCADE, related_name="contributor_weights")
    contributor = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="model_weights")
    weight = ExactDecimalField(max_digits=20, decimal_places=18)
    negative = models.FloatField(default=0.0, help_text="Mean negative influence per query (reported, not charged)")
    record_count = models.PositiveIntegerField(default=0)
    method = models.CharField(max_length=20, default=AttributionIndex.Method.GRADIENT)
    computed_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["model", "-weight", "contributor_id"]
        constraints = [models.UniqueConstraint(fields=["model", "contributor"], name="unique_weight_per_contributor")]

    def __str__(self) -> str:
        return f"model {self.model_id}: user {self.contributor_id} {self.weight:.4f}"

    @property
    def percent(self) -> Decimal:
        return (self.weight * 100).quantize(Decimal("0.1"))


class AttributionPublication(models.Model):
    """A model's contributor weights as published: the downloadable file and its Merkle root, frozen once.

    The chain's `ModelRegistry.setAttributionRoot` takes a model's root once, so this row is written once
    too (a rebuilt index does not replace it); the outbox row `attribution_root_set:<model id>` sends it.
    """

    model = models.OneToOneField("factory.FineTunedModel", on_delete=models.CASCADE,
                                 related_name="attribution_publication")
    root = models.CharField(max_length=66, help_text="StandardMerkleTree root over (account, weight in 1e-18 units)")
    document = models.JSONField(help_text="The weights file: the tree dump plus account -> users and weight")
    uri = models.CharField(max_length=300, help_text="Where the file is served (sent on-chain with the root)")
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"attribution root {self.root[:10]}… of model {self.model_id}"
