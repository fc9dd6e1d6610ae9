from django.db import models


class WorkerHeartbeat(models.Model):
    """One row per Celery worker, touched every few seconds while it runs.

    Beats go through the database rather than broker broadcasts, so /healthz sees workers on every
    broker, including the embedded file-system one that has no broadcast channel.
    """

    hostname = models.CharField(max_length=255, unique=True)
    queues = models.CharField(max_length=255, blank=True)
    pid = models.PositiveIntegerField(default=0)
    # The accelerators the worker found at startup (core.heartbeat.devices_probe): [{"kind": "cuda", "index",
    # "name", "memory_bytes", "capability"}]; [] on a CPU machine. The factory offers QLoRA only while a live
    # worker lists a CUDA device here.
    devices = models.JSONField(default=list, blank=True)
    started_at = models.DateTimeField()
    last_seen = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ["hostname"]

    def __str__(self) -> str:
        return self.hostname


class TaskProbe(models.Model):
    """Written by a worker in answer to a probe task: proves broker -> worker -> database end to end."""

    nonce = models.CharField(max_length=64, unique=True)
    hostname = models.CharField(max_length=255)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.nonce
