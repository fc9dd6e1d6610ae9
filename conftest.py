"""Shared fixtures. Tests run on the real PostgreSQL and Redis (see `make test`)."""
from __future__ import annotations

import os

import pytest

from core.testing import AnvilProcess, WorkerProcess, database_url_for

# Playwright's sync API runs an event loop in this thread; Django's ORM calls from the
# live-server fixtures are still synchronous and safe.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


def pytest_report_header(config):
    from django.conf import settings

    from core.services import _redact

    db = settings.DATABASES["default"]
    return [
        f"database: {db['ENGINE'].rsplit('.', 1)[-1]} {db.get('HOST') or ''}:{db.get('PORT') or ''}/{db['NAME']}",
        f"broker: {_redact(settings.CELERY_BROKER_URL)}",
    ]


def pytest_configure(config):
    from django.conf import settings

    if os.environ.get("MF_ALLOW_SQLITE_TESTS") != "1" and settings.DATABASES["default"]["ENGINE"].endswith("sqlite3"):
        raise pytest.UsageError(
            "The tests run on PostgreSQL and Redis: use `make test`, or set DATABASE_URL=postgres://... "
            "and CELERY_BROKER_URL=redis://..."
        )


@pytest.fixture
def worker_env(transactional_db, settings, tmp_path):
    """Environment for a worker process that talks to this test's database and broker."""
    from django.db import connection

    env = dict(os.environ)
    env.update(
        DATABASE_URL=database_url_for(connection.settings_dict),
        CELERY_BROKER_URL=settings.CELERY_BROKER_URL,
        VAR_DIR=str(settings.VAR_DIR),
        MEDIA_ROOT=str(settings.MEDIA_ROOT),
        MODELS_DIR=str(settings.MODELS_DIR),
        WORKER_HEARTBEAT_SECONDS="1",
        PYTHONUNBUFFERED="1",
    )
    return env


@pytest.fixture
def start_worker(worker_env):
    """Factory: start a real Celery worker on the given queues; all are stopped after the test."""
    from config.celery import app

    app.control.purge()  # leftovers of earlier runs must not reach this test's worker
    started: list[WorkerProcess] = []

    def _start(queues: str = "cpu,gpu,ledger", concurrency: int = 1, include: str = "", **extra_env) -> WorkerProcess:
        env = {**worker_env, **{k: str(v) for k, v in extra_env.items()}}
        worker = WorkerProcess(queues=queues, env=env, concurrency=concurrency, include=include).start()
        started.append(worker)
        worker.wait_ready()
        return worker

    yield _start
    for w in started:
        w.stop()


@pytest.fixture(scope="session")
def anvil():
    """A real anvil node for the session, on a free port."""
    node = AnvilProcess().start()
    yield node
    node.stop()
