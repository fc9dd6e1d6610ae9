# ruff: noqa: F811 - the fixtures imported from ui_helpers are the test arguments of the same names
"""The factory's REST API with DRF's test client: the catalog, jobs (create with the form's rules,
detail with metrics, cancel, retry), models and adapter download; 400/401/403/404/409 cases."""
import io
import json
import zipfile

import pytest
from rest_framework.test import APIClient

from accounts.tests.factories import UserFactory
from core.roles import CONTRIBUTOR
from factory.models import FineTuneJob
from factory.tests.factories import developer, make_version, small_params
from factory.tests.ui_helpers import make_job, make_model, tiny_bert, trained_adapter  # noqa: F401 - fixtures

pytestmark = pytest.mark.django_db
JOBS = "/api/v1/factory/jobs/"


@pytest.fixture
def api():
    client = APIClient()
    client.user = developer(username="apidev")
    client.force_authenticate(client.user)
    return client


def payload(version, base, **kw) -> dict:
    return {"datanet_version": version.pk, "base_model": base.pk, "task": "classification", **small_params(), **kw}


def test_anonymous_callers_get_401_or_403():
    anon = APIClient()
    for url in ("/api/v1/factory/base-models/", JOBS, "/api/v1/factory/models/", f"{JOBS}1/"):
        assert anon.get(url).status_code in (401, 403)


def test_base_model_catalog(api, tiny_bert):
    r = api.get("/api/v1/factory/base-models/")
    names = {m["name"]: m for m in r.json()["results"]}
    assert r.status_code == 200 and "tiny-bert" in names
    assert names["tiny-bert"]["target_modules"] == tiny_bert.target_modules
    assert names["tiny-bert"]["max_length"] == 128


def test_create_job_queues_it(api, tiny_bert):
    version = make_version(n=24)
    r = api.post(JOBS, payload(version, tiny_bert, name="api run"), format="json")
    assert r.status_code == 201, r.json()
    body = r.json()
    job = FineTuneJob.objects.get(pk=body["id"])
    assert body["status"] == "queued" and body["owner"] == "apidev" and body["name"] == "api run"
    assert job.hyperparameters["lora_r"] == 4 and body["hyperparameters"]["target_modules"] == ["query", "value"]
    assert body["metric_rows"] == [] and body["model"] is None


def test_create_with_a_preset_fills_missing_values(api, tiny_bert):
    version = make_version(n=24)
    r = api.post(JOBS, {"datanet_version": version.pk, "base_model": tiny_bert.pk, "task": "classification",
                        "preset": "quick", "epochs": 2}, format="json")
    assert r.status_code == 201, r.json()
    hp = r.json()["hyperparameters"]
    assert hp["lora_r"] == 8 and hp["epochs"] == 2 and hp["target_modules"] == tiny_bert.target_modules
    assert r.json()["preset"] == "quick" and hp["patience"] == 0
    # without epochs the preset sizes them from the version: 19 training rows, 1 step an epoch at batch 32,
    # 300 steps wanted -> balanced's cap of 20 epochs; patience from the preset
    r = api.post(JOBS, {"datanet_version": version.pk, "base_model": tiny_bert.pk, "task": "classification",
                        "preset": "balanced"}, format="json")
    assert r.status_code == 201, r.json()
    assert r.json()["hyperparameters"]["epochs"] == 20 and r.json()["hyperparameters"]["patience"] == 3
    # a custom request may leave patience out: no early stopping
    r = api.post(JOBS, {"datanet_version": version.pk, "base_model": tiny_bert.pk, "task": "classification",
                        **{k: v for k, v in small_params().items()}}, format="json")
    assert r.status_code == 201 and r.json()["hyperparameters"]["patience"] == 0
    assert r.json()["hyperparameters"]["loraplus_ratio"] == 1.0  # left out: plain LoRA
    assert r.json()["hyperparameters"]["keep_epoch"] == "best"  # left out: the best validation epoch's adapter
    # a preset for language models only is a 400 on a classifier, naming the field-less reason
    r = api.post(JOBS, {"datanet_version": version.pk, "base_model": tiny_bert.pk, "task": "classification",
                        "preset": "verbatim"}, format="json")
    assert r.status_code == 400 and "verbatim preset is for generation" in json.dumps(r.json())


