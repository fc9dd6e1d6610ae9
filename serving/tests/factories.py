"""Fine-tuned models over the tiny adapters of conftest.py (random, never trained: no TrainResult to finish a
job with), written with the ORM but with the adapter's real sha256 and the version's real root."""
from __future__ import annotations

import json

from accounts.tests.factories import UserFactory
from factory.models import BaseModel, FineTunedModel, FineTuneJob
from factory.services import finetuned_model_slug_assign
from factory.training.artifacts import ADAPTER_FILE, file_sha256


def make_model(*, base_dir, adapter_dir, version=None, developer=None, status=FineTuneJob.Status.SUCCEEDED):
    meta = json.loads((adapter_dir / "factory.json").read_text())
    developer = developer or UserFactory()
    base, _ = BaseModel.objects.get_or_create(
        name=f"tiny-{base_dir.name}", defaults={"source_kind": BaseModel.SourceKind.LOCAL, "source": str(base_dir),
                                                "tasks": ["classification", "generation"]})
    job = FineTuneJob.objects.create(owner=developer, name="tiny", datanet_version=version, base_model=base,
                                     task=meta["task"], status=status)
    model = FineTunedModel.objects.create(
        job=job, name=f"tiny {adapter_dir.name}", base_model=base, datanet_version=version, task=meta["task"],
        labels=meta["labels"], adapter_dir=str(adapter_dir), adapter_sha256=file_sha256(adapter_dir / ADAPTER_FILE),
        version_root=version.merkle_root if version else "", developer=developer)
    return finetuned_model_slug_assign(model=model)
