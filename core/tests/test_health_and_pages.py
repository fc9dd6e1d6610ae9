import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from django.conf import settings
from django.urls import reverse

from accounts.tests.factories import UserFactory
from core.roles import CURATOR, role_required

BASE_DIR = Path(settings.BASE_DIR)


@pytest.mark.django_db
@pytest.mark.parametrize("name", ["home", "datanets:list", "factory:home", "factory:models", "ledger:explorer",
                                  "accounts:login", "accounts:signup", "api-docs"])
def test_top_level_pages_render(client, name):
    resp = client.get(reverse(name))
    assert resp.status_code == 200
    if name != "api-docs":
        html = resp.content.decode()
        # htmx is served from our own static files, never from a CDN
        assert "django_htmx/htmx.min.js" in html and "cdn" not in html.lower()


@pytest.mark.django_db
def test_api_docs_use_local_assets(client):
    html = client.get(reverse("api-docs")).content.decode()
    assert "cdn.jsdelivr" not in html and "unpkg" not in html


@pytest.mark.django_db
def test_openapi_schema(client):
    resp = client.get(reverse("api-schema"), HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert resp.status_code == 200
    schema = json.loads(resp.content)
    assert schema["openapi"].startswith("3.")
    assert "/api/v1/me/" in schema["paths"]


@pytest.mark.django_db
def test_api_root_lists_links(client):
    data = client.get("/api/v1/").json()
    assert {"schema", "docs", "token", "me"} <= set(data)


@pytest.mark.django_db
def test_admin_link_only_for_staff(client):
    client.force_login(UserFactory())
    assert reverse("admin:index") not in client.get("/").content.decode()
    client.force_login(UserFactory(is_staff=True))
    assert reverse("admin:index") in client.get("/").content.decode()


@pytest.mark.django_db
def test_role_required_decorator(rf):
    from django.contrib.auth.models import AnonymousUser
    from django.core.exceptions import PermissionDenied
    from django.http import HttpResponse

    view = role_required(CURATOR)(lambda request: HttpResponse("ok"))
    request = rf.get("/")
    request.user = AnonymousUser()
    assert view(request).status_code == 302  # to login
    request.user = UserFactory()
    with pytest.raises(PermissionDenied):
        view(request)
    request.user = UserFactory(roles=[CURATOR])
    assert view(request).status_code == 200


@pytest.mark.django_db
def test_healthz_503_without_worker(client):
    resp = client.get("/healthz")
    body = resp.json()
    assert resp.status_code == 503
    assert body["checks"]["database"]["ok"] is True
    assert body["checks"]["broker"]["ok"] is True
    assert body["checks"]["workers"]["ok"] is False
    assert body["checks"]["chain"]["configured"] is False


@pytest.mark.django_db
def test_healthz_reports_broker_down(client, settings):
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    resp = client.get("/healthz")
    assert resp.status_code == 503
    assert resp.json()["checks"]["broker"]["ok"] is False


@pytest.mark.django_db
def test_healthz_reports_chain_down(client, settings):
    settings.WEB3_PROVIDER_URI = "http://127.0.0.1:1"
    body = client.get("/healthz").json()
    assert body["checks"]["chain"]["configured"] is True and body["checks"]["chain"]["ok"] is False


@pytest.mark.worker
@pytest.mark.chain
def test_healthz_200_with_worker_and_chain(client, settings, start_worker, anvil):
    settings.WEB3_PROVIDER_URI = anvil.url
    worker = start_worker(queues="cpu,gpu,ledger")
    assert "round_trip" not in client.get("/healthz?deep=1").json()["checks"]  # deep is for staff only
    client.force_login(UserFactory(is_staff=True))
    resp = client.get("/healthz?deep=1")
    body = resp.json()
    assert resp.status_code == 200, body
    assert body["checks"]["chain"]["extra"]["chain_id"] == 31337
    assert worker.hostname in [w["hostname"] for w in body["checks"]["workers"]["extra"]["workers"]]
    assert body["checks"]["round_trip"]["ok"] is True
    worker.stop()
    # a clean shutdown removes the heartbeat: no worker, no health
    assert client.get("/healthz").status_code == 503


@pytest.mark.worker
def test_task_through_real_worker_and_broker(start_worker):
    """A task goes through the real broker (Redis in `make test`) to a real worker process."""
    import uuid

    from core.models import TaskProbe
    from core.services import check_round_trip

    worker = start_worker(queues="cpu")
    check = check_round_trip(timeout=30)
    assert check.ok, check.detail + worker.log()
    assert worker.hostname in check.detail
    assert not TaskProbe.objects.filter(nonce=uuid.uuid4().hex).exists()


@pytest.mark.worker
def test_embedded_filesystem_broker_round_trip(worker_env, tmp_path, settings):
    """With no CELERY_BROKER_URL, the file-system broker carries tasks between processes."""
    from core.testing import WorkerProcess

    env = {**worker_env, "VAR_DIR": str(tmp_path)}
    env.pop("CELERY_BROKER_URL")
    worker = WorkerProcess(queues="cpu", env=env).start()
    try:
        worker.wait_ready()
        code = (
            "import django, uuid, time; django.setup();"
            "from core.services import check_round_trip; c = check_round_trip(timeout=30); print(c.ok, c.detail)"
        )
        out = subprocess.run([sys.executable, "-c", code], cwd=BASE_DIR, env=env, capture_output=True, text=True,
                             timeout=120)
        assert out.stdout.startswith("True"), out.stdout + out.stderr + worker.log()
        assert (tmp_path / "broker" / "queue").is_dir()
    finally:
        worker.stop()


def test_defaults_with_nothing_set(tmp_path):
    """No environment: SQLite under var/, DEBUG on, a generated secret kept in var/, file-system broker."""
    env = {"PATH": os.environ["PATH"], "VAR_DIR": str(tmp_path), "DJANGO_SETTINGS_MODULE": "config.settings"}
    code = ("import django; django.setup(); from django.conf import settings as s;"
            "print(s.DATABASES['default']['ENGINE'], s.DATABASES['default']['NAME'], s.DEBUG, s.CELERY_BROKER_URL)")
    out = subprocess.run([sys.executable, "-c", code], cwd=BASE_DIR, env=env, capture_output=True, text=True, check=True)
    engine, name, debug, broker = out.stdout.split()
    assert engine.endswith("sqlite3") and name == str(tmp_path / "db.sqlite3") and debug == "True"
    assert broker == "filesystem://"
    secret = (tmp_path / "secret_key").read_text()
    assert len(secret) > 40
    again = subprocess.run([sys.executable, "-c", code], cwd=BASE_DIR, env=env, capture_output=True, text=True, check=True)
    assert again.returncode == 0 and (tmp_path / "secret_key").read_text() == secret  # kept, not regenerated


def test_production_needs_secret(tmp_path):
    env = {"PATH": os.environ["PATH"], "VAR_DIR": str(tmp_path), "DJANGO_DEBUG": "false",
           "DJANGO_SETTINGS_MODULE": "config.settings"}
    out = subprocess.run([sys.executable, "-c", "import django; django.setup()"], cwd=BASE_DIR, env=env,
                         capture_output=True, text=True)
    assert out.returncode != 0 and "DJANGO_SECRET_KEY must be set" in out.stderr


def test_docker_compose_matches_settings():
    compose = yaml.safe_load((BASE_DIR / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"web", "worker-gpu", "worker-cpu", "worker-ledger", "beat", "postgres", "redis", "chain"} <= set(services)
    django_services = ["web", "worker-gpu", "worker-cpu", "worker-ledger", "beat"]
    for name in django_services:
        env = services[name]["environment"]
        unknown = set(env) - set(settings.ENV_VARS)
        assert not unknown, f"{name} sets variables the settings never read: {unknown}"
        for required in ("DATABASE_URL", "CELERY_BROKER_URL", "WEB3_PROVIDER_URI", "DJANGO_SECRET_KEY"):
            assert required in env, f"{name} lacks {required}"
        assert env["DJANGO_DEBUG"] == "false"
        assert env["CELERY_BROKER_URL"].startswith("redis://redis:")
        assert "@postgres:5432/" in env["DATABASE_URL"]
    assert "-Q gpu" in services["worker-gpu"]["command"]
    assert services["worker-gpu"]["deploy"]["resources"]["reservations"]["devices"][0]["driver"] == "nvidia"
    assert "-Q cpu" in services["worker-cpu"]["command"]
    assert "-Q ledger -c 1" in services["worker-ledger"]["command"]
    assert "beat" in services["beat"]["command"]
    assert "gunicorn" in services["web"]["command"]
    assert "anvil" in services["chain"]["entrypoint"]
    # no secret is written into the file itself
    text = (BASE_DIR / "docker-compose.yml").read_text()
    assert "0x" not in text and "${DJANGO_SECRET_KEY:?" in text


@pytest.mark.django_db
def test_api_root_lists_every_resource_of_the_schema(client):
    root = client.get("/api/v1/").json()
    listed = {url.split("://", 1)[1].split("/", 1)[1] for url in root["resources"].values()}
    schema = yaml.safe_load(client.get("/api/v1/schema/").content)
    documented = {path.lstrip("/").rstrip("/") + "/" for path in schema["paths"]}
    assert documented <= {p.rstrip("/") + "/" for p in listed}, documented - listed
    assert root["resources"]["datanets"].endswith("/api/v1/datanets/")


@pytest.mark.django_db
def test_staff_pages_answer_403_to_others_and_post_forms_do_not_redirect(client):
    client.force_login(UserFactory())
    resp = client.get(reverse("ledger:transactions"))
    assert resp.status_code == 403 and 'data-status="403"' in resp.content.decode()
    client.logout()
    assert client.get(reverse("ledger:transactions")).url.startswith(reverse("accounts:login"))  # product login
    resp = client.post(reverse("accounts:api-key-new"), {"name": "x"})
    assert resp.status_code == 403 and "Log in" in resp.content.decode()
