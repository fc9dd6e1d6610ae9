"""Thin Celery tasks for the Model Factory (queue `gpu`) and the worker-side recovery sweep."""
import logging
import threading

from celery import shared_task
from celery.signals import worker_ready, worker_shutdown

from core.errors import ApplicationError
from core.tasks import LongTask
from factory.training.types import TrainingError

logger = logging.getLogger(__name__)
_stop = threading.Event()


class FineTuneTask(LongTask):
    """Long training run, one job per message; the job row, not Celery, says what is done, so running it
    twice is safe. At the soft time limit the loop stops and the job fails with the reason; its last
    checkpoint stays, so a retry resumes from it."""

    limits = "finetune"
    throws = (ApplicationError, TrainingError)

    def fail_row(self, row_id: int, reason: str) -> None:
        from factory.services import finetune_job_fail

        finetune_job_fail(job_id=row_id, reason=reason)


@shared_task(base=FineTuneTask, bind=True, name="factory.tasks.finetune_job_run_task")
def finetune_job_run_task(self, job_id: int) -> int | None:
    """The post-training canvas's first step: the model's id for the next step, None when the job made none
    (failed, cancelled) or this message is no longer the job's (re-sent since). A redelivery of the job's own
    message passes its model on too: the next steps are idempotent, and the first delivery may have died
    before it could hand over."""
    from factory.selectors import finetuned_model_id
    from factory.services import finetune_job_run

    finetune_job_run(job_id=job_id, hostname=self.request.hostname or "unknown", dispatch_id=self.request.id)
    return finetuned_model_id(job_id=job_id, dispatch_id=self.request.id)


class BaseBuildTask(LongTask):
    """Pre-training of a base built here (the demo's chat base). The row's build token, not Celery, says
    which run counts, so a redelivered message is a no-op or a clean restart."""

    limits = "base_build"  # 1,000 steps take ~6 min on an idle 2-core CPU; a crowded one, far longer

    def fail_row(self, row_id: int, reason: str) -> None:
        # The service writes its own failure under its build token (an older run must not fail a newer
        # build of the same row), then re-raises to here: nothing is left to write.
        logger.warning("base model %s: build failed: %s", row_id, reason)


@shared_task(base=BaseBuildTask, name="factory.tasks.base_model_build_task")
def base_model_build_task(base_model_id: int, token: str) -> None:
    from factory.services import base_model_build_run

    base_model_build_run(base_model_id=base_model_id, token=token)


class MergeTask(LongTask):
    """The merged export of one model (queue `cpu`): a crash or the time limit leaves it failed with the
    reason; a later request retries it."""

    limits = "merge"
    throws = (ApplicationError, TrainingError)

    def fail_row(self, row_id: int, reason: str) -> None:
        from factory.exports import finetuned_model_merge_fail

        finetuned_model_merge_fail(model_id=row_id, reason=reason)


@shared_task(base=MergeTask, name="factory.tasks.finetuned_model_merge_task")
def finetuned_model_merge_task(model_id: int) -> None:
    """Merge a model's adapter into its base and zip the folder (progress on the model row)."""
    from factory.exports import finetuned_model_merge

    finetuned_model_merge(model_id=model_id)


@shared_task(name="factory.tasks.finetune_jobs_recover_task", ignore_result=True)
def finetune_jobs_recover_task() -> list[int]:
    from factory.services import finetune_jobs_recover

    return finetune_jobs_recover()


@shared_task(name="factory.tasks.finetune_jobs_redispatch_task", ignore_result=True)
def finetune_jobs_redispatch_task() -> list[int]:
    """Beat: re-send queued jobs whose message was lost (see finetune_jobs_redispatch)."""
    from factory.services import finetune_jobs_redispatch

    return finetune_jobs_redispatch()


def _sweep_loop(interval: float) -> None:
    from django.db import close_old_connections

    from factory.services import finetune_jobs_recover

    while not _stop.wait(interval):
        try:
            close_old_connections()
            ids = finetune_jobs_recover()
            if ids:
                logger.warning("re-queued fine-tune jobs of dead workers: %s", ids)
        except Exception:  # the database may be briefly away; the next sweep retries
            logger.warning("fine-tune recovery sweep failed", exc_info=True)


@worker_ready.connect
def _start_recovery(sender=None, **kwargs):
    """Workers that train (queue gpu) sweep for jobs whose worker died: with the Redis broker an unacked
    message comes back only after the visibility timeout (hours), so recovery cannot wait for it."""
    from django.conf import settings

    queues = {q.name for q in sender.app.amqp.queues.consume_from.values()}
    if "gpu" not in queues:
        return
    _stop.clear()
    threading.Thread(target=_sweep_loop, args=(settings.FACTORY_RECOVERY_SECONDS,), daemon=True,
                     name="finetune-recovery").start()


@worker_shutdown.connect
def _stop_recovery(sender=None, **kwargs):
    _stop.set()
