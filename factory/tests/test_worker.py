"""A real Celery worker on the gpu queue is SIGKILLed mid-training; a worker started afterwards finds the
orphaned job (its worker stopped beating), re-queues it, and the training resumes from the last checkpoint."""
import time

import pytest
from peft import PeftModel
from transformers import AutoModelForSequenceClassification

from core import testing
from factory import services
from factory.models import FineTunedModel, FineTuneJob
from factory.tests.factories import developer, make_version, small_params
from factory.training import checkpoint_step

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

WORKER_ENV = {"FACTORY_CHECKPOINT_EVERY": 4, "FACTORY_PROGRESS_SECONDS": 0, "FACTORY_CPU_THREADS": 1,
              "FACTORY_RECOVERY_SECONDS": 1, "WORKER_STALE_SECONDS": 3}


def wait_for(predicate, *, timeout: float, what: str, worker=None):
    return testing.wait_for(predicate, what, [worker] if worker else [], timeout=timeout, every=0.05)


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


def test_lost_message_is_sent_again_by_the_beat_task_once(start_worker, tiny_bert_dir, settings, tmp_path):
    """The broker loses a queued job's message; the beat task (on a real worker) finds the gpu queue empty
    and sends it again; the job runs once, and a second sweep sends nothing."""
    from config.celery import app
    from factory.tasks import finetune_jobs_redispatch_task

    settings.MODELS_DIR = tmp_path
    tiny_bert = services.base_model_register(path=str(tiny_bert_dir), name="tiny-bert")
    job = services.finetune_job_create(owner=developer(), datanet_version=make_version(n=40), base_model=tiny_bert,
                                       task="classification", params=small_params())
    first_id = FineTuneJob.objects.get(pk=job.pk).celery_task_id
    assert first_id
    app.control.purge()  # the message is lost (a broker restarted without its data)
    worker = start_worker(queues="cpu,gpu", MODELS_DIR=tmp_path, FACTORY_REDISPATCH_SECONDS=0, **WORKER_ENV)
    time.sleep(2)
    assert FineTuneJob.objects.get(pk=job.pk).status == "queued"  # nothing would ever run it
    finetune_jobs_redispatch_task.apply_async(queue="cpu")  # what beat sends every minute
    done = wait_for(lambda: FineTuneJob.objects.filter(pk=job.pk, status__in=FineTuneJob.TERMINAL).first(),
                    timeout=180, what="the re-sent job to finish", worker=worker)
    assert done.status == "succeeded", done.error
    assert done.attempts == 1 and done.celery_task_id != first_id and "its message was lost" in done.log
    assert FineTunedModel.objects.filter(job=done).count() == 1
    assert services.finetune_jobs_redispatch(older_than_s=0) == []  # finished: nothing to send
    # Intermediate checkpoints are gone; the adapter (the model) stays.
    out = tmp_path / "jobs" / str(job.pk)
    assert not (out / "checkpoint").exists() and not (out / "best").exists() and (out / "adapter").is_dir()
    wait_for(lambda: "intermediate checkpoints removed" in FineTuneJob.objects.get(pk=job.pk).log, timeout=30,
             what="the clean-up's log line (written after the commit)", worker=worker)
    assert services.finetune_job_disk_bytes(job=done) > 0


def test_soft_time_limit_fails_the_job_with_the_reason(start_worker, tiny_bert_dir, settings, tmp_path):
    """TASK_TIME_LIMIT_FINETUNE from the settings stops a run on a real worker; the task base's on_failure
    writes why on the row (not 'running' forever)."""
    settings.MODELS_DIR = tmp_path
    tiny_bert = services.base_model_register(path=str(tiny_bert_dir), name="tiny-bert")
    worker = start_worker(queues="gpu", MODELS_DIR=tmp_path, TASK_TIME_LIMIT_FINETUNE=3, **WORKER_ENV)
    job = services.finetune_job_create(owner=developer(), datanet_version=make_version(n=400), base_model=tiny_bert,
                                       task="classification", params=small_params(batch_size=2, epochs=3))
    done = wait_for(lambda: FineTuneJob.objects.filter(pk=job.pk, status__in=FineTuneJob.TERMINAL).first(),
                    timeout=120, what="the job to stop at its time limit", worker=worker)
    assert done.status == "failed", done.log
    assert done.error.startswith("Stopped after the time limit of 3 s") and "retry to resume" in done.error
