"""A long task that outlives its soft time limit, for the hard-limit test (its worker imports this module
with `celery -I`; production workers never do)."""
from __future__ import annotations

import time

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded

from core.models import TaskProbe
from core.tasks import LongTask


class StubbornTask(LongTask):
    limits = "finetune"

    def fail_row(self, row_id: int, reason: str) -> None:
        TaskProbe.objects.filter(pk=row_id).update(hostname=f"failed: {reason}"[:255])


@shared_task(base=StubbornTask, bind=True, name="core.tests.stubborn_tasks.stubborn_task")
def stubborn_task(self, probe_id: int) -> None:
    """Sleep through the soft limit, as a task stuck in native code or a slow clean-up would."""
    TaskProbe.objects.filter(pk=probe_id).update(hostname="running")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            time.sleep(0.1)
        except SoftTimeLimitExceeded:
            continue
