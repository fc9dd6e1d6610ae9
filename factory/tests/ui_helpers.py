"""Fixtures for the factory's page and API tests: a registered tiny base model, and one real adapter
trained once per session (factory.training, no worker) that model rows point at."""
import pytest
import torch

from factory import services
from factory.models import FineTunedModel, FineTuneJob, JobMetric
from factory.tests.conftest import LABELS, labelled_texts
from factory.tests.factories import developer, make_version, small_params
from factory.training import Example, TrainConfig, train
from factory.training.artifacts import model_card_render


@pytest.fixture
def dev_client():
    """A logged-in model developer's browser client (`.user` is the developer)."""
    from django.test import Client

    client = Client()
    user = developer(username="dev")
    client.force_login(user)
    client.user = user
    return client


@pytest.fixture
def tiny_bert(tiny_bert_dir):
    return services.base_model_register(path=str(tiny_bert_dir), name="tiny-bert")


@pytest.fixture(scope="session")
def trained_adapter(tiny_bert_dir, tmp_path_factory):
    """A real LoRA adapter of tiny-bert on the toy labelled set (a few seconds on CPU)."""
    torch.set_num_threads(1)
    config = TrainConfig(task="classification", model_path=str(tiny_bert_dir), labels=LABELS, lora_r=4, lora_alpha=8,
                         lora_dropout=0.0, target_modules=["query", "value"], epochs=1, learning_rate=5e-3,
                         batch_size=8, max_length=32, eval_split=0.25, seed=7, progress_every_s=0, cpu_threads=1)
    examples = [Example(text=t, label=lab, record_id=i) for i, (t, lab) in enumerate(labelled_texts(24))]
    return train(config, examples, output_dir=tmp_path_factory.mktemp("adapter"))


def make_job(*, owner=None, version=None, base=None, status=FineTuneJob.Status.QUEUED, curve: int = 0,
             **params) -> FineTuneJob:
    """A job row created through the service (validated, queued after a commit that tests never reach),
    then moved to `status` with `curve` training points and one evaluation per 4 steps."""
    owner = owner or developer()
    version = version or make_version(n=24, slug=f"dn{FineTuneJob.objects.count()}")
    job = services.finetune_job_create(owner=owner, datanet_version=version, base_model=base,
                                       task="classification", params=small_params(**params))
    job.refresh_from_db()  # the service appended to the log with an UPDATE
    if curve:
        for step in range(1, curve + 1):
            JobMetric.objects.create(job=job, kind="train", step=step, epoch=step / curve, loss=1.2 - step * 0.05,
                                     values={"learning_rate": 1e-3})
            if step % 4 == 0:
                JobMetric.objects.create(job=job, kind="eval", step=step, epoch=step // 4, loss=1.1 - step * 0.04,
                                         values={"eval_loss": 1.1 - step * 0.04, "accuracy": 0.4 + step * 0.05,
                                                 "macro_f1": 0.3 + step * 0.05})
        job.step = job.total_steps = curve
        job.loss = 1.2 - curve * 0.05
    job.status = status
    job.save()
    return job


def make_model(*, job: FineTuneJob, result) -> FineTunedModel:
    """The model row that finetune_job_finish would write, pointing at the session's adapter."""
    version, base = job.datanet_version, job.base_model
    card = model_card_render(
        name=job.name, task=job.task, base_model=base.name, base_model_source=base.source, datanet=version.datanet.name,
        version_number=version.number, merkle_root=version.merkle_root, hyperparameters=job.hyperparameters,
        metrics=result.metrics, best_epoch=result.best_epoch, contributors=[("alice<b>", 12), ("bob|x", 4)],
        adapter_sha256=result.adapter_sha256, labels=LABELS, train_examples=result.train_examples,
        eval_examples=result.eval_examples, train_seconds=result.train_seconds, device="cpu (fp32)")
    job.refresh_from_db()
    job.status, job.metrics, job.best_epoch = FineTuneJob.Status.SUCCEEDED, result.metrics, result.best_epoch
    job.save()
    return FineTunedModel.objects.create(
        job=job, name=job.name, base_model=base, datanet_version=version, version_root=version.merkle_root,
        task=job.task, labels=LABELS, adapter_dir=str(result.adapter_dir), adapter_sha256=result.adapter_sha256,
        metrics=result.metrics, model_card=card, developer=job.owner)
