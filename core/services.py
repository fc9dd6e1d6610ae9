"""Health of the parts the app depends on. Core knows the database, the broker and the workers; an app above
it adds its own check (the ledger: the chain) with `health_check_register`, since core imports no app."""
from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from celery import current_app
from django.conf import settings
from django.db import connection
from django.utils import timezone

from core.models import TaskProbe, WorkerHeartbeat
from core.tasks import probe_task

BROKER_TIMEOUT_SECONDS = 3


@dataclass
class Check:
    ok: bool
    configured: bool = True
    detail: str = ""
    extra: dict = field(default_factory=dict)


def _redact(url: str) -> str:
    """Drop credentials from a URL before it is shown."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


def check_database() -> Check:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return Check(ok=True, detail=connection.vendor)
    except Exception as exc:
        return Check(ok=False, detail=f"{connection.vendor}: {exc.__class__.__name__}: {exc}")


def check_broker() -> Check:
    url = settings.CELERY_BROKER_URL
    try:
        with current_app.connection_for_write(url) as conn:  # the project's app (config/celery.py)
            conn.ensure_connection(max_retries=1, timeout=BROKER_TIMEOUT_SECONDS)
        return Check(ok=True, detail=_redact(url))
    except Exception as exc:
        return Check(ok=False, detail=f"{_redact(url)}: {exc.__class__.__name__}: {exc}")


_extra_checks: dict[str, Callable[[], Check]] = {}


def health_check_register(name: str, check: Callable[[], Check]) -> None:
    """Add a named check to /healthz (called from an AppConfig.ready; registering a name again replaces it)."""
    _extra_checks[name] = check


def check_workers() -> Check:
    try:
        cutoff = timezone.now() - timezone.timedelta(seconds=settings.WORKER_STALE_SECONDS)
        alive = list(WorkerHeartbeat.objects.filter(last_seen__gte=cutoff).values("hostname", "queues", "last_seen",
                                                                                  "devices"))
    except Exception as exc:
        return Check(ok=False, detail=f"{exc.__class__.__name__}: {exc}")
    queues = sorted({q for w in alive for q in w["queues"].split(",") if q})
    missing = sorted({"cpu", "gpu", "ledger"} - set(queues))
    detail = f"{len(alive)} worker(s)" + (f"; no worker on {', '.join(missing)}" if missing else "")
    return Check(
        ok=bool(alive),
        detail=detail,
        extra={"workers": [{"hostname": w["hostname"], "queues": w["queues"], "devices": w["devices"]} for w in alive],
               "queues": queues},
    )


def check_round_trip(timeout: float = 10.0) -> Check:
    """Send a probe task through the broker and wait for a worker to write its row."""
    nonce = uuid.uuid4().hex
    started = time.monotonic()
    try:
        probe_task.apply_async(args=[nonce], queue="cpu")
    except Exception as exc:
        return Check(ok=False, detail=f"send failed: {exc.__class__.__name__}: {exc}")
    while time.monotonic() - started < timeout:
        probe = TaskProbe.objects.filter(nonce=nonce).first()
        if probe:
            probe.delete()
            return Check(ok=True, detail=f"answered by {probe.hostname} in {time.monotonic() - started:.2f}s")
        time.sleep(0.2)
    return Check(ok=False, detail=f"no worker answered within {timeout:.0f}s")


def health_report(*, deep: bool = False) -> tuple[bool, dict]:
    """All checks; healthy only when everything that is configured answers.

    `deep` also sends a task through the broker and waits for a worker to run it.
    """
    started = time.monotonic()
    checks = {
        "database": check_database(),
        "broker": check_broker(),
        **{name: check() for name, check in _extra_checks.items()},
        "workers": check_workers(),
    }
    if deep:
        checks["round_trip"] = check_round_trip()
    healthy = all(c.ok for c in checks.values() if c.configured)
    body = {
        "status": "ok" if healthy else "degraded",
        "checks": {name: asdict(c) for name, c in checks.items()},
        "elapsed_ms": round((time.monotonic() - started) * 1000, 1),
    }
    return healthy, body
