"""Health of the parts the app depends on."""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

from django.conf import settings
from django.db import connection
from django.utils import timezone

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
    from config.celery import app

    url = settings.CELERY_BROKER_URL
    try:
        with app.connection_for_write(url) as conn:
            conn.ensure_connection(max_retries=1, timeout=BROKER_TIMEOUT_SECONDS)
        return Check(ok=True, detail=_redact(url))
    except Exception as exc:
        return Check(ok=False, detail=f"{_redact(url)}: {exc.__class__.__name__}: {exc}")


def check_chain() -> Check:
    if not settings.WEB3_PROVIDER_URI:
        return Check(ok=True, configured=False, detail="WEB3_PROVIDER_URI not set")
    from ledger.client import chain_status

    status = chain_status()
    return Check(ok=status["ok"], detail=status["detail"], extra={k: v for k, v in status.items() if k not in ("ok", "detail")})


def check_workers() -> Check:
    from core.models import WorkerHeartbeat

    try:
        cutoff = timezone.now() - timezone.timedelta(seconds=settings.WORKER_STALE_SECONDS)
        alive = list(WorkerHeartbeat.objects.filter(last_seen__gte=cutoff).values("hostname", "queues", "last_seen"))
    except Exception as exc:
        return Check(ok=False, detail=f"{exc.__class__.__name__}: {exc}")
    queues = sorted({q for w in alive for q in w["queues"].split(",") if q})
    missing = sorted({"cpu", "gpu", "ledger"} - set(queues))
    detail = f"{len(alive)} worker(s)" + (f"; no worker on {', '.join(missing)}" if missing else "")
    return Check(
        ok=bool(alive),
        detail=detail,
        extra={"workers": [{"hostname": w["hostname"], "queues": w["queues"]} for w in alive], "queues": queues},
    )


def check_round_trip(timeout: float = 10.0) -> Check:
    """Send a probe task through the broker and wait for a worker to write its row."""
    import uuid

    from core.models import TaskProbe
    from core.tasks import probe_task

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
        "chain": check_chain(),
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
