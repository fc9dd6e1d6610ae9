"""The one base for long Celery tasks, and the probe task of /healthz.

Every long task (fine-tune, attribution index build, ingest, span index build, version export) derives
from `LongTask`: acked late so a killed worker's message comes back, soft and hard time limits from
`settings.TASK_TIME_LIMITS`, user errors in `throws` (logged without a traceback), and one `on_failure`
hook that writes the failed state onto the task's row. The row, not Celery, says what is done, so each
task must be safe to run twice.
"""
from __future__ import annotations

import logging

from celery import Task, shared_task
from celery.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded
from celery.worker.request import Request
from django.conf import settings

from core.errors import ApplicationError
from core.models import TaskProbe

logger = logging.getLogger(__name__)

ERR_TIME_LIMIT = "Stopped after the time limit of {seconds} s (TASK_TIME_LIMITS[{kind!r}]); retry to resume."
ERR_INTERNAL = "Internal error: {type}: {exc}"


def time_limits(kind: str) -> tuple[int, int]:
    """(soft, hard) seconds for a kind of long task; the hard limit leaves the soft one time to clean up."""
    soft = settings.TASK_TIME_LIMITS[kind]
    return soft, soft + settings.TASK_TIME_LIMIT_GRACE_SECONDS


class LongTaskRequest(Request):
    """The worker's side of a long task. A hard time limit kills the child process; Celery then marks the
    result failed in the worker's main process but never calls the task's `on_failure`, so the row would
    say "running" for ever. This calls it there (the main process has Django set up too)."""

    def on_timeout(self, soft, timeout):
        super().on_timeout(soft, timeout)
        if not soft:
            self.task.on_failure(TimeLimitExceeded(timeout), self.id, self.args, self.kwargs, None)


class LongTask(Task):
    """Base of every long task. Subclasses set `limits` (a key of TASK_TIME_LIMITS) and `fail_row`.

    `fail_row(row_id, reason)` writes the failed state of the row the task works on (its first argument);
    it must leave a row that is already finished alone (a guarded UPDATE), since a task can fail after the
    service has written the row's own outcome.
    """

    abstract = True
    Request = LongTaskRequest
    acks_late = True
    reject_on_worker_lost = True
    track_started = True
    ignore_result = True
    throws = (ApplicationError,)
    limits = ""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.limits:
            cls.soft_time_limit, cls.time_limit = time_limits(cls.limits)

    def _get_exec_options(self):
        # Celery copies a task's limits into each message it sends, so the sender's settings would win.
        # The limits are the running worker's (its TASK_TIME_LIMITS): the message carries none, and the
        # worker falls back to this class's attributes, read from its own settings.
        return {**super()._get_exec_options(), "time_limit": None, "soft_time_limit": None}

    def fail_row(self, row_id: int, reason: str) -> None:  # pragma: no cover - the subclasses' job
        raise NotImplementedError

    def failure_reason(self, exc: BaseException) -> str:
        if isinstance(exc, SoftTimeLimitExceeded | TimeLimitExceeded):
            return ERR_TIME_LIMIT.format(seconds=self.soft_time_limit, kind=self.limits)
        if isinstance(exc, ApplicationError):
            return exc.message
        if isinstance(exc, self.throws):
            return str(exc)
        return ERR_INTERNAL.format(type=type(exc).__name__, exc=exc)

    def on_failure(self, exc, task_id, args, kwargs, einfo):
        row_id = args[0] if args else next(iter(kwargs.values()), None)
        if row_id is None:
            return
        try:
            self.fail_row(row_id, self.failure_reason(exc)[:4000])
        except Exception:  # the database may be away; the row's recovery sweep finds it later
            logger.exception("%s: could not write the failed state of row %s", self.name, row_id)


@shared_task(name="core.tasks.probe_task", ignore_result=True)
def probe_task(nonce: str) -> None:
    """Answer a probe: record which worker ran it. Idempotent on the nonce."""
    TaskProbe.objects.get_or_create(nonce=nonce, defaults={"hostname": probe_task.request.hostname or ""})
