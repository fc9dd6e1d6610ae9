"""Test data built directly with the ORM (tiny Datanets, versions and jobs); no ingest code involved."""
import hashlib

from accounts.tests.factories import UserFactory
from core.roles import MODEL_DEVELOPER
from datanets.models import Contribution, Datanet, DatanetVersion, Record
from factory.tests.conftest import LABELS, labelled_texts, plain_texts


def make_version(*, n: int = 48, task: str = "classification", labels: list[str] | None = None,
                 rows: list[tuple[str, str]] | None = None, contributors: int = 2, slug: str = "finance"):
    """A Datanet with `n` records split among `contributors` users, frozen into version 1."""
    owner = UserFactory()
    labels = LABELS if labels is None else labels
    datanet = Datanet.objects.create(name=slug.title(), slug=slug, task=task, labels=labels if task == "classification"
                                     else [], owner=owner)
    if rows is None:
        rows = labelled_texts(n) if task == "classification" else [(t, "") for t in plain_texts(n)]
    people = [UserFactory() for _ in range(contributors)]
    records = []
    for c, person in enumerate(people):
        contribution = Contribution.objects.create(
            datanet=datanet, contributor=person, file_name=f"part{c}.csv", file_sha256=f"{c:064d}",
            status=Contribution.Status.ACCEPTED, record_count=0)
        for i, (text, label) in enumerate(rows[c::contributors]):
            records.append(Record.objects.create(
                datanet=datanet, contribution=contribution, contributor=person, text=text, label=label,
                sha256=hashlib.sha256(f"{text}\x00{label}".encode()).hexdigest(), row_number=i))
    version = DatanetVersion.objects.create(datanet=datanet, number=1, merkle_root="0x" + "12" * 32,
                                            record_count=len(records), contributor_count=contributors,
                                            created_by=owner)
    version.records.set(records)
    return version


def developer(**kw):
    return UserFactory(roles=[MODEL_DEVELOPER], **kw)


def small_params(**kw) -> dict:
    params = {"lora_r": 4, "lora_alpha": 8, "lora_dropout": 0.0, "target_modules": ["query", "value"], "epochs": 2,
              "learning_rate": 5e-3, "batch_size": 8, "max_length": 32, "eval_split": 0.25, "seed": 7}
    params.update(kw)
    return params