@pytest.mark.parametrize("kw, field, message", [
    ({"lora_r": 0}, "lora_r", "LoRA rank must be greater than 0."),
    ({"lora_r": "two"}, "lora_r", "LoRA rank must be a whole number."),
    ({"max_length": 4096}, "max_length", "over tiny-bert's limit of 128 tokens"),
    ({"target_modules": ["c_attn"]}, "target_modules", "are not layers of tiny-bert"),
    ({"task": "generation"}, "task", "tiny-bert does not support generation"),
    ({"eval_split": 0.9}, "eval_split", "between 0.05 and 0.5"),
    ({"epochs": None}, "epochs", "Epochs is required."),
    ({"datanet_version": 999999}, "datanet_version", "Pick a Datanet version."),
    ({"base_model": 999999}, "base_model", "Pick a base model from the catalog."),
    ({"packing": True}, "packing", "Packing is for language models"),
    ({"loraplus_ratio": 0.5}, "loraplus_ratio", "LoRA+ ratio must be between 1 and 64."),
    ({"keep_epoch": "first"}, "keep_epoch", '"first" is not a valid choice.'),
])
def test_create_returns_400_with_field_errors(api, tiny_bert, kw, field, message):
    version = make_version(n=24)
    data = payload(version, tiny_bert, **kw)
    if kw.get("epochs", 1) is None:
        data.pop("epochs")
    r = api.post(JOBS, data, format="json")
    assert r.status_code == 400
    assert any(message in m for m in r.json()["error"]["fields"][field]), r.json()
    assert FineTuneJob.objects.count() == 0


def test_create_rejects_bad_shapes_and_datanets(api, tiny_bert):
    r = api.post(JOBS, {"task": "poetry"}, format="json")
    assert r.status_code == 400 and {"datanet_version", "base_model", "task"} <= set(r.json()["error"]["fields"])
    version = make_version(n=12, rows=[(f"t{i}", "neutral") for i in range(12)])
    r = api.post(JOBS, payload(version, tiny_bert), format="json")
    assert r.status_code == 400 and "only one label" in r.json()["error"]["fields"]["datanet_version"][0]


def test_create_needs_the_developer_role(tiny_bert):
    client = APIClient()
    client.force_authenticate(UserFactory(roles=[CONTRIBUTOR]))
    r = client.post(JOBS, payload(make_version(n=24), tiny_bert), format="json")
    assert r.status_code == 403 and "model developer" in r.json()["error"]["message"]
    assert client.get(JOBS).status_code == 200  # reading is open to every signed-in user


def test_list_filters(api, tiny_bert):
    mine = make_job(owner=api.user, base=tiny_bert, status="running")
    theirs = make_job(base=tiny_bert, status="failed")

    def ids(**params):
        r = api.get(JOBS, params)
        assert r.status_code == 200
        return {j["id"] for j in r.json()["results"]}

    assert ids() == {mine.pk, theirs.pk}
    assert ids(mine="true") == {mine.pk}
    assert ids(status="failed") == {theirs.pk}
    assert ids(datanet=theirs.datanet_version.datanet_id) == {theirs.pk}
    assert api.get(JOBS, {"status": "exploded"}).status_code == 400
    assert api.get(JOBS, {"base_model": "x"}).status_code == 400


def test_detail_has_metrics(api, tiny_bert):
    job = make_job(owner=api.user, base=tiny_bert, status="running", curve=8)
    r = api.get(f"{JOBS}{job.pk}/")
    body = r.json()
    assert r.status_code == 200 and body["status"] == "running" and body["step"] == 8
    kinds = [m["kind"] for m in body["metric_rows"]]
    assert kinds.count("train") == 8 and kinds.count("eval") == 2
    assert body["metric_rows"][-1]["values"]["macro_f1"] == pytest.approx(0.7)
    assert "queued by" in body["log"]
    assert api.get(f"{JOBS}999999/").status_code == 404


