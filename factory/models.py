from django.conf import settings
from django.db import models


class BaseModel(models.Model):
    """A base model that LoRA adapters are trained on: a local Hugging Face folder, a Python package
    that ships one, or a hub id (machines with internet). Target modules come from inspecting it."""

    class SourceKind(models.TextChoices):
        LOCAL = "local", "Local folder"
        PACKAGE = "package", "Python package (get_model_path())"
        HUB = "hub", "Hugging Face hub id"

    class BuildStatus(models.TextChoices):
        READY = "ready", "Ready"
        QUEUED = "queued", "Queued for pre-training"
        BUILDING = "building", "Pre-training"
        FAILED = "failed", "Pre-training failed"

    name = models.CharField(max_length=120, unique=True)
    source_kind = models.CharField(max_length=10, choices=SourceKind.choices, default=SourceKind.LOCAL)
    source = models.CharField(max_length=500, help_text="Folder path, package name or hub id")
    description = models.TextField(blank=True)
    architecture = models.CharField(max_length=60, blank=True)
    tasks = models.JSONField(default=list, help_text="Tasks it supports: classification, generation")
    parameter_count = models.BigIntegerField(default=0)
    max_length = models.PositiveIntegerField(default=512)
    hidden_size = models.PositiveIntegerField(default=0)
    num_layers = models.PositiveIntegerField(default=0)
    vocab_size = models.PositiveIntegerField(default=0)
    target_modules = models.JSONField(default=list, help_text="Linear layer names LoRA can wrap")
    default_target_modules = models.JSONField(default=list)
    module_shapes = models.JSONField(default=dict, blank=True)
    # The chat template conversations are rendered with (Jinja, as in tokenizer_config.json): one set for this
    # base in the catalog, or the tokenizer's own read at registration; "" when the base has none.
    chat_template = models.TextField(blank=True)
    chat_template_source = models.CharField(max_length=10, blank=True, help_text="catalog, tokenizer or empty")
    is_active = models.BooleanField(default=True)
    # A base built on this machine (the demo's chat base) is pre-trained by a gpu-queue job; it joins the
    # catalog (is_active) when ready. `build`: token, step, total_steps, loss, first_loss, seconds, error.
    status = models.CharField(max_length=10, choices=BuildStatus.choices, default=BuildStatus.READY)
    build = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def build_percent(self) -> float:
        total = self.build.get("total_steps") or 0
        return round(100 * (self.build.get("step") or 0) / total, 1) if total else 0.0


class FineTuneJob(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    class Task(models.TextChoices):
        CLASSIFICATION = "classification", "Text classification"
        GENERATION = "generation", "Text generation"

    ACTIVE = (Status.QUEUED, Status.RUNNING)
    TERMINAL = (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED)

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="finetune_jobs")
    name = models.CharField(max_length=120)
    # SET_NULL, not CASCADE: a vanished version or model must fail the job with a reason, not erase it.
    datanet_version = models.ForeignKey("datanets.DatanetVersion", null=True, on_delete=models.SET_NULL,
                                        related_name="finetune_jobs")
    base_model = models.ForeignKey(BaseModel, null=True, on_delete=models.SET_NULL, related_name="jobs")
    datanet_version_label = models.CharField(max_length=200, blank=True, help_text="Kept if the version goes")
    base_model_label = models.CharField(max_length=120, blank=True)
    task = models.CharField(max_length=20, choices=Task.choices)
    preset = models.CharField(max_length=20, blank=True)
    hyperparameters = models.JSONField(default=dict)

    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED, db_index=True)
    cancel_requested = models.BooleanField(default=False)
    error = models.TextField(blank=True)
    log = models.TextField(blank=True)
    attempts = models.PositiveIntegerField(default=0)
    worker = models.CharField(max_length=255, blank=True, help_text="Hostname of the worker running it")
    celery_task_id = models.CharField(max_length=255, blank=True)
    # Live progress, written every few seconds by the worker.
    step = models.PositiveIntegerField(default=0)
    total_steps = models.PositiveIntegerField(default=0)
    epoch = models.FloatField(default=0)
    loss = models.FloatField(null=True, blank=True)
    learning_rate = models.FloatField(null=True, blank=True)
    examples_per_s = models.FloatField(null=True, blank=True)
    tokens_per_s = models.FloatField(null=True, blank=True)
    eta_seconds = models.FloatField(null=True, blank=True)
    checkpoint_step = models.PositiveIntegerField(default=0)
    resumed_from_step = models.PositiveIntegerField(default=0)
    metrics = models.JSONField(default=dict, blank=True, help_text="The best epoch's evaluation")
    best_epoch = models.PositiveIntegerField(null=True, blank=True)
    output_dir = models.CharField(max_length=500, blank=True)

    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"job {self.pk}: {self.name}"

    @property
    def is_active(self) -> bool:
        return self.status in self.ACTIVE

    @property
    def progress_percent(self) -> float:
        return round(100 * self.step / self.total_steps, 1) if self.total_steps else 0.0


