"""Batch inference (issue 15, item 4): a CSV of inputs in, a job on a real `gpu` worker, a CSV of outputs out;
each answered row a paid call charged once, refused rows not charged; who may see a batch; bad uploads."""
from __future__ import annotations

import csv
import io
import json
import time
from decimal import Decimal

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from rest_framework.test import APIClient

from accounts.tests.factories import UserFactory
from factory.tests.factories import make_version
from ledger.models import RewardAccrual
from serving.batch import ERR_NO_TEXT, ERR_TOO_MANY, batch_run
from serving.models import BatchInference, Inference
from serving.tests.factories import make_model

CSV = (b"id,text\n"
       b"a,the company profit rose strongly\n"
       b"b,\n"
       b"c,\"sales fell, the plant closed\"\n"
       b"d,the meeting was held in the office\n")


@pytest.fixture(autouse=True)
def _settings(settings, tmp_path, monkeypatch):
    from serving import services

    # Single calls are compared with the worker's answers: an engine of this test's settings (float32), not one
    # an earlier test left in this process.
    monkeypatch.setattr(services, "_engine", None)
    monkeypatch.setattr(services, "_batcher", None)
    settings.SERVING_DTYPE = "float32"
    settings.WEB3_PROVIDER_URI = ""
    settings.SERVING_BACKEND = "inprocess"
    settings.SERVING_FEE_PER_CALL = "0.01"
    settings.SERVING_MAX_BATCH = 2  # two chunks for three answerable rows
    settings.MEDIA_ROOT = tmp_path / "media"


def _upload(api, model_id, data=CSV, name="inputs.csv"):
    return api.post(f"/api/v1/models/{model_id}/batches", {"file": SimpleUploadedFile(name, data, "text/csv")},
                    format="multipart")


@pytest.mark.slow
def test_a_batch_runs_on_a_real_worker_and_answers_as_infer(start_worker, tiny_bert, bert_adapters):
    start_worker(queues="gpu", WEB3_PROVIDER_URI="", SERVING_MAX_BATCH=2, SERVING_FEE_PER_CALL="0.01",
                 OMP_NUM_THREADS=1)
    model = make_model(base_dir=tiny_bert, adapter_dir=bert_adapters[1], version=make_version(n=6))
    user = UserFactory()
    api = APIClient()
    api.force_authenticate(user)
    resp = _upload(api, model.pk)
    assert resp.status_code == 202, resp.content
    body = resp.json()
    assert body["status"] == "queued" and body["rows"] == 4 and body["output"] is None
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        body = api.get(f"/api/v1/batches/{body['id']}").json()
        if body["status"] in ("done", "failed"):
            break
        time.sleep(0.5)
    assert body["status"] == "done", body
    assert (body["done_rows"], body["failed_rows"]) == (3, 1) and Decimal(body["fee"]) == Decimal("0.03")
    out = api.get(body["output"])
    assert out.status_code == 200 and out["Content-Type"] == "text/csv"
    rows = list(csv.DictReader(io.StringIO(b"".join(out.streaming_content).decode())))
    assert [r["id"] for r in rows] == ["a", "b", "c", "d"]  # input order and columns kept
    assert rows[1]["output"] == "" and rows[1]["error"] == "The input text is empty." and rows[1]["inference_id"]
    # Each answered row is what one /infer call answers for the same text.
    for row in (rows[0], rows[2], rows[3]):
        single = api.post(f"/api/v1/models/{model.pk}/infer", {"text": row["text"]}, format="json").json()
        assert row["output"] == single["output"]["label"] and row["error"] == ""
        for label, p in json.loads(row["probabilities"]).items():
            assert abs(p - single["output"]["probabilities"][label]) < 1e-5
        inf = Inference.objects.get(pk=row["inference_id"])
        assert inf.channel == "batch" and inf.status == "done" and inf.fee == Decimal("0.01")
        assert RewardAccrual.objects.filter(reference=f"inference:{inf.pk}").exists()  # the developer's part
    refused = Inference.objects.get(pk=rows[1]["inference_id"])
    assert refused.status == "failed" and refused.fee == 0 and not RewardAccrual.objects.filter(
        reference=f"inference:{refused.pk}").exists()

    # Running it again (a redelivered message) answers and charges nothing twice.
    batch = BatchInference.objects.get(pk=body["id"])
    BatchInference.objects.filter(pk=batch.pk).update(status="running")
    batch_run(batch_id=batch.pk)
    assert Inference.objects.filter(batch=batch).count() == 4
    assert Inference.objects.filter(batch=batch, fee__gt=0).count() == 3

    # Only its owner sees it.
    other = APIClient()
    other.force_authenticate(UserFactory())
    assert other.get(f"/api/v1/batches/{batch.pk}").status_code == 404
    assert other.get(f"/api/v1/batches/{batch.pk}/output").status_code == 404

    # The page lists it with its download.
    client = Client()
    client.force_login(user)
    page = client.get(f"/factory/models/{model.pk}/batches/").content.decode()
    assert "inputs.csv" in page and f"/factory/batches/{batch.pk}/output.csv" in page
    assert client.get(f"/factory/batches/{batch.pk}/output.csv").status_code == 200


@pytest.mark.django_db
def test_bad_uploads_are_refused_before_anything_is_queued(tiny_bert, bert_adapters, settings):
    settings.SERVING_BATCH_MAX_ROWS = 3
    model = make_model(base_dir=tiny_bert, adapter_dir=bert_adapters[0])
    api = APIClient()
    assert _upload(api, model.pk).status_code in (401, 403)
    api.force_authenticate(UserFactory())
    r = _upload(api, model.pk, data=b"sentence,label\nhello,x\n")
    assert r.status_code == 400 and r.json()["error"]["message"] == ERR_NO_TEXT.format(found="sentence, label")
    r = _upload(api, model.pk)
    assert r.status_code == 413 and r.json()["error"]["message"] == ERR_TOO_MANY.format(n=4, limit=3)
    r = _upload(api, model.pk, data=b"text\n")
    assert r.status_code == 400 and "no rows" in r.json()["error"]["message"]
    r = _upload(api, model.pk, data=b"\xff\xfe\x00bad")
    assert r.status_code == 400
    assert BatchInference.objects.count() == 0
    assert api.post("/api/v1/models/999999/batches", {"file": SimpleUploadedFile("a.csv", CSV)},
                    format="multipart").status_code == 404
    # Not done yet: no output.
    settings.SERVING_BATCH_MAX_ROWS = 100
    r = _upload(api, model.pk)
    assert r.status_code == 202
    assert api.get(f"/api/v1/batches/{r.json()['id']}/output").status_code == 409
