"""The long-task base on a real worker: a hard time limit, which kills the child process, still writes
the row's failed state with the reason (Celery alone would leave the row 'running' for ever)."""
from __future__ import annotations

import pytest

from core.models import TaskProbe
from core.testing import wait_for
from core.tests.stubborn_tasks import stubborn_task

pytestmark = pytest.mark.django_db(transaction=True)


def test_hard_time_limit_fails_the_row_with_the_reason(start_worker):
    worker = start_worker(queues="cpu", include="core.tests.stubborn_tasks", TASK_TIME_LIMIT_FINETUNE=1,
                          TASK_TIME_LIMIT_GRACE_SECONDS=1)
    probe = TaskProbe.objects.create(nonce="hard-limit", hostname="queued")
    stubborn_task.apply_async(args=[probe.pk], queue="cpu")
    row = wait_for(lambda: TaskProbe.objects.filter(pk=probe.pk).exclude(hostname__in=("queued", "running")).first(),
                   "the hard time limit's failed state", [worker])
    assert row.hostname.startswith("failed: Stopped after the time limit of 1 s"), row.hostname
    assert "Hard time limit" in worker.log()
