"""The ingest task through a real Celery worker on the `cpu` queue."""
import time

import pytest

from datanets.models import Contribution, Record
from datanets.tests.factories import DatanetFactory, contributor
from datanets.tests.helpers import PHRASEBANK, upload

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def wait_for(predicate, timeout=90.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.3)
    return False


def test_upload_is_ingested_by_a_real_cpu_worker(start_worker):
    worker = start_worker(queues="cpu", DATANET_INGEST_BATCH_ROWS="500")
    datanet = DatanetFactory()
    res = upload(datanet, contributor("walker"), "financial_phrasebank.csv", PHRASEBANK.read_bytes())
    cid = res.contribution.id
    seen_progress = set()

    def done():
        c = Contribution.objects.get(pk=cid)
        seen_progress.add(c.ingest_progress)
        return c.ingest_state in (Contribution.IngestState.DONE, Contribution.IngestState.FAILED)

    assert wait_for(done), worker.log()
    c = Contribution.objects.get(pk=cid)
    assert c.ingest_state == Contribution.IngestState.DONE, (c.ingest_errors, worker.log())
    assert c.record_count == Record.objects.filter(contribution=c).count() > 4800
    assert c.ingest_progress == 1.0
    assert "contribution_ingest_task" in worker.log()
