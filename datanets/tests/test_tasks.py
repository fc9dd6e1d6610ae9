"""The ingest task through a real Celery worker on the `cpu` queue."""
import time

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

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


def test_upload_is_ingested_by_a_real_cpu_worker(start_worker, client):
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

    # The browser path on the same worker: upload, confirm the guessed columns, the page polls until done.
    alice = contributor("alice")
    client.force_login(alice)
    resp = client.post(reverse("datanets:upload", args=[datanet.slug]),
                       {"file": SimpleUploadedFile("mine.csv", b"label,text\npositive,Orders doubled.\nneutral,AGM on May 3.\n"),
                        "text_mode": "line"})
    page = resp.url
    assert "Map the columns" in client.get(page).content.decode()
    assert client.post(page, {"text_column": "text", "label_column": "label"}).status_code == 302
    mine = Contribution.objects.get(contributor=alice)
    status_url = reverse("datanets:contribution-status", args=[mine.id])
    assert wait_for(lambda: client.get(status_url).has_header("HX-Refresh")), worker.log()
    assert "2 records stored" in client.get(page).content.decode()
