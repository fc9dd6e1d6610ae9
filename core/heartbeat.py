"""Worker heartbeats written to the database, read by /healthz.

A daemon thread in the worker's main process upserts its row every WORKER_HEARTBEAT_SECONDS; the row
is removed on a clean shutdown, and a killed worker's row simply goes stale.
"""
import logging
import os
import threading

from celery.signals import worker_ready, worker_shutdown

logger = logging.getLogger(__name__)
_stop = threading.Event()


def beat(hostname: str, queues: str) -> None:
    from django.db import close_old_connections
    from django.utils import timezone

    from core.models import WorkerHeartbeat

    close_old_connections()
    now = timezone.now()
    obj, created = WorkerHeartbeat.objects.get_or_create(
        hostname=hostname, defaults={"queues": queues, "pid": os.getpid(), "started_at": now, "last_seen": now}
    )
    if not created:
        WorkerHeartbeat.objects.filter(pk=obj.pk).update(queues=queues, pid=os.getpid(), last_seen=now)


def _loop(hostname: str, queues: str, interval: int) -> None:
    while not _stop.is_set():
        try:
            beat(hostname, queues)
        except Exception:  # the database may be briefly away; the next beat retries
            logger.warning("worker heartbeat failed", exc_info=True)
        _stop.wait(interval)


@worker_ready.connect
def _on_ready(sender=None, **kwargs):
    from django.conf import settings

    queues = ",".join(sorted(q.name for q in sender.app.amqp.queues.consume_from.values()))
    _stop.clear()
    threading.Thread(
        target=_loop, args=(sender.hostname, queues, settings.WORKER_HEARTBEAT_SECONDS), daemon=True,
        name="heartbeat",
    ).start()


@worker_shutdown.connect
def _on_shutdown(sender=None, **kwargs):
    _stop.set()
    try:
        from core.models import WorkerHeartbeat

        WorkerHeartbeat.objects.filter(hostname=sender.hostname).delete()
    except Exception:
        logger.warning("could not remove heartbeat row", exc_info=True)