class JobMetric(models.Model):
    """One point of a job's curves: a training report (loss, lr, throughput) or an epoch's evaluation."""

    class Kind(models.TextChoices):
        TRAIN = "train", "Training"
        EVAL = "eval", "Evaluation"

    job = models.ForeignKey(FineTuneJob, on_delete=models.CASCADE, related_name="metric_rows")
    kind = models.CharField(max_length=5, choices=Kind.choices)
    step = models.PositiveIntegerField()
    epoch = models.FloatField()
    loss = models.FloatField(null=True, blank=True)
    values = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["job", "step", "id"]
        constraints = [models.UniqueConstraint(fields=["job", "kind", "step"], name="unique_metric_point")]

    def __str__(self) -> str:
        return f"{self.job_id} {self.kind} @{self.step}"


class FineTunedModel(models.Model):
    """A trained adapter: the artifact people try, download and pay to use."""

    class Status(models.TextChoices):
        READY = "ready", "Ready"
        REGISTERED = "registered", "Registered on-chain"

    class MergedState(models.TextChoices):
        NONE = "", "Not requested"
        QUEUED = "queued", "Merge queued"
        RUNNING = "running", "Merging"
        DONE = "done", "Merged"
        FAILED = "failed", "Merge failed"

    job = models.OneToOneField(FineTuneJob, on_delete=models.PROTECT, related_name="model")
    name = models.CharField(max_length=120)
    # The name integrators call it by (`model=` of the OpenAI-compatible API): `<name>-<id>`, set once when
    # the model is created (factory.services.finetuned_model_slug_assign) so renaming never breaks a caller.
    slug = models.SlugField(max_length=80, blank=True, db_index=True)
    base_model = models.ForeignKey(BaseModel, null=True, on_delete=models.SET_NULL, related_name="finetuned")
    datanet_version = models.ForeignKey("datanets.DatanetVersion", null=True, on_delete=models.SET_NULL,
                                        related_name="finetuned_models")
    version_root = models.CharField(max_length=66, blank=True, help_text="Merkle root of the training version")
    task = models.CharField(max_length=20, choices=FineTuneJob.Task.choices)
    labels = models.JSONField(default=list, blank=True)
    adapter_dir = models.CharField(max_length=500)
    adapter_sha256 = models.CharField(max_length=64, db_index=True)
    metrics = models.JSONField(default=dict, blank=True)
    model_card = models.TextField(blank=True)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.READY, db_index=True)
    developer = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="models")
    # The merged export (base + adapter folded in, safetensors, zipped): written on request by a `cpu` task
    # (factory.exports) and kept, since a model's adapter and base never change.
    merged_state = models.CharField(max_length=10, choices=MergedState.choices, default=MergedState.NONE, blank=True)
    merged_progress = models.FloatField(default=0.0)
    merged_error = models.TextField(blank=True)
    merged_path = models.CharField(max_length=500, blank=True, help_text="The merged model's zip")
    merged_bytes = models.BigIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [models.UniqueConstraint(fields=["slug"], condition=~models.Q(slug=""),
                                               name="unique_finetuned_model_slug")]

    def __str__(self) -> str:
        return self.name
