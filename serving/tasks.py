"""Thin Celery tasks: the model run and settlements on the `gpu` queue, span index builds on `cpu`."""
import logging

from celery import shared_task

from core.tasks import LongTask

logger = logging.getLogger(__name__)


class SpanIndexTask(LongTask):
    """A span index build (a suffix array over a version's tokens): the row says failed and why."""

    limits = "span_index"

    def fail_row(self, row_id: int, reason: str) -> None:
        from serving.services import span_index_fail

        span_index_fail(span_index_id=row_id, reason=reason)


class SettleTask(LongTask):
    """Settlement has no row of its own: each answer's settlement status is checked under its lock, so a
    failed run leaves them pending for the sweep."""

    limits = "settle"

    def fail_row(self, row_id: int, reason: str) -> None:
        logger.warning("settlement of model %s stopped: %s; the sweep retries", row_id, reason)


@shared_task(name="serving.tasks.inference_run_task", acks_late=True, ignore_result=True)
def inference_run_task(inference_id: int) -> None:
    from serving.services import inference_run

    inference_run(inference_id=inference_id)


@shared_task(base=SpanIndexTask, name="serving.tasks.span_index_build_task")
def span_index_build_task(span_index_id: int, compact: bool = False) -> None:
    from serving.services import span_index_build

    span_index_build(span_index_id=span_index_id, compact=compact)


# On `gpu`: a classifier's answer is attributed by a backward pass of its model. Idempotent (each row's
# settlement status is checked under its lock), so a redelivery or the sweep overlapping it is harmless.
@shared_task(base=SettleTask, name="serving.tasks.inferences_settle_task")
def inferences_settle_task(model_id: int | None = None) -> None:
    """Settle one model's pending answers (queued when its index is ready), or every model's (beat)."""
    from serving.services import inferences_settle

    inferences_settle(model_id=model_id)


class BatchTask(LongTask):
    """A batch of inferences from a CSV: a crash or the time limit leaves it failed with the reason; rows
    answered before stay answered (and charged once)."""

    limits = "batch_inference"

    def fail_row(self, row_id: int, reason: str) -> None:
        from serving.batch import batch_fail

        batch_fail(batch_id=row_id, reason=reason)


@shared_task(base=BatchTask, name="serving.tasks.batch_inference_run_task")
def batch_inference_run_task(batch_id: int) -> None:
    """Answer a batch's rows (skipping those already answered) and write its output CSV."""
    from serving.batch import batch_run

    batch_run(batch_id=batch_id)
