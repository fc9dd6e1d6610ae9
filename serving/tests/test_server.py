"""The long-lived inference process (serving.openlora.server) and the web app's `http` backend."""
from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from decimal import Decimal

import pytest
import torch
from rest_framework.test import APIClient

from accounts.tests.factories import UserFactory
from factory.tests.factories import make_version
from ledger.models import RewardAccrual
from serving.openlora import ServingConfig, ServingEngine
from serving.openlora.server import make_server
from serving.tests.factories import make_model


@pytest.fixture
def server():
    torch.set_num_threads(1)
    srv = make_server(ServingEngine(ServingConfig(cache_adapters=4, device="cpu")), port=0, max_wait_ms=1)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def post(url, body):
    req = urllib.request.Request(  # noqa: S310 - the test's own server
        url + "/infer", data=json.dumps(body).encode(), method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:  # noqa: S310
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_server_answers_and_refuses(server, tiny_bert, bert_adapters):
    code, body = post(server, {"base_path": str(tiny_bert), "adapter_dir": str(bert_adapters[3]), "text": "hi"})
    assert code == 200, body
    assert set(body["probabilities"]) == {"neg", "neu", "pos", "other"}
    assert post(server, {"text": "no base"})[0] == 400
    code, body = post(server, {"base_path": str(tiny_bert), "adapter_dir": "/nonexistent", "text": "x"})
    assert code == 422 and "No LoRA adapter" in body["detail"]
    with urllib.request.urlopen(server + "/stats", timeout=10) as resp:  # noqa: S310
        assert json.loads(resp.read())["misses"] == 1


@pytest.mark.django_db
def test_api_through_the_inference_server(server, settings, tiny_bert, bert_adapters):
    settings.WEB3_PROVIDER_URI = ""
    settings.SERVING_BACKEND, settings.SERVING_URL = "http", server
    model = make_model(base_dir=tiny_bert, adapter_dir=bert_adapters[0], version=make_version(n=6))
    api = APIClient()
    api.force_authenticate(UserFactory())
    resp = api.post(f"/api/v1/models/{model.pk}/infer", {"text": "profit rose"}, format="json")
    assert resp.status_code == 200, resp.content
    assert set(resp.json()["output"]["probabilities"]) == {"neg", "pos"}
    # No attribution index yet: the developer's 20% accrues at once, the contributors' 70% is held until the
    # index is ready (settled by attribution then, never by record counts); the protocol's 10% is not an accrual.
    assert resp.json()["settlement"]["status"] == "pending"
    assert sum(a.amount for a in RewardAccrual.objects.all()) == Decimal("0.002")
