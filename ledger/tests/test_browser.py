"""A contributor claims a reward in the browser: Claim -> the outbox sends it to anvil -> the page (polling with
htmx) shows it claimed, and the explorer shows the chain agreeing with the database."""
from __future__ import annotations

import os
from decimal import Decimal

import pytest

from accounts.tests.factories import UserFactory
from ledger import outbox
from ledger.models import RewardClaim
from ledger.services import address_for_user, enqueue, rewards_accrue, rewards_epoch_close
from ledger.tests.factories import datanet_payload, make_datanet
from tests.test_browser import browser, page  # noqa: F401 - fixtures

pytestmark = [pytest.mark.browser, pytest.mark.chain]
SHOTS = os.environ.get("LEDGER_SCREENSHOTS", "")  # a folder: save screenshots there (for a look by eye)


def _login(page, base, user):  # noqa: F811
    page.goto(base + "/accounts/login/")
    page.fill("input[name=username]", user.username)
    page.fill("input[name=password]", "correct-horse-battery")
    page.click("button[type=submit]")
    page.wait_for_selector(f"a.user:has-text('{user.username}')")


def test_contributor_claims_in_the_browser(page, live_server, chain_tx):  # noqa: F811
    me = UserFactory()
    d = make_datanet()
    enqueue("datanet_create", datanet_payload(d), "dc")
    rewards_accrue(allocations={me.pk: Decimal("1.25")}, source="inference", reference="b1", model_id=1)
    epoch = rewards_epoch_close()
    outbox.outbox_process()
    epoch.refresh_from_db()
    assert epoch.status == epoch.Status.PUBLISHED

    _login(page, live_server.url, me)
    page.goto(live_server.url + "/ledger/rewards/")
    assert "1.25" in page.locator("#claims").inner_text()
    page.click("#claims button:has-text('Claim')")
    page.wait_for_selector("text=queued")
    outbox.outbox_process()  # what the ledger worker does
    page.wait_for_selector("#claims .badge:has-text('Claimed')", timeout=10_000)  # htmx polling picked it up
    assert RewardClaim.objects.get(user=me).status == RewardClaim.Status.CLAIMED
    # the balance cards are refreshed by the same poll: the tokens are in the wallet now
    assert "1.25 OPEN" in page.locator("#claims .card:has-text('On-chain balance')").inner_text()
    token = chain_tx.c["OpenToken"]
    assert token.functions.balanceOf(address_for_user(me)).call() == 125 * 10**16
    if SHOTS:
        page.screenshot(path=os.path.join(SHOTS, "ledger_rewards.png"), full_page=True)

    page.goto(live_server.url + "/ledger/")
    page.wait_for_selector("text=chain up")
    assert page.locator("text=✓").count() >= 1
    if SHOTS:
        page.screenshot(path=os.path.join(SHOTS, "ledger_explorer.png"), full_page=True)
