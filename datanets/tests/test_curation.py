"""Curation: services, outbox rows, audit trail, and the admin scoped to a curator's Datanets."""
import pytest
from django.urls import reverse

from core.errors import ApplicationError
from core.roles import CURATOR, user_has_role
from datanets import services
from datanets.models import Contribution, CurationDecision
from datanets.tests.factories import DatanetFactory, contributor, curator_of
from datanets.tests.helpers import ingest, upload
from ledger.models import LedgerTransaction

pytestmark = pytest.mark.django_db
CSV = b"label,text\npositive,Profit rose.\nnegative,Sales fell.\nneutral,Monday meeting.\n"


@pytest.fixture
def setup():
    datanet = DatanetFactory(name="Finance", slash_fraction="0.25")
    alice = contributor("alice")
    cur = curator_of(datanet, "carol")
    c = ingest(upload(datanet, alice, "a.csv", CSV))
    return datanet, alice, cur, c


def test_curator_appointment_gives_admin_entry(setup):
    datanet, _, cur, _ = setup
    cur.refresh_from_db()
    assert cur.is_staff and not cur.is_superuser and user_has_role(cur, CURATOR)
    assert cur.has_perm("datanets.change_contribution") and not cur.has_perm("datanets.delete_contribution")


def test_accept_releases_stake_through_outbox_and_is_audited(setup):
    datanet, alice, cur, c = setup
    c = services.contribution_accept(contribution=c, curator=cur, reason="clean")
    assert c.status == Contribution.Status.ACCEPTED and c.curator == cur and c.decided_at
    row = LedgerTransaction.objects.get(idempotency_key=f"contribution_accept:{c.id}")
    assert row.kind == "contribution_accept"
    assert row.payload == {"contribution_id": c.id, "datanet_id": datanet.id, "content_hash": "0x" + c.file_sha256,
                           "decider_id": cur.pk}  # whose custodial key signs: the ledger reads no Contribution
    d = CurationDecision.objects.get()
    assert (d.curator, d.decision, d.reason) == (cur, "accepted", "clean")
    with pytest.raises(ApplicationError, match="already accepted"):
        services.contribution_reject(contribution=c, curator=cur, reason="changed my mind")


def test_reject_slashes_with_reason(setup):
    datanet, _, cur, c = setup
    with pytest.raises(ApplicationError, match="needs a reason"):
        services.contribution_reject(contribution=c, curator=cur, reason="  ")
    c = services.contribution_reject(contribution=c, curator=cur, reason="labels shuffled")
    row = LedgerTransaction.objects.get(idempotency_key=f"contribution_reject:{c.id}")
    assert row.payload == {"contribution_id": c.id, "datanet_id": datanet.id, "content_hash": "0x" + c.file_sha256,
                           "slash_fraction": "0.25", "reason": "labels shuffled", "decider_id": cur.pk}


def test_contributor_can_never_review_own_contribution(setup):
    datanet, alice, cur, _ = setup
    # Even a curator of this Datanet cannot decide their own upload.
    services.curator_appoint(datanet=datanet, user=alice)
    c = ingest(upload(datanet, alice, "b.csv", CSV + b"positive,More.\n"))
    with pytest.raises(ApplicationError, match="your own contribution"):
        services.contribution_accept(contribution=c, curator=alice)
    assert Contribution.objects.get(pk=c.pk).status == Contribution.Status.PENDING
    assert not CurationDecision.objects.filter(contribution=c).exists()


def test_curator_of_another_datanet_cannot_decide(setup):
    _, _, _, c = setup
    other = curator_of(DatanetFactory(), "dave")
    with pytest.raises(ApplicationError, match="not a curator"):
        services.contribution_accept(contribution=c, curator=other)


def test_failed_ingest_cannot_be_reviewed(setup):
    datanet, alice, cur, _ = setup
    c = ingest(upload(datanet, alice, "bad.csv", b"label,text\nbullish,x\n"))
    with pytest.raises(ApplicationError, match="not ingested"):
        services.contribution_accept(contribution=c, curator=cur)


