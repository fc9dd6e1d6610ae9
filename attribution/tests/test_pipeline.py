"""The post-training canvas (attribution/pipeline.py): train -> attribution index -> registration with the
published root, run through Celery's own chain (`apply`: the same canvas, executed in this process)."""
from __future__ import annotations

import pytest

from attribution.models import AttributionIndex, AttributionPublication
from attribution.pipeline import post_training
from attribution.publication import ZERO_ROOT
from attribution.tests.factories import TRAIN_PARAMS, make_version
from factory import services as factory_services
from factory.models import FineTunedModel, FineTuneJob
from factory.selectors import finetuned_model_id
from factory.tests.factories import developer
from ledger.models import LedgerTransaction
from serving.models import SpanIndex

pytestmark = [pytest.mark.django_db, pytest.mark.slow]
MODEL_KINDS = ["model_register", "attribution_root_set"]  # the version's own rows (datanet, stakes, root) aside


@pytest.fixture
def base(attr_base_dir, models_dir, settings):
    settings.FACTORY_PROGRESS_SECONDS = 0
    settings.FACTORY_CPU_THREADS = 1
    return factory_services.base_model_register(path=str(attr_base_dir), name="tiny-bert-pipeline")


def _job(version, base, task="classification"):
    job = factory_services.finetune_job_create(owner=developer(), datanet_version=version, base_model=base,
                                               task=task, params=dict(TRAIN_PARAMS, epochs=1))
    job.refresh_from_db()  # _queue wrote the training step's id on the row (the message is sent on commit)
    return job


def test_the_factory_queues_the_canvas_declared_here():
    assert factory_services._pipeline is post_training  # registered by AttributionConfig.ready
    canvas = post_training(7, "task-7")
    assert [t.task for t in canvas.tasks] == ["factory.tasks.finetune_job_run_task", "attribution.tasks.model_index_task",
                                              "attribution.tasks.model_register_task"]
    assert canvas.tasks[0].args == (7,) and canvas.tasks[0].options["task_id"] == "task-7"


def test_train_index_and_register_with_the_real_root(base):
    job = _job(make_version(), base)
    post_training(job.id, job.celery_task_id).apply()  # the id _queue wrote on the row
    job.refresh_from_db()
    assert job.status == FineTuneJob.Status.SUCCEEDED, job.error
    model = FineTunedModel.objects.get(job=job)
    index = AttributionIndex.objects.get(model=model)
    assert index.status == AttributionIndex.Status.READY, index.error
    publication = AttributionPublication.objects.get(model=model)
    (row,) = LedgerTransaction.objects.filter(kind__in=MODEL_KINDS)  # one chain write: the registration carries the root
    assert row.kind == "model_register" and row.idempotency_key == f"model_register:{model.pk}"
    assert row.payload["attribution_root"] == publication.root != ZERO_ROOT
    assert row.payload["adapter_hash"] == "0x" + model.adapter_sha256
    # the same message again (a redelivery): nothing is trained, built or written twice
    post_training(job.id, job.celery_task_id).apply()
    assert FineTunedModel.objects.count() == 1 and LedgerTransaction.objects.filter(kind__in=MODEL_KINDS).count() == 1
    assert AttributionIndex.objects.get(model=model).finished_at == index.finished_at
    # an older message of a re-sent job hands nothing on
    assert finetuned_model_id(job_id=job.id, dispatch_id="an-older-message") is None


def test_a_failed_job_stops_at_no_model(base):
    version = make_version()
    job = _job(version, base)
    version.delete()  # the training step fails with a reason: no model, so nothing to index or register
    post_training(job.id, job.celery_task_id).apply()
    job.refresh_from_db()
    assert job.status == FineTuneJob.Status.FAILED and "version" in job.error.lower()
    assert not FineTunedModel.objects.exists() and not LedgerTransaction.objects.filter(kind__in=MODEL_KINDS).exists()


def test_a_generator_gets_its_span_index_and_a_zero_root(tiny_gpt2_base, models_dir, settings):
    settings.FACTORY_PROGRESS_SECONDS = 0
    version = make_version(slug="plays")
    version.datanet.task = "generation"
    version.datanet.save()
    job = factory_services.finetune_job_create(owner=developer(), datanet_version=version, base_model=tiny_gpt2_base,
                                               task="generation", params=dict(TRAIN_PARAMS, epochs=1,
                                                                              target_modules=["c_attn"]))
    job.refresh_from_db()
    post_training(job.id, job.celery_task_id).apply()
    job.refresh_from_db()
    assert job.status == FineTuneJob.Status.SUCCEEDED, job.error
    model = FineTunedModel.objects.get(job=job)
    assert AttributionIndex.objects.get(model=model).status == AttributionIndex.Status.UNSUPPORTED
    assert SpanIndex.objects.filter(version=version, base_model=model.base_model).exists()  # serving's answer
    assert LedgerTransaction.objects.get(kind="model_register").payload["attribution_root"] == ZERO_ROOT


@pytest.fixture
def tiny_gpt2_base(tmp_path_factory):
    from factory.training.tiny import build_tiny_gpt2

    path = build_tiny_gpt2(tmp_path_factory.mktemp("pipeline-gpt2"))
    return factory_services.base_model_register(path=str(path), name="tiny-gpt2-pipeline")
