"""Ledger pages and API: permissions, and the content they show (with and without a chain)."""
from __future__ import annotations

from decimal import Decimal

import pytest
from django.urls import reverse
from rest_framework.test import APIClient

from accounts.tests.factories import UserFactory
from ledger import outbox
from ledger.models import LedgerTransaction, RewardClaim
from ledger.services import address_for_user, rewards_accrue, rewards_epoch_close
from ledger.tests.factories import LedgerTransactionFactory, datanet_payload, make_datanet

S = LedgerTransaction.Status


@pytest.fixture
def api():
    return APIClient()


def _epoch_for(*users_amounts):
    rewards_accrue(allocations={u.pk: Decimal(a) for u, a in users_amounts}, source="inference", reference="r1",
                   model_id=3)
    return rewards_epoch_close()


# --- pages ---------------------------------------------------------------------------------------

def test_explorer_without_a_chain_says_so(client, db, settings):
    settings.WEB3_PROVIDER_URI = "http://127.0.0.1:9"
    LedgerTransactionFactory(kind="model_register", status=S.CONFIRMED, tx_hash="0x" + "ab" * 32)
    r = client.get(reverse("ledger:explorer"))
    assert r.status_code == 200
    body = r.content.decode()
    assert "chain unavailable" in body and "model_register" in body and "Could not read the chain" in body


def test_outbox_page_is_staff_only_and_retry_requeues(client, db):
    row = LedgerTransactionFactory(status=S.FAILED, last_error="the contract rejected the call: StakeTooSmall(1, 10)")
    url = reverse("ledger:transactions")
    assert client.get(url).url.startswith(reverse("accounts:login"))  # the product's login, not the admin's
    client.force_login(UserFactory())
    assert client.get(url).status_code == 403
    assert client.post(reverse("ledger:transaction-retry", args=[row.pk])).status_code == 403
    row.refresh_from_db()
    assert row.status == S.FAILED  # a non-staff post changed nothing
    client.force_login(UserFactory(is_staff=True))
    body = client.get(url, {"status": "failed"}).content.decode()
    assert "StakeTooSmall" in body and "Retry" in body
    client.post(reverse("ledger:transaction-retry", args=[row.pk]))
    row.refresh_from_db()
    assert row.status == S.QUEUED and row.last_error == "" and row.attempts == 0
    r = client.get(url, HTTP_HX_REQUEST="true")
    assert 'hx-trigger="every 2s"' in r.content.decode() and "<html" not in r.content.decode()


def test_rewards_page_and_claim_button(client, db):
    me, other = UserFactory(), UserFactory()
    epoch = _epoch_for((me, "1.25"), (other, "2"))
    url = reverse("ledger:rewards")
    assert client.get(url).status_code == 302
    client.force_login(me)
    body = client.get(url).content.decode()
    assert "1.25" in body and "epoch being published" in body and address_for_user(me) in body
    epoch.status = epoch.Status.PUBLISHED
    epoch.save()
    body = client.get(url).content.decode()
    assert ">Claim</button>" in body and "model 3" in body
    mine = RewardClaim.objects.get(user=me)
    theirs = RewardClaim.objects.get(user=other)
    assert client.post(reverse("ledger:claim", args=[theirs.pk])).status_code == 404
    client.post(reverse("ledger:claim", args=[mine.pk]))
    mine.refresh_from_db()
    assert mine.status == RewardClaim.Status.QUEUED
    assert LedgerTransaction.objects.filter(kind="reward_claim", payload__claim_id=mine.pk).exists()
    r = client.get(url)
    assert 'hx-trigger="every 2s"' in r.content.decode()  # polls until the claim is confirmed


def test_epochs_page(client, db):
    _epoch_for((UserFactory(), "3"))
    body = client.get(reverse("ledger:epochs")).content.decode()
    assert "Publishing" in body and ">3<" in body