def test_cancel_and_retry(api, tiny_bert):
    job = make_job(owner=api.user, base=tiny_bert)
    r = api.post(f"{JOBS}{job.pk}/cancel/")
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    r = api.post(f"{JOBS}{job.pk}/cancel/")
    assert r.status_code == 409 and "only queued or running jobs can be cancelled" in r.json()["error"]["message"]
    r = api.post(f"{JOBS}{job.pk}/retry/")
    assert r.status_code == 200 and r.json()["status"] == "queued"
    assert api.post(f"{JOBS}{job.pk}/retry/").status_code == 409
    running = make_job(owner=api.user, base=tiny_bert, status="running")
    r = api.post(f"{JOBS}{running.pk}/cancel/")
    assert r.status_code == 200 and r.json()["status"] == "running" and r.json()["cancel_requested"] is True
    assert api.post(f"{JOBS}999999/cancel/").status_code == 404


def test_cancel_and_retry_are_for_the_owner_only(api, tiny_bert):
    job = make_job(base=tiny_bert)
    r = api.post(f"{JOBS}{job.pk}/cancel/")
    assert r.status_code == 403 and "owner" in r.json()["error"]["message"]
    contributor = APIClient()
    contributor.force_authenticate(UserFactory(roles=[CONTRIBUTOR]))
    assert contributor.post(f"{JOBS}{job.pk}/retry/").status_code == 403
    staff = APIClient()
    staff.force_authenticate(UserFactory(is_staff=True))
    assert staff.post(f"{JOBS}{job.pk}/cancel/").status_code == 200  # admins may act on any job
    assert FineTuneJob.objects.get(pk=job.pk).status == "cancelled"


def test_models_list_detail_and_adapter(api, tiny_bert, trained_adapter):
    model = make_model(job=make_job(owner=api.user, base=tiny_bert), result=trained_adapter)
    r = api.get("/api/v1/factory/models/")
    assert r.status_code == 200 and [m["id"] for m in r.json()["results"]] == [model.pk]
    assert api.get("/api/v1/factory/models/", {"task": "generation"}).json()["results"] == []
    r = api.get(f"/api/v1/factory/models/{model.pk}/")
    body = r.json()
    assert body["version_root"] == model.version_root and body["adapter_sha256"] == model.adapter_sha256
    assert body["base_model"] == "tiny-bert" and body["model_card"].startswith("# ") and body["labels"]
    r = api.get(f"/api/v1/factory/models/{model.pk}/adapter/")
    assert r.status_code == 200 and r["Content-Type"] == "application/zip"
    assert r["X-Adapter-SHA256"] == model.adapter_sha256
    names = {n.rsplit("/", 1)[-1] for n in zipfile.ZipFile(io.BytesIO(r.content)).namelist()}
    assert {"adapter_model.safetensors", "adapter_config.json", "README.md"} <= names
    job = api.get(f"{JOBS}{model.job_id}/").json()
    assert job["model"] == model.pk and job["status"] == "succeeded"
    assert api.get("/api/v1/factory/models/999999/").status_code == 404
    model.adapter_dir = "/nonexistent/adapter"
    model.save()
    r = api.get(f"/api/v1/factory/models/{model.pk}/adapter/")
    assert r.status_code == 404 and "missing" in r.json()["error"]["message"]


def test_schema_documents_the_factory_api(api):
    r = api.get("/api/v1/schema/", {"format": "json"})
    assert r.status_code == 200
    paths = r.json()["paths"]
    for path in ("/api/v1/factory/jobs/", "/api/v1/factory/jobs/{job_id}/cancel/",
                 "/api/v1/factory/models/{model_id}/adapter/", "/api/v1/factory/base-models/"):
        assert path in paths
    assert "requestBody" in paths["/api/v1/factory/jobs/"]["post"]
