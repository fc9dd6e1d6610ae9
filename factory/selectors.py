"""Read queries for the Model Factory."""
from __future__ import annotations

from django.conf import settings
from django.utils import timezone

from core.heartbeat import CUDA_QUEUE
from core.models import WorkerHeartbeat
from factory.models import FineTunedModel, FineTuneJob


def finetune_job_queue_position(*, job: FineTuneJob) -> dict:
    """For a queued job: the jobs queued before it and the jobs running now (the gpu worker runs them in
    order of sending). An estimate shown while it waits; the broker decides the real order."""
    queued = FineTuneJob.objects.filter(status=FineTuneJob.Status.QUEUED)
    return {
        "ahead": queued.filter(created_at__lt=job.created_at).count(),
        "running": FineTuneJob.objects.filter(status=FineTuneJob.Status.RUNNING).count(),
    }


def finetuned_model_id(*, job_id: int, dispatch_id: str | None = None) -> int | None:
    """The model a succeeded job made, or None; with `dispatch_id`, only when that message is still the job's
    (a re-sent job's older message hands nothing on: the newer one's canvas carries the model)."""
    models = FineTunedModel.objects.filter(job_id=job_id, job__status=FineTuneJob.Status.SUCCEEDED)
    if dispatch_id:
        models = models.filter(job__celery_task_id=dispatch_id)
    return models.values_list("pk", flat=True).first()


def cuda_workers() -> list[dict]:
    """Live workers that reported a CUDA device and consume the `cuda` queue (core.heartbeat): where QLoRA
    jobs go. [] when none has beaten within WORKER_STALE_SECONDS."""
    cutoff = timezone.now() - timezone.timedelta(seconds=settings.WORKER_STALE_SECONDS)
    rows = WorkerHeartbeat.objects.filter(last_seen__gte=cutoff).values("hostname", "queues", "devices")
    return [{"hostname": r["hostname"], "devices": [d for d in r["devices"] or [] if d.get("kind") == "cuda"]}
            for r in rows
            if CUDA_QUEUE in (r["queues"] or "").split(",") and any(d.get("kind") == "cuda" for d in r["devices"] or [])]
