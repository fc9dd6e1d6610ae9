"""Thin Celery tasks for Proof of Attribution (queue `gpu`, routed in settings)."""
import logging

from celery import shared_task

from core.tasks import LongTask

logger = logging.getLogger(__name__)


class IndexBuildTask(LongTask):
    """An index build is one pass over the training set plus one over the validation set. The index row,
    not Celery, says what is done, so a second delivery of a finished build does nothing."""

    limits = "attribution_index"

    def fail_row(self, row_id: int, reason: str) -> None:
        from attribution.services import attribution_index_fail

        attribution_index_fail(index_id=row_id, reason=reason)


@shared_task(base=IndexBuildTask, bind=True, name="attribution.tasks.attribution_index_build_task")
def attribution_index_build_task(self, index_id: int) -> None:
    from attribution.services import attribution_index_build

    attribution_index_build(index_id=index_id, hostname=self.request.hostname or "unknown")


# --- the post-training canvas's steps after training (declared in attribution/pipeline.py) -----------------

class ModelIndexTask(LongTask):
    """The canvas's index step: its row is the model's gradient index, found by the model id it is given."""

    limits = "attribution_index"

    def fail_row(self, row_id: int, reason: str) -> None:
        from attribution.services import attribution_model_index_fail

        attribution_model_index_fail(model_id=row_id, reason=reason)


@shared_task(base=ModelIndexTask, bind=True, name="attribution.tasks.model_index_task")
def model_index_task(self, model_id: int | None) -> int | None:
    """Build the new model's index (None: training made no model, nothing to do); pass the model on. It never
    fails the canvas: the model is registered whatever the index's fate (its row says what failed)."""
    from attribution.services import attribution_model_index

    if model_id is not None:
        try:
            attribution_model_index(model_id=model_id, hostname=self.request.hostname or "unknown")
        except Exception:
            logger.exception("the attribution index of model %s failed; registering it regardless", model_id)
    return model_id


@shared_task(name="attribution.tasks.model_register_task", acks_late=True, ignore_result=True)
def model_register_task(model_id: int | None) -> None:
    """Register the model on-chain with its published attribution root (outbox; idempotent per model)."""
    from attribution.publication import model_onchain_register

    if model_id is not None:
        model_onchain_register(model_id=model_id)
