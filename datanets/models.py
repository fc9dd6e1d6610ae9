from decimal import Decimal

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

from core.fields import ExactDecimalField
from datanets import neardup

# OPEN amounts in whole tokens with 18 decimals, as on-chain.
TOKEN_DIGITS = dict(max_digits=38, decimal_places=18)


class Datanet(models.Model):
    class Domain(models.TextChoices):
        FINANCE = "finance", "Finance"
        HEALTHCARE = "healthcare", "Healthcare"
        DEPIN = "depin", "DePIN"
        GAMING = "gaming", "Gaming"
        OTHER = "other", "Other"

    class Task(models.TextChoices):
        CLASSIFICATION = "classification", "Text classification"
        GENERATION = "generation", "Text generation"
        CHAT = "chat", "Instruction / chat"

    name = models.CharField(max_length=120)
    slug = models.SlugField(max_length=120, unique=True)
    domain = models.CharField(max_length=20, choices=Domain.choices, default=Domain.OTHER, db_index=True)
    description = models.TextField(blank=True)
    task = models.CharField(max_length=20, choices=Task.choices, default=Task.CLASSIFICATION)
    labels = models.JSONField(default=list, blank=True, help_text="Allowed labels (classification only).")
    license = models.CharField(max_length=120, blank=True)
    max_text_length = models.PositiveIntegerField(default=10_000)
    min_stake = ExactDecimalField(**TOKEN_DIGITS, default=Decimal("10"))
    slash_fraction = models.DecimalField(
        max_digits=5, decimal_places=4, default=Decimal("0.5"),
        validators=[MinValueValidator(Decimal("0")), MaxValueValidator(Decimal("1"))],
    )
    near_duplicate_threshold = models.FloatField(
        default=neardup.DEFAULT_THRESHOLD,
        validators=[MinValueValidator(neardup.MIN_THRESHOLD), MaxValueValidator(1.0)],
        help_text="Records whose word/word-pair Jaccard similarity reaches this are one near-duplicate cluster "
                  "(credit to its earliest accepted copy). Applies to records ingested after a change.")
    harm_threshold = models.FloatField(
        default=0.0, validators=[MinValueValidator(0.0), MaxValueValidator(1.0)],
        help_text="A contributor whose mean normalised influence on a model's validation set is significantly "
                  "negative and below minus this is flagged to the curators (docs/attribution.md, harmful data).")
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="owned_datanets")
    curators = models.ManyToManyField(settings.AUTH_USER_MODEL, blank=True, related_name="curated_datanets")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Contribution(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending", "Pending review"
        ACCEPTED = "accepted", "Accepted"
        REJECTED = "rejected", "Rejected"

    class IngestState(models.TextChoices):
        MAPPING = "mapping", "Needs column mapping"
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Ingesting"
        DONE = "done", "Ingested"
        FAILED = "failed", "Failed"

    class Bond(models.TextChoices):
        NONE = "", "Not bonded"
        BONDED = "bonded", "Bonded"
        RELEASED = "released", "Released"
        SLASHED = "slashed", "Slashed"

    datanet = models.ForeignKey(Datanet, on_delete=models.CASCADE, related_name="contributions")
    contributor = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="contributions")
    file = models.FileField(upload_to="uploads/%Y/%m/", blank=True)
    file_name = models.CharField(max_length=255)
    file_sha256 = models.CharField(max_length=64, db_index=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING, db_index=True)
    ingest_state = models.CharField(max_length=10, choices=IngestState.choices, default=IngestState.QUEUED)
    ingest_progress = models.FloatField(default=0.0)
    ingest_errors = models.JSONField(default=list, blank=True)
    options = models.JSONField(default=dict, blank=True, help_text="Column mapping, drop_bad_rows, ...")
    file_size = models.BigIntegerField(default=0)
    format = models.CharField(max_length=10, blank=True, help_text="csv, tsv, jsonl, parquet or text")
    compression = models.CharField(max_length=10, blank=True)
    encoding = models.CharField(max_length=40, blank=True)
    rows_total = models.PositiveIntegerField(default=0, help_text="Data rows read from the file")
    rows_bad = models.PositiveIntegerField(default=0, help_text="Rows that failed validation")
    record_count = models.PositiveIntegerField(default=0)
    duplicates_dropped = models.PositiveIntegerField(default=0)
    conflicts = models.PositiveIntegerField(default=0)
    # Records per label, counted at ingest: the Datanet page's label chart and counts sum these over a few
    # contributions instead of grouping a million records on every view (docs/datanets.md, browsing).
    label_counts = models.JSONField(default=dict, blank=True, help_text="Stored records per label, counted at ingest")
    stake = ExactDecimalField(**TOKEN_DIGITS, default=Decimal("0"))
    curator = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                related_name="reviewed_contributions")
    reason = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    decided_at = models.DateTimeField(null=True, blank=True)
    # An accepted stake stays bonded on-chain until about `bonded_until` (LEDGER_STAKE_BOND_SECONDS after the
    # accept; the chain's clock decides): slashable for harm until then, released by a beat task after.
    bond = models.CharField(max_length=10, choices=Bond.choices, default=Bond.NONE, blank=True, db_index=True)
    bonded_until = models.DateTimeField(null=True, blank=True)
    # Curator-held evaluation data (docs/datanets.md): frozen in versions like any records, never trained on,
    # the attribution build's validation queries, never paid; uploaded by a curator only, with no stake.
    is_evaluation = models.BooleanField(
        default=False, help_text="Curator-held evaluation data: in versions, never trained on, never paid, no stake.")

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["datanet", "file_sha256"], name="unique_file_per_datanet"),
        ]

    def __str__(self) -> str:
        return f"{self.file_name} -> {self.datanet}"


