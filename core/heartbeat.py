"""Worker heartbeats written to the database, read by /healthz and by the factory (is a GPU worker up?).

A daemon thread in the worker's main process upserts its row every WORKER_HEARTBEAT_SECONDS; the row
is removed on a clean shutdown, and a killed worker's row simply goes stale. A worker on the `gpu` queue
reports its CUDA devices on startup (`devices_probe`) and, when it has one, also consumes the `cuda` queue,
where work that needs CUDA itself (QLoRA fine-tunes) is sent.
"""
import glob
import json
import logging
import os
import shutil
import subprocess
import sys
import threading

from celery.signals import worker_ready, worker_shutdown

logger = logging.getLogger(__name__)
_stop = threading.Event()


CUDA_QUEUE = "cuda"
PROBE_TIMEOUT_SECONDS = 120
# Run in a child process: CUDA must not be initialised in the prefork parent (its children could not use it).
_PROBE = (
    "import json, torch\n"
    "out = []\n"
    "if torch.cuda.is_available():\n"
    "    for i in range(torch.cuda.device_count()):\n"
    "        p = torch.cuda.get_device_properties(i)\n"
    "        out.append({'kind': 'cuda', 'index': i, 'name': p.name, 'memory_bytes': int(p.total_memory),\n"
    "                    'capability': f'{p.major}.{p.minor}'})\n"
    "print(json.dumps(out))\n"
)


def devices_probe() -> list[dict]:
    """The CUDA devices torch can use here, or [] (at once on a machine with no NVIDIA driver). A probe that
    fails or hangs reports none: the worker then takes no CUDA-only work, which is the safe side."""
    if not (glob.glob("/dev/nvidia[0-9]*") or shutil.which("nvidia-smi")):
        return []
    try:
        done = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True,  # noqa: S603
                              timeout=PROBE_TIMEOUT_SECONDS, check=True)
        found = json.loads(done.stdout.strip().splitlines()[-1])
        return [d for d in found if isinstance(d, dict) and d.get("kind") == "cuda"]
    except Exception:
        logger.warning("CUDA device probe failed; this worker reports no device", exc_info=True)
        return []


def beat(hostname: str, queues: str, devices: list | None = None) -> None:
    from django.db import close_old_connections
    from django.utils import timezone

    from core.models import WorkerHeartbeat

    close_old_connections()
    now = timezone.now()
    devices = list(devices or [])
    obj, created = WorkerHeartbeat.objects.get_or_create(
        hostname=hostname, defaults={"queues": queues, "pid": os.getpid(), "started_at": now, "last_seen": now,
                                     "devices": devices}
    )
    if not created:
        WorkerHeartbeat.objects.filter(pk=obj.pk).update(queues=queues, pid=os.getpid(), last_seen=now,
                                                         devices=devices)


def _loop(hostname: str, queues: str, interval: int, devices: list) -> None:
    while not _stop.is_set():
        try:
            beat(hostname, queues, devices)
        except Exception:  # the database may be briefly away; the next beat retries
            logger.warning("worker heartbeat failed", exc_info=True)
        _stop.wait(interval)


@worker_ready.connect
def _on_ready(sender=None, **kwargs):
    from django.conf import settings

    consumed = {q.name for q in sender.app.amqp.queues.consume_from.values()}
    devices = devices_probe() if "gpu" in consumed else []
    if devices and CUDA_QUEUE not in consumed:
        try:
            sender.add_task_queue(CUDA_QUEUE)  # the consumer's own thread: safe to change what it consumes
            consumed.add(CUDA_QUEUE)
        except Exception:
            logger.warning("could not consume the %s queue", CUDA_QUEUE, exc_info=True)
    if devices:
        logger.info("CUDA devices: %s", ", ".join(f"{d['name']} ({d['memory_bytes'] >> 30} GiB)" for d in devices))
    queues = ",".join(sorted(consumed))
    _stop.clear()
    threading.Thread(
        target=_loop, args=(sender.hostname, queues, settings.WORKER_HEARTBEAT_SECONDS, devices), daemon=True,
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
