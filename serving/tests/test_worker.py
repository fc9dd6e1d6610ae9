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
    assert row.status == Inference.Status.DONE and row.settlement == Inference.Settlement.PENDING  # no index
    assert sum(a.amount for a in RewardAccrual.objects.filter(reference=f"inference:{row.pk}")) == Decimal("0.002")

    # A generator's first call queues its version's span index; the cpu queue builds it.
    gen = make_model(base_dir=tiny_gpt2, adapter_dir=gpt2_adapters[1],
                     version=make_version(task="generation", rows=SPEECHES, contributors=1, slug="lit-w"))
    assert api.post(f"/api/v1/models/{gen.pk}/infer", {"text": "All:"}, format="json").status_code == 200
    import time

    deadline = time.monotonic() + 60
    while SpanIndex.objects.get().status != SpanIndex.Status.READY and time.monotonic() < deadline:
        time.sleep(0.2)
    assert SpanIndex.objects.get().status == SpanIndex.Status.READY


@pytest.mark.slow
def test_held_answers_are_settled_by_a_real_worker_when_the_index_is_ready(start_worker, settings, trained_adapter,
                                                                          attr_base_dir, tmp_path):
    """The whole path on real processes: a paid call before the index (held), the index built by the `gpu`
    worker, its ready signal queues the settlement, the same worker settles by attribution."""
    import time

    from django.db import transaction

    from attribution.models import AttributionIndex
    from attribution.services import attribution_index_build_enqueue
    from attribution.tests.factories import make_model as make_trained_model
    from serving.services import inference_execute

    settings.WEB3_PROVIDER_URI = ""
    settings.SERVING_BACKEND = "inprocess"
    worker = start_worker(queues="gpu", concurrency=1, WEB3_PROVIDER_URI="", FACTORY_CPU_THREADS=1, OMP_NUM_THREADS=1)
    model = make_trained_model(adapter_src=trained_adapter, base_dir=attr_base_dir, workdir=tmp_path)
    rows = [inference_execute(model=model, user=UserFactory(), text=t)
            for t in ("the company profit rose in quarter 99", "sales fell and jobs were cut")]
    assert all(r.settlement == Inference.Settlement.PENDING for r in rows)
    with transaction.atomic():
        attribution_index_build_enqueue(model=model)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if not Inference.objects.filter(settlement=Inference.Settlement.PENDING).exists():
            break
        time.sleep(0.5)
    assert AttributionIndex.objects.get(model=model).status == AttributionIndex.Status.READY, worker.log()
    for row in rows:
        row.refresh_from_db()
        assert row.settlement == Inference.Settlement.SETTLED, worker.log()
        assert row.settlement_rule in (Inference.Rule.ATTRIBUTION, Inference.Rule.MODEL_WEIGHTS)
        assert row.attribution["label"] == row.output["label"]
        contributors = RewardAccrual.objects.filter(reference=f"inference:{row.pk}:contributors")
        assert sum(a.amount for a in contributors) == Decimal("0.007")
        assert {str(a.user_id): format(a.amount, "f") for a in contributors} == {
            u: format(Decimal(a), "f") for u, a in row.fee_split["contributors"].items()}