class Record(models.Model):
    # `datanet` and `contributor` copy the contribution's (whose foreign key the database enforces) so
    # Datanet-wide queries need no join. The database does not enforce them: in a bulk ingest each
    # enforced key costs a trigger per row, about a quarter of the insert (benchmarks/ingest.md).
    # Django still applies on_delete. The datanet prefix of the (datanet, sha256) index serves lookups.
    datanet = models.ForeignKey(Datanet, on_delete=models.CASCADE, related_name="records", db_index=False,
                                db_constraint=False)
    # Indexed by (contribution, id) below, not alone: that index's prefix serves the cascade and a
    # contribution's records, and the whole of it a review-status page in id order (keyset).
    contribution = models.ForeignKey(Contribution, on_delete=models.CASCADE, related_name="records", db_index=False)
    # Indexed by (contributor, datanet, id) below, which serves the on_delete check (a user's records) too.
    contributor = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="records",
                                    db_constraint=False, db_index=False)
    text = models.TextField()
    label = models.CharField(max_length=120, blank=True)
    # On PostgreSQL both hash columns use the "C" collation (migration 0005: bytewise compares, about a
    # quarter faster to index in bulk ingest). An AlterField of them would drop it: re-apply it then.
    sha256 = models.CharField(max_length=64, help_text="sha256 of the canonical (text, label) form")
    text_sha256 = models.CharField(max_length=64, blank=True, default="", help_text="sha256 of the canonical text")
    row_number = models.PositiveIntegerField(default=0)
    is_conflict = models.BooleanField(default=False, help_text="Same text with another label elsewhere")
    # Near-duplicates (datanets/neardup.py): the MinHash signature (128 bytes), and for a record that joined
    # a cluster at ingest, the cluster's root (an earlier record) and the exact similarity to it. A root has
    # none: its cluster key is its own id. Not enforced (like the keys above); a deleted root leaves the
    # id as a plain cluster key.
    minhash = models.BinaryField(null=True, blank=True, editable=False)
    near_dup_of = models.ForeignKey("self", null=True, blank=True, on_delete=models.DO_NOTHING, db_constraint=False,
                                    db_index=False, related_name="+")
    near_dup_similarity = models.FloatField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        # Full-text search has an index of its own, made per database by migration 0012 (PostgreSQL: GIN on
        # to_tsvector('simple', text); SQLite: the FTS5 table datanets_record_fts kept by triggers); on
        # PostgreSQL migration 0013 raises its statistics target, so that the planner knows a rare word is rare.
        indexes = [models.Index(fields=["datanet", "sha256"]), models.Index(fields=["datanet", "text_sha256"]),
                   # Browsing by contributor in id order (keyset pages); its prefix is the user's records.
                   models.Index(fields=["contributor", "datanet", "id"], name="datanets_record_contrib_browse"),
                   # A review status's records (a few contributions, the pending ones last in id order) in id
                   # order: without it a status page walked the id order to reach them (~0.6 s at 1M records).
                   models.Index(fields=["contribution", "id"], name="datanets_record_by_contrib"),
                   # Conflicts are few: the Datanet page counts them from this small partial index.
                   models.Index(fields=["datanet"], condition=models.Q(is_conflict=True), name="datanets_record_conflicts")]

    def __str__(self) -> str:
        return f"record {self.pk}"


