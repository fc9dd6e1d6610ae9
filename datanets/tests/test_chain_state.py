"""A contribution whose stake or accept failed on-chain says so to its contributor and curators (page and API),
with a retry; it is never shown as plainly Accepted."""
import pytest
from django.urls import reverse
from rest_framework.test import APIClient

from datanets import services
from datanets.selectors import contribution_chain_state
from datanets.tests.factories import DatanetFactory, contributor, curator_of
from datanets.tests.helpers import ingest, upload
from ledger.models import LedgerTransaction

pytestmark = pytest.mark.django_db
Status = LedgerTransaction.Status


def _accepted():
    datanet = DatanetFactory()
    alice, cora = contributor("alice"), curator_of(datanet, "cora")
    c = ingest(upload(datanet, alice, "ok.csv", b"label,text\npositive,Good.\nneutral,Flat.\n"))
    c = services.contribution_accept(contribution=c, curator=cora)
    return c, alice, cora


def test_outbox_rows_give_the_state():
    c, _, _ = _accepted()
    state = contribution_chain_state(contribution=c)
    assert state["state"] == "pending" and [s["kind"] for s in state["steps"]] == ["contribution_stake",
                                                                                  "contribution_accept"]
    LedgerTransaction.objects.filter(kind__startswith="contribution_").update(status=Status.CONFIRMED)
    assert contribution_chain_state(contribution=c)["state"] == "confirmed"


def test_failed_stake_is_shown_and_retried_by_the_contributor(client):
    c, alice, cora = _accepted()
    stake = LedgerTransaction.objects.get(idempotency_key=f"contribution_stake:{c.pk}")
    stake.status, stake.last_error = Status.FAILED, "reverted: ZeroAddress()"
    stake.save()
    client.force_login(alice)
    body = client.get(reverse("datanets:contribution", args=[c.pk])).content.decode()
    assert "Stake failed on-chain" in body and "ZeroAddress()" in body and "Retry on-chain" in body
    assert '<span class="badge ok">Accepted</span>' not in body
    api = APIClient()
    api.force_authenticate(cora)
    chain = api.get(f"/api/v1/contributions/{c.pk}/").json()["chain"]
    assert chain["state"] == "failed" and chain["failed"]["kind"] == "contribution_stake"

    resp = client.post(reverse("datanets:contribution-chain-retry", args=[c.pk]))
    assert resp.status_code == 302
    stake.refresh_from_db()
    assert stake.status == Status.QUEUED and stake.last_error == ""
    # Nothing failed any more: a second retry is refused with a message, not an error page.
    client.post(reverse("datanets:contribution-chain-retry", args=[c.pk]))
    assert "no failed chain write" in client.get(reverse("datanets:contribution", args=[c.pk])).content.decode()


def test_someone_else_cannot_retry(client):
    c, _, _ = _accepted()
    LedgerTransaction.objects.filter(idempotency_key=f"contribution_accept:{c.pk}").update(status=Status.FAILED)
    client.force_login(contributor("mallory"))
    assert client.post(reverse("datanets:contribution-chain-retry", args=[c.pk])).status_code == 403
    assert LedgerTransaction.objects.get(idempotency_key=f"contribution_accept:{c.pk}").status == Status.FAILED
