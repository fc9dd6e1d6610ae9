"""The Celery app: three queues (gpu, cpu, ledger), acks late, settings from Django."""
import os

from celery import Celery
from kombu import Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("modelfactory")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.task_queues = (Queue("cpu"), Queue("gpu"), Queue("ledger"))
app.autodiscover_tasks()

# The worker heartbeat (for /healthz) hooks into the worker's signals.
import core.heartbeat  # noqa: E402,F401