def test_admin_is_scoped_to_curated_datanets(setup, client):
    datanet, alice, cur, c = setup
    other = DatanetFactory(name="Elsewhere")
    hidden = ingest(upload(other, alice, "z.csv", CSV))
    client.force_login(cur)
    resp = client.get(reverse("admin:datanets_pendingcontribution_changelist"))
    assert resp.status_code == 200
    body = resp.content.decode()
    assert "a.csv" in body and "z.csv" not in body
    assert client.get(reverse("admin:datanets_contribution_change", args=[hidden.pk])).status_code == 302  # not found
    page = client.get(reverse("admin:datanets_contribution_change", args=[c.pk])).content.decode()
    assert "Sales fell." in page and "Label distribution" in page


def test_admin_single_decision_and_bulk_actions(setup, client):
    datanet, alice, cur, c = setup
    client.force_login(cur)
    url = reverse("admin:datanets_contribution_change", args=[c.pk])
    resp = client.post(url, {"decision": "rejected", "decision_reason": "", "decisions-TOTAL_FORMS": 0,
                             "decisions-INITIAL_FORMS": 0})
    assert resp.status_code == 200 and "A rejection needs a reason" in resp.content.decode()
    resp = client.post(url, {"decision": "accepted", "decision_reason": "ok", "decisions-TOTAL_FORMS": 0,
                             "decisions-INITIAL_FORMS": 0})
    assert resp.status_code == 302
    assert Contribution.objects.get(pk=c.pk).status == Contribution.Status.ACCEPTED

    bob = contributor("bob")
    c2 = ingest(upload(datanet, bob, "b.csv", b"label,text\npositive,Bob 1.\n"))
    c3 = ingest(upload(datanet, bob, "c.csv", b"label,text\npositive,Bob 2.\n"))
    changelist = reverse("admin:datanets_pendingcontribution_changelist")
    resp = client.post(changelist, {"action": "reject_selected", "_selected_action": [c2.pk, c3.pk]})
    assert resp.status_code == 200 and "Reason" in resp.content.decode()  # the intermediate page
    resp = client.post(changelist, {"action": "reject_selected", "_selected_action": [c2.pk, c3.pk], "apply": "1",
                                    "reason": "spam"})
    assert resp.status_code == 302
    assert set(Contribution.objects.filter(pk__in=[c2.pk, c3.pk]).values_list("status", flat=True)) == {"rejected"}
    assert CurationDecision.objects.filter(reason="spam").count() == 2


def test_bulk_accept_skips_own_contribution_with_message(setup, client):
    datanet, alice, cur, c = setup
    services.curator_appoint(datanet=datanet, user=alice)
    own = ingest(upload(datanet, alice, "own.csv", b"label,text\npositive,Own.\n"))
    client.force_login(alice)
    resp = client.post(reverse("admin:datanets_pendingcontribution_changelist"),
                       {"action": "accept_selected", "_selected_action": [c.pk, own.pk]}, follow=True)
    assert "your own contribution" in resp.content.decode()
    assert Contribution.objects.get(pk=own.pk).status == "pending"


def test_the_datanet_create_row_carries_what_the_ledger_needs():
    """The ledger reads no Datanet row (it is a sink): owner, curators and terms travel in the payload."""
    owner, cur = contributor("olga"), contributor("cora")
    datanet = services.datanet_create(owner=owner, name="Legal", labels=["a", "b"], min_stake="12.5",
                                      slash_fraction="0.3", curators=[cur])
    row = LedgerTransaction.objects.get(idempotency_key=f"datanet_create:{datanet.pk}")
    assert row.payload == {"datanet_id": datanet.pk, "name": "Legal", "slug": datanet.slug, "owner_id": owner.pk,
                           "curator_ids": [cur.pk], "min_stake": "12.5", "slash_bps": 3000}
