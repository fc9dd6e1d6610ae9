"""A real Celery worker on the gpu queue is SIGKILLed mid-training; a worker started afterwards finds the
orphaned job (its worker stopped beating), re-queues it, and the training resumes from the last checkpoint."""
import time

import pytest
from peft import PeftModel
from transformers import AutoModelForSequenceClassification

from factory import services
from factory.models import FineTunedModel, FineTuneJob
from factory.tests.factories import developer, make_version, small_params
from factory.training import checkpoint_step

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

WORKER_ENV = {"FACTORY_CHECKPOINT_EVERY": 4, "FACTORY_PROGRESS_SECONDS": 0, "FACTORY_CPU_THREADS": 1,
              "FACTORY_RECOVERY_SECONDS": 1, "WORKER_STALE_SECONDS": 3}


def wait_for(predicate, *, timeout: float, what: str, worker=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}\n{worker.log() if worker else ''}")


def test_sigkilled_worker_job_resumes_from_its_checkpoint(start_worker, tiny_bert_dir, settings, tmp_path):
    settings.MODELS_DIR = tmp_path
    tiny_bert = services.base_model_register(path=str(tiny_bert_dir), name="tiny-bert")
    first = start_worker(queues="gpu", MODELS_DIR=tmp_path, **WORKER_ENV)
    # 150 training rows in batches of 4, 2 epochs: 76 steps, so the kill lands well before the end.
    job = services.finetune_job_create(
        owner=developer(), datanet_version=make_version(n=200), base_model=tiny_bert, task="classification",
        params=small_params(batch_size=4))

    def checkpointed():
        row = FineTuneJob.objects.get(pk=job.pk)
        assert row.status in ("queued", "running"), row.error
        return row.checkpoint_step >= 4

    wait_for(checkpointed, timeout=120, what="the first checkpoint", worker=first)
    first.kill()  # SIGKILL, no chance to clean up
    killed = FineTuneJob.objects.get(pk=job.pk)
    assert killed.status == "running" and killed.worker == first.hostname
    assert 0 < killed.checkpoint_step < killed.total_steps == 76
    on_disk = checkpoint_step(killed.output_dir)
    assert on_disk >= killed.checkpoint_step  # the row is written after the files

    second = start_worker(queues="gpu", MODELS_DIR=tmp_path, **WORKER_ENV)
    done = wait_for(lambda: FineTuneJob.objects.filter(pk=job.pk, status__in=FineTuneJob.TERMINAL).first(),
                    timeout=180, what="the resumed job to finish", worker=second)
    assert done.status == "succeeded", done.error
    assert done.worker == second.hostname and done.attempts == 2 and done.step == 76
    assert done.resumed_from_step == on_disk > 0  # not step 0
    assert "stopped answering; re-queued" in done.log
    assert f"resumed from the checkpoint at step {on_disk}" in done.log

    model = FineTunedModel.objects.get(job=done)
    base = AutoModelForSequenceClassification.from_pretrained(str(tiny_bert_dir), num_labels=3)
    PeftModel.from_pretrained(base, model.adapter_dir)  # plain PEFT loads the artifact
