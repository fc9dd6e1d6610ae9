"""Test data for the attribution app: a tiny Datanet version built with the ORM and a LoRA classifier
really trained on it (factory.training on a tiny random BERT), registered as a FineTunedModel."""
from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from accounts.tests.factories import UserFactory
from core.roles import MODEL_DEVELOPER
from datanets.models import Contribution, Datanet, DatanetVersion, Record

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
    """Train the tiny classifier for a few steps on `rows`; returns the adapter folder."""
    from factory.training import Example, TrainConfig, train

    rows = rows or labelled_rows()
    config = TrainConfig(task="classification", model_path=str(base_dir), labels=list(LABELS), cpu_threads=1,
                         checkpoint_every=1000, **TRAIN_PARAMS)
    result = train(config, [Example(text=t, label=label) for t, label in rows], output_dir=out_dir)
    return Path(result.adapter_dir)


def make_version(*, rows: list[tuple[str, str]] | None = None, contributors: int = CONTRIBUTORS,
                 slug: str = "finance") -> DatanetVersion:
    """A Datanet whose records are dealt round-robin to `contributors` users, frozen into version 1.

    Records are created in row order, so ordering by id gives the rows back in order (as the trainer saw them).
    """
    owner = UserFactory()
    rows = rows or labelled_rows()
    datanet = Datanet.objects.create(name=slug.title(), slug=slug, task="classification", labels=list(LABELS),
                                     owner=owner)
    people = [UserFactory() for _ in range(contributors)]
    parts = [Contribution.objects.create(datanet=datanet, contributor=p, file_name=f"part{c}.csv",
                                         file_sha256=f"{c:064d}", status=Contribution.Status.ACCEPTED)
             for c, p in enumerate(people)]
    records = []
    for i, (text, label) in enumerate(rows):
        c = i % contributors
        records.append(Record.objects.create(
            datanet=datanet, contribution=parts[c], contributor=people[c], text=text, label=label, row_number=i,
            sha256=hashlib.sha256(f"{text}\x00{label}".encode()).hexdigest()))
    version = DatanetVersion.objects.create(datanet=datanet, number=1, merkle_root="0x" + "12" * 32,
                                            record_count=len(records), contributor_count=contributors,
                                            created_by=owner)
    version.records.set(records)
    return version


def make_model(*, adapter_src: Path, base_dir: Path, workdir: Path, version: DatanetVersion | None = None,
               task: str = "classification", developer=None):
    """A FineTunedModel row over a copy of a trained adapter (each test gets its own model folder)."""
    from factory.models import BaseModel, FineTunedModel, FineTuneJob

    version = version or make_version()
    developer = developer or UserFactory(roles=[MODEL_DEVELOPER])
    base, _ = BaseModel.objects.get_or_create(
        name="tiny-bert-attr", defaults={"source_kind": BaseModel.SourceKind.LOCAL, "source": str(base_dir),
                                         "tasks": ["classification"]})
    job = FineTuneJob.objects.create(owner=developer, name="tiny", datanet_version=version, base_model=base, task=task,
                                     hyperparameters=dict(TRAIN_PARAMS), status=FineTuneJob.Status.SUCCEEDED)
    model_dir = workdir / f"model-{job.pk}"
    shutil.copytree(adapter_src, model_dir / "adapter")
    return FineTunedModel.objects.create(
        job=job, name="tiny classifier", base_model=base, datanet_version=version, version_root=version.merkle_root,
        task=task, labels=list(LABELS), adapter_dir=str(model_dir / "adapter"), adapter_sha256="ab" * 32,
        developer=developer)
