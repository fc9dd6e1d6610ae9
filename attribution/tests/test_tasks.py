"""The index build through a real Celery worker on the `gpu` queue (CPU here; the same code path)."""
import time

import pytest
from django.db import transaction

from attribution import selectors, services
from attribution.models import AttributionIndex
from attribution.tests.factories import make_model

BUILD_TIMEOUT_S = 120


@pytest.mark.slow
def test_index_builds_on_a_real_gpu_queue_worker(transactional_db, start_worker, trained_adapter, attr_base_dir,
                                                  tmp_path):
    model = make_model(adapter_src=trained_adapter, base_dir=attr_base_dir, workdir=tmp_path)
    worker = start_worker(queues="gpu", concurrency=1, FACTORY_CPU_THREADS=1)
    with transaction.atomic():  # as the factory calls it: inside its transaction, sent on commit
        index = services.attribution_index_build_enqueue(model=model)
    deadline = time.monotonic() + BUILD_TIMEOUT_S
    while time.monotonic() < deadline:
        index.refresh_from_db()
        if index.status not in AttributionIndex.ACTIVE:
            break
        time.sleep(0.5)
    assert index.status == AttributionIndex.Status.READY, f"{index.status}: {index.error}\n{worker.log()}"
    assert index.worker == worker.hostname and index.attempts == 1
    assert sum(selectors.model_contributor_weights(model=model).values()) == 1
    out = services.prediction_explain(model=model, text="profit rose strongly", top_k=2)
    assert len(out["records"]) == 2
