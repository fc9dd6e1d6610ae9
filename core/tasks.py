from celery import shared_task

from core.models import TaskProbe


@shared_task(name="core.tasks.probe_task", ignore_result=True)
def probe_task(nonce: str) -> None:
    """Answer a probe: record which worker ran it. Idempotent on the nonce."""
    TaskProbe.objects.get_or_create(nonce=nonce, defaults={"hostname": probe_task.request.hostname or ""})
