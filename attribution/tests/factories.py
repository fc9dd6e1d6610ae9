"""Test data for the attribution app: a tiny Datanet version built through the services and a LoRA classifier
really trained on its records (factory.training on a tiny random BERT), made a FineTunedModel by the service
that ends a fine-tune."""
from __future__ import annotations

import shutil
from pathlib import Path

from accounts.tests.factories import UserFactory
from core.roles import MODEL_DEVELOPER
from datanets.models import DatanetVersion
from datanets.tests.factories import DatanetVersionFactory, in_version_order

LABELS = ["negative", "neutral", "positive"]
WORDS = {
    "negative": ["loss", "fell", "decline", "weak", "cut"],
    "neutral": ["said", "located", "operates", "report", "meeting"],
    "positive": ["profit", "rose", "growth", "strong", "record"],
}
CONTRIBUTORS = 3
N_RECORDS = 36
TRAIN_PARAMS = {"lora_r": 4, "lora_alpha": 8, "lora_dropout": 0.0, "target_modules": ["query", "value"],
                "epochs": 3, "learning_rate": 1e-2, "batch_size": 8, "max_length": 32, "eval_split": 0.25, "seed": 7}


def labelled_rows(n: int = N_RECORDS) -> list[tuple[str, str]]:
    """A separable toy set: the label's words decide the label."""
    rows = []
    for i in range(n):
        label = LABELS[i % 3]
        words = WORDS[label]
        rows.append((f"the company {words[i % 5]} {words[(i + 2) % 5]} in quarter {i}", label))
    return rows


def train_adapter(base_dir: Path, out_dir: Path, rows: list[tuple[str, str]] | None = None) -> Path:
    """Train the tiny classifier for a few steps on `rows` (default: make_version's records in the order a
    fine-tune of that version reads them); returns the adapter folder."""
    from factory.training import Example, TrainConfig, train

    rows = rows or in_version_order(labelled_rows(), CONTRIBUTORS)
    # The trainer's defaults, as a fine-tune runs (the head starts as a linear probe: factory/training/head.py).
    config = TrainConfig(task="classification", model_path=str(base_dir), labels=list(LABELS), cpu_threads=1,
                         checkpoint_every=1000, **TRAIN_PARAMS)
    result = train(config, [Example(text=t, label=label) for t, label in rows], output_dir=out_dir)
    return Path(result.adapter_dir)


def make_version(*, rows: list[tuple[str, str]] | None = None, contributors: int = CONTRIBUTORS,
                 slug: str = "finance") -> DatanetVersion:
    """A Datanet whose rows are dealt round-robin to `contributors` users, each uploading, ingested, accepted and
    frozen into version 1 through the services (DatanetVersionFactory: real record hashes, the real root).

    Ordered by id, the records are `in_version_order(rows, contributors)`: what train_adapter trains on.
    """
    return DatanetVersionFactory(rows=rows or labelled_rows(), contributors=contributors, labels=list(LABELS),
                                 slug=slug)


def make_model(*, adapter_src: Path, base_dir: Path, workdir: Path, version: DatanetVersion | None = None,
               task: str = "classification", developer=None):
    """A FineTunedModel over a copy of a trained adapter (each test gets its own model folder), made by the
    service that ends a fine-tune (`finetune_job_finish`: the adapter's real sha256, the version's root, the
    model card), without training again."""
    from factory.models import BaseModel, FineTunedModel, FineTuneJob
    from factory.services import finetune_job_finish
    from factory.training.artifacts import ADAPTER_FILE, file_sha256
    from factory.training.types import TrainResult

    version = version or make_version()
    developer = developer or UserFactory(roles=[MODEL_DEVELOPER])
    base, _ = BaseModel.objects.get_or_create(
        name="tiny-bert-attr", defaults={"source_kind": BaseModel.SourceKind.LOCAL, "source": str(base_dir),
                                         "tasks": ["classification"]})
    job = FineTuneJob.objects.create(owner=developer, name="tiny classifier", datanet_version=version, base_model=base,
                                     task=task, hyperparameters=dict(TRAIN_PARAMS), status=FineTuneJob.Status.RUNNING)
    adapter = workdir / f"model-{job.pk}" / "adapter"
    shutil.copytree(adapter_src, adapter)
    finetune_job_finish(job_id=job.pk, result=TrainResult(
        adapter_dir=adapter, adapter_sha256=file_sha256(adapter / ADAPTER_FILE), best_epoch=TRAIN_PARAMS["epochs"],
        metrics={}, history=[], steps=0, resumed_from_step=0, train_examples=version.record_count, eval_examples=0,
        train_seconds=0.0, peak_memory_bytes=0, device="cpu", dtype="float32"))
    return FineTunedModel.objects.get(job=job)
