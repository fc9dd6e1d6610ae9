"""Thin Celery tasks for Proof of Attribution (queue `gpu`, routed in settings)."""
import logging

from celery import Task, shared_task

logger = logging.getLogger(__name__)

# An index build is one pass over the training set plus one over the validation set: generous limits.
SOFT_TIME_LIMIT_S = 6 * 3600
HARD_TIME_LIMIT_S = SOFT_TIME_LIMIT_S + 300


class IndexBuildTask(Task):
    """Long build: acked late so a killed worker's message comes back; the index row, not Celery, says what
    is done, so a second delivery of a finished build does nothing."""

    acks_late = True
    reject_on_worker_lost = True
    track_started = True
    ignore_result = True
    soft_time_limit = SOFT_TIME_LIMIT_S
    time_limit = HARD_TIME_LIMIT_S

    def on_failure(self, exc, task_id, args, kwargs, einfo):
        # The service records its own failures; this catches what escaped it (e.g. the database was down).
        from attribution.services import attribution_index_fail

        if args:
            try:
                attribution_index_fail(index_id=args[0], reason=f"Internal error: {type(exc).__name__}: {exc}")
            except Exception:
                logger.exception("could not mark attribution index %s failed", args[0])


@shared_task(base=IndexBuildTask, bind=True, name="attribution.tasks.attribution_index_build_task")
def attribution_index_build_task(self, index_id: int) -> None:
    from attribution.services import attribution_index_build

    attribution_index_build(index_id=index_id, hostname=self.request.hostname or "unknown")