class DatanetVersion(models.Model):
    """An immutable snapshot of a Datanet's accepted records."""

    class ExportState(models.TextChoices):
        QUEUED = "queued", "Export queued"
        RUNNING = "running", "Exporting"
        DONE = "done", "Exported"
        FAILED = "failed", "Export failed"

    datanet = models.ForeignKey(Datanet, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    records = models.ManyToManyField(Record, related_name="versions")
    merkle_root = models.CharField(max_length=66)
    record_count = models.PositiveIntegerField(default=0)
    contributor_count = models.PositiveIntegerField(default=0, help_text="Contributors of training records")
    evaluation_count = models.PositiveIntegerField(
        default=0, help_text="Records of curator-held evaluation contributions (in record_count and the root)")
    label_counts = models.JSONField(default=dict, blank=True)
    export_path = models.CharField(max_length=500, blank=True, help_text="Folder of the Arrow dataset export")
    # The exports (Parquet, JSONL, Arrow) are written by a `cpu` task after the version is committed.
    export_state = models.CharField(max_length=10, choices=ExportState.choices, default=ExportState.QUEUED)
    export_progress = models.FloatField(default=0.0)
    export_error = models.TextField(blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["datanet", "-number"]
        constraints = [models.UniqueConstraint(fields=["datanet", "number"], name="unique_version_number")]

    def __str__(self) -> str:
        return f"{self.datanet.slug} v{self.number}"


class CurationDecision(models.Model):
    """The audit trail: who accepted or rejected which contribution, when and why. Never edited."""

    class Decision(models.TextChoices):
        ACCEPTED = "accepted", "Accepted"
        REJECTED = "rejected", "Rejected"
        SLASHED = "slashed", "Slashed after acceptance"

    contribution = models.ForeignKey(Contribution, on_delete=models.CASCADE, related_name="decisions")
    curator = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="curation_decisions")
    decision = models.CharField(max_length=10, choices=Decision.choices)
    reason = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.curator} {self.decision} contribution {self.contribution_id}"


class HarmFlag(models.Model):
    """A contributor whose records were, together, significantly harmful to a model trained on this Datanet.

    Written by the attribution step (a model's index build) with its evidence; curators slash the
    contributor's bonded contributions or dismiss it. `model_id` names a factory.FineTunedModel without a
    foreign key: datanets sits below factory in the data flow (design.md) and must not import it.
    """

    class Status(models.TextChoices):
        OPEN = "open", "Open"
        SLASHED = "slashed", "Slashed"
        DISMISSED = "dismissed", "Dismissed"

    datanet = models.ForeignKey(Datanet, on_delete=models.CASCADE, related_name="harm_flags")
    contributor = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="harm_flags")
    contributions = models.ManyToManyField(Contribution, related_name="harm_flags")
    model_id = models.PositiveBigIntegerField(db_index=True, help_text="The factory model the harm was measured on")
    model_name = models.CharField(max_length=200, blank=True)
    statistic = models.FloatField(help_text="T_c: mean normalised signed influence over the validation set (< 0)")
    null_bound = models.FloatField(help_text="The family-wise null bound T_c had to fall below (minus this)")
    harm_threshold = models.FloatField(help_text="The Datanet's harm threshold when flagged")
    evidence = models.JSONField(default=dict, blank=True,
                                help_text="validation_queries, records: [{record_id, contribution_id, label, score}]")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.OPEN, db_index=True)
    decided_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    decided_at = models.DateTimeField(null=True, blank=True)
    reason = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [models.UniqueConstraint(fields=["model_id", "contributor"], name="unique_harm_flag_per_model")]

    def __str__(self) -> str:
        return f"harm flag: user {self.contributor_id} on model {self.model_id} ({self.status})"


class PendingContribution(Contribution):
    """The curators' review queue in the admin: pending, ingested contributions."""

    class Meta:
        proxy = True
        verbose_name = "review queue item"
        verbose_name_plural = "review queue"
