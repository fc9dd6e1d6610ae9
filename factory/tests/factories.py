"""Test data for the factory's tests: Datanet versions built through the datanets services (real record
hashes and Merkle roots: datanets.tests.factories.DatanetVersionFactory), developers, small hyperparameters."""
from accounts.tests.factories import UserFactory
from core.roles import MODEL_DEVELOPER
from datanets.tests.factories import DatanetVersionFactory
from factory.tests.conftest import LABELS, labelled_texts, plain_texts


def make_version(*, n: int = 48, task: str = "classification", labels: list[str] | None = None,
                 rows: list[tuple[str, str]] | None = None, contributors: int = 2, slug: str = "finance"):
    """A Datanet with `n` records split among `contributors` users (row i to contributor i % contributors),
    uploaded, ingested, accepted and frozen into version 1 by the services."""
    labels = LABELS if labels is None else labels
    if rows is None:
        rows = labelled_texts(n) if task == "classification" else [(t, "") for t in plain_texts(n)]
    return DatanetVersionFactory(rows=rows, contributors=contributors, task=task,
                                 labels=labels if task == "classification" else [], slug=slug)


def developer(**kw):
    return UserFactory(roles=[MODEL_DEVELOPER], **kw)


def small_params(**kw) -> dict:
    params = {"lora_r": 4, "lora_alpha": 8, "lora_dropout": 0.0, "target_modules": ["query", "value"], "epochs": 2,
              "learning_rate": 5e-3, "batch_size": 8, "max_length": 32, "eval_split": 0.25, "seed": 7}
    params.update(kw)
    return params
