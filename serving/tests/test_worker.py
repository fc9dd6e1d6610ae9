"""The `gpu`-queue path: the web side writes the row, a real Celery worker runs the model and charges."""
from __future__ import annotations

from decimal import Decimal

import pytest
from rest_framework.test import APIClient

from accounts.tests.factories import UserFactory
from factory.tests.factories import make_version
from ledger.models import RewardAccrual
from serving.models import Inference, SpanIndex
from serving.tests.factories import make_model

SPEECHES = [("First Citizen: Before we proceed any further, hear me speak.", ""),
            ("All: Speak, speak. You are all resolved rather to die than to famish?", "")]


@pytest.mark.slow
def test_gpu_worker_serves_the_api_and_builds_span_indexes(start_worker, settings, tiny_bert, tiny_gpt2,
                                                           bert_adapters, gpt2_adapters):
    settings.WEB3_PROVIDER_URI = ""
    settings.SERVING_BACKEND = "celery"
    settings.SERVING_TIMEOUT_SECONDS = 120
    start_worker(queues="gpu,cpu", concurrency=1, WEB3_PROVIDER_URI="", FACTORY_CPU_THREADS=1, OMP_NUM_THREADS=1)
    model = make_model(base_dir=tiny_bert, adapter_dir=bert_adapters[2], version=make_version(n=6))
    api = APIClient()
    api.force_authenticate(UserFactory())
    resp = api.post(f"/api/v1/models/{model.pk}/infer", {"text": "profit rose"}, format="json")
    assert resp.status_code == 200, resp.content
    assert set(resp.json()["output"]["probabilities"]) == {"x", "y"}
    row = Inference.objects.get()
    assert row.status == Inference.Status.DONE
    assert sum(a.amount for a in RewardAccrual.objects.filter(reference=f"inference:{row.pk}")) == Decimal("0.009")

    # A generator's first call queues its version's span index; the cpu queue builds it.
    gen = make_model(base_dir=tiny_gpt2, adapter_dir=gpt2_adapters[1],
                     version=make_version(task="generation", rows=SPEECHES, contributors=1, slug="lit-w"))
    assert api.post(f"/api/v1/models/{gen.pk}/infer", {"text": "All:"}, format="json").status_code == 200
    import time

    deadline = time.monotonic() + 60
    while SpanIndex.objects.get().status != SpanIndex.Status.READY and time.monotonic() < deadline:
        time.sleep(0.2)
    assert SpanIndex.objects.get().status == SpanIndex.Status.READY
