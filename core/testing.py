"""Helpers for tests that need real processes: a Celery worker, anvil.

They start the real programs (no eager mode, no fakes) against the test database and broker.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
WORKER_READY_TIMEOUT = 90


def database_url_for(settings_dict: dict) -> str:
    """A DATABASE_URL for the database Django is connected to now (the test database in tests)."""
    engine = settings_dict["ENGINE"]
    if engine.endswith("sqlite3"):
        return f"sqlite:///{settings_dict['NAME']}"
    user = settings_dict.get("USER") or "postgres"
    password = settings_dict.get("PASSWORD") or ""
    cred = f"{user}:{password}" if password else user
    host = settings_dict.get("HOST") or "127.0.0.1"
    port = settings_dict.get("PORT") or 5432
    return f"postgres://{cred}@{host}:{port}/{settings_dict['NAME']}"


@dataclass
class WorkerProcess:
    """A real `celery worker` subprocess. `kill()` sends SIGKILL to the whole process group."""

    queues: str
    env: dict
    concurrency: int = 1
    include: str = ""  # extra task modules (celery -I), e.g. a test's own tasks
    name: str = field(default_factory=lambda: f"test-{uuid.uuid4().hex[:8]}")
    proc: subprocess.Popen | None = None
    log_path: Path | None = None

    @property
    def hostname(self) -> str:
        return f"{self.name}@{socket.gethostname()}"

    def start(self) -> WorkerProcess:
        self.log_path = Path(self.env.get("VAR_DIR") or tempfile.gettempdir()) / f"{self.name}.log"
        log = open(self.log_path, "w")  # noqa: SIM115 - open for the child's life
        cmd = [
            sys.executable, "-m", "celery", "-A", "config", "worker", "-Q", self.queues,
            "-c", str(self.concurrency), "-n", self.hostname, "--loglevel=INFO",
            "--without-gossip", "--without-mingle", *(["-I", self.include] if self.include else []),
        ]
        self.proc = subprocess.Popen(cmd, cwd=BASE_DIR, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        return self

    def wait_ready(self, timeout: float = WORKER_READY_TIMEOUT) -> None:
        """Wait for the worker's heartbeat row in the database."""
        from core.models import WorkerHeartbeat

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited with {self.proc.returncode}:\n{self.log()}")
            if WorkerHeartbeat.objects.filter(hostname=self.hostname).exists():
                return
            time.sleep(0.3)
        raise TimeoutError(f"worker not ready after {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text()[-5000:] if self.log_path and self.log_path.exists() else ""

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        """Warm shutdown, then SIGKILL if it lingers."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def anvil_path() -> str:
    local = BASE_DIR / "node_modules" / ".bin" / "anvil"
    if local.exists():
        return str(local)
    found = shutil.which("anvil")
    if not found:
        raise RuntimeError("anvil not found: run `npm install` (make does it) to get @foundry-rs/anvil")
    return found


@dataclass
class AnvilProcess:
    """A real anvil node on a free port, for one test session."""

    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, *extra: str) -> AnvilProcess:
        self.proc = subprocess.Popen(
            [anvil_path(), "--port", str(self.port), "--host", "127.0.0.1", "--silent", *extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self
            time.sleep(0.1)
        raise TimeoutError("anvil did not start")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=10)


def wait_for(predicate, what: str, workers=(), timeout: float = 60.0, every: float = 0.1):
    """Poll `predicate` until it returns something truthy (returned); on timeout fail with `what` and the
    given workers' logs, which say why a real worker did not get there."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    logs = "\n".join(f"--- {w.hostname}\n{w.log()}" for w in workers)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{logs}")
