"""Thin Celery tasks for Proof of Attribution (queue `gpu`, routed in settings)."""
from celery import shared_task

from core.tasks import LongTask


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