@pytest.mark.chain
def test_explorer_shows_onchain_records_beside_the_database(client, chain, settings):
    d = make_datanet(min_stake="10", slash_fraction="0.5")
    from ledger.services import enqueue

    enqueue("datanet_create", datanet_payload(d), "dc")
    outbox.outbox_process()
    other = make_datanet()
    enqueue("datanet_create", datanet_payload(other), "dc-other")  # not sent yet
    settings.LEDGER_PRIVATE_KEY, settings.DEBUG = "", False  # reading needs no key
    r = client.get(reverse("ledger:explorer"))
    body = r.content.decode()
    assert "chain up" in body and chain.addresses["RewardDistributor"] in body
    # the database's side is what the datanets app asked for (the outbox rows): the ledger reads no Datanet
    rows = {row["obj"]["slug"]: row for row in r.context["compare"]["datanets"]}
    assert rows[d.slug]["agree"] is True and rows[other.slug]["chain"] is None and rows[other.slug]["agree"] is False
    assert f'href="/datanets/{d.slug}/"' in body
    assert "✓" in body


# --- API -----------------------------------------------------------------------------------------

def test_api_needs_login(api, db):
    for name in ("api-ledger-balances", "api-ledger-claims", "api-ledger-epochs", "api-ledger-chain"):
        assert api.get(reverse(name)).status_code in (401, 403), name


def test_api_transactions_are_staff_only(api, db):
    row = LedgerTransactionFactory(status=S.FAILED, last_error="boom")
    api.force_authenticate(UserFactory())
    assert api.get(reverse("api-ledger-transactions")).status_code == 403
    assert api.post(reverse("api-ledger-transaction-retry", args=[row.pk])).status_code == 403
    api.force_authenticate(UserFactory(is_staff=True))
    r = api.get(reverse("api-ledger-transactions"), {"status": "failed"})
    assert r.status_code == 200 and r.json()["results"][0]["last_error"] == "boom"
    assert api.post(reverse("api-ledger-transaction-retry", args=[row.pk])).status_code == 202
    r = api.post(reverse("api-ledger-transaction-retry", args=[row.pk]))
    assert r.status_code == 409 and "Only a failed" in r.json()["error"]["message"]


def test_api_my_claims_accruals_and_claim_request(api, db, settings):
    settings.WEB3_PROVIDER_URI = ""  # no chain configured
    me, other, external = UserFactory(), UserFactory(), UserFactory()
    external.profile.wallet_address = "0x" + "12" * 20
    external.profile.save()
    epoch = _epoch_for((me, "0.5"), (other, "1"), (external, "2"))
    api.force_authenticate(me)
    claims = api.get(reverse("api-ledger-claims")).json()["results"]
    assert len(claims) == 1 and claims[0]["amount"] == "0.5" and claims[0]["amount_wei"] == str(5 * 10**17)
    assert claims[0]["proof"] and claims[0]["epoch_status"] == "publishing"
    assert api.get(reverse("api-ledger-accruals")).json()["results"][0]["amount"] == "0.500000000000000000"
    b = api.get(reverse("api-ledger-balances")).json()
    assert b["on_chain"] is None and "WEB3_PROVIDER_URI is not set" in b["chain_error"] and b["custodial"] is True
    assert Decimal(b["pending"]) == 0 and b["address"] == address_for_user(me)
    r = api.post(reverse("api-ledger-claim", args=[claims[0]["id"]]))
    assert r.status_code == 400 and "not on-chain yet" in r.json()["error"]["message"]
    epoch.status = epoch.Status.PUBLISHED
    epoch.save()
    other_claim = RewardClaim.objects.get(user=other)
    assert api.post(reverse("api-ledger-claim", args=[other_claim.pk])).status_code == 404
    r = api.post(reverse("api-ledger-claim", args=[claims[0]["id"]]))
    assert r.status_code == 202 and r.json()["status"] == "queued"
    assert api.post(reverse("api-ledger-claim", args=[claims[0]["id"]])).status_code == 400
    api.force_authenticate(external)
    ext = api.get(reverse("api-ledger-claims")).json()["results"][0]
    r = api.post(reverse("api-ledger-claim", args=[ext["id"]]))
    assert r.status_code == 400 and r.json()["error"]["extra"]["proof"] == ext["proof"]
    epochs = api.get(reverse("api-ledger-epochs")).json()["results"]
    assert epochs[0]["total"] == "3.5" and epochs[0]["accounts"] == 3
    chain = api.get(reverse("api-ledger-chain")).json()
    assert chain["ok"] is False and chain["fee_split"]["contributors"] == "0.7000"
