"""Harm flags on the contribution page and the API: the contributor sees theirs, curators act, nobody else."""
import pytest
from django.urls import reverse
from rest_framework.test import APIClient

from datanets import harm, services
from datanets.models import Contribution, HarmFlag
from datanets.tests.factories import DatanetFactory, contributor, curator_of
from datanets.tests.helpers import ingest, upload
from ledger.models import LedgerTransaction

pytestmark = pytest.mark.django_db
CSV = b"label,text\npositive,Profit rose.\nnegative,Sales rose sharply.\nneutral,Monday meeting.\n"


@pytest.fixture
def flagged():
    datanet = DatanetFactory(slash_fraction="0.25")
    erin, cora, mallory = contributor("erin"), curator_of(datanet, "cora"), contributor("mallory")
    c = services.contribution_accept(contribution=ingest(upload(datanet, erin, "e.csv", CSV)), curator=cora)
    bad = c.records.get(label="negative")
    [flag] = harm.harm_flags_record(
        datanet=datanet, model_id=7, model_name="quick finance", validation_queries=120,
        harms=[{"contributor_id": erin.pk, "statistic": -0.08, "null_bound": 0.05, "contribution_ids": [c.pk],
                "records": [(bad.pk, -0.06)]}])
    return datanet, c, flag, erin, cora, mallory


def test_the_contributor_sees_the_flag_and_evidence_but_cannot_act(client, flagged):
    _, c, flag, erin, _, _ = flagged
    client.force_login(erin)
    body = client.get(reverse("datanets:contribution", args=[c.pk])).content.decode()
    assert 'id="harm-flags"' in body and "quick finance" in body and "Sales rose sharply." in body
    assert "Slash bonded stakes" not in body
    assert 'id="stake-bond"' in body and "Bonded until about" in body
    client.post(reverse("datanets:harm-flag-decide", args=[flag.pk, "dismiss"]))
    flag.refresh_from_db()
    assert flag.status == HarmFlag.Status.OPEN


def test_others_see_nothing_and_cannot_act(client, flagged):
    _, c, flag, _, _, mallory = flagged
    client.force_login(mallory)
    assert client.get(reverse("datanets:contribution", args=[c.pk])).status_code == 403
    assert client.post(reverse("datanets:harm-flag-decide", args=[flag.pk, "slash"]), {"reason": "x"}).status_code == 403
    api = APIClient()
    api.force_authenticate(mallory)
    assert api.get(f"/api/v1/contributions/{c.pk}/harm-flags/").status_code == 404
    assert api.get(f"/api/v1/datanets/{c.datanet.slug}/harm-flags/").status_code == 404
    assert api.post(f"/api/v1/harm-flags/{flag.pk}/", {"action": "dismiss"}).status_code == 404
    assert not LedgerTransaction.objects.filter(kind="contribution_slash").exists()


def test_a_curator_slashes_from_the_page(client, flagged):
    _, c, flag, _, cora, _ = flagged
    client.force_login(cora)
    body = client.get(reverse("datanets:contribution", args=[c.pk])).content.decode()
    assert "Slash bonded stakes" in body and "Dismiss" in body
    resp = client.post(reverse("datanets:harm-flag-decide", args=[flag.pk, "slash"]),
                       {"reason": "flipped labels", "contribution": c.pk})
    assert resp.status_code == 302 and resp["Location"] == reverse("datanets:contribution", args=[c.pk])
    flag.refresh_from_db()
    c.refresh_from_db()
    assert flag.status == HarmFlag.Status.SLASHED and c.bond == Contribution.Bond.SLASHED
    row = LedgerTransaction.objects.get(idempotency_key=f"contribution_slash:{c.pk}")
    assert row.payload["curator_id"] == cora.pk and row.payload["harm_flag_id"] == flag.pk
    assert row.payload["slash_fraction"] == "0.25"


def test_the_api_lists_and_dismisses(flagged):
    datanet, c, flag, erin, cora, _ = flagged
    api = APIClient()
    api.force_authenticate(erin)
    [shown] = api.get(f"/api/v1/contributions/{c.pk}/harm-flags/").json()
    assert shown["statistic"] == -0.08 and shown["contribution_ids"] == [c.pk] and shown["status"] == "open"
    assert shown["evidence"]["records"][0]["text"] == "Sales rose sharply."
    assert api.post(f"/api/v1/harm-flags/{flag.pk}/", {"action": "dismiss"}).status_code == 403  # not her own
    api.force_authenticate(cora)
    assert [f["id"] for f in api.get(f"/api/v1/datanets/{datanet.slug}/harm-flags/").json()] == [flag.pk]
    resp = api.post(f"/api/v1/harm-flags/{flag.pk}/", {"action": "dismiss", "reason": "hard but correct"})
    assert resp.status_code == 200 and resp.json()["status"] == "dismissed"
    assert api.post(f"/api/v1/harm-flags/{flag.pk}/", {"action": "slash", "reason": "x"}).status_code == 400
    c.refresh_from_db()
    assert c.bond == Contribution.Bond.BONDED  # dismissed: nothing slashed


def test_a_rebuilt_index_refreshes_open_flags_and_drops_those_no_longer_found(flagged):
    datanet, c, flag, erin, _, _ = flagged
    harm.harm_flags_record(datanet=datanet, model_id=7, model_name="quick finance", validation_queries=120,
                           harms=[{"contributor_id": erin.pk, "statistic": -0.2, "null_bound": 0.05,
                                   "contribution_ids": [c.pk], "records": []}])
    flag.refresh_from_db()
    assert flag.statistic == -0.2
    harm.harm_flags_record(datanet=datanet, model_id=7, model_name="quick finance", validation_queries=120, harms=[])
    assert not HarmFlag.objects.filter(pk=flag.pk).exists()


def test_the_harm_threshold_is_set_at_creation(client):
    from datanets.models import Datanet

    cur = curator_of(DatanetFactory(), "creator")
    client.force_login(cur)
    client.post(reverse("datanets:create"), {"name": "Strict", "domain": "finance", "task": "classification",
                                             "labels": "positive\nnegative", "min_stake": "10",
                                             "slash_fraction": "0.5", "max_text_length": "1000",
                                             "harm_threshold": "0.05"})
    assert Datanet.objects.get(name="Strict").harm_threshold == 0.05
    api = APIClient()
    api.force_authenticate(cur)
    resp = api.post("/api/v1/datanets/", {"name": "Lenient", "labels": ["a", "b"]}, format="json")
    assert resp.status_code == 201 and resp.json()["harm_threshold"] == 0.0
