"""A wallet must be able to hold tokens: the zero address and the chain's precompiles are refused with a
clear message in the form and the API; one saved before that rule is ignored and rewards go custodial."""
import pytest
from django.urls import reverse
from rest_framework.test import APIClient

from accounts.models import Profile
from accounts.tests.factories import UserFactory
from core.addresses import ERR_CHECKSUM, ERR_ZERO, address_problem
from ledger.selectors import balances_for
from ledger.services import address_for_user, custodial_address_for_user_id, user_wallet

pytestmark = pytest.mark.django_db
GOOD = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"
ZERO = "0x" + "0" * 40
PRECOMPILES = ["0x" + "0" * 39 + "1", "0x" + "0" * 38 + "0a", "0x" + "0" * 38 + "ff"]


@pytest.mark.parametrize("address", [ZERO, *PRECOMPILES])
def test_unusable_addresses_are_named(address):
    assert address_problem(address)
    assert "precompile" in address_problem(address) or address_problem(address) == ERR_ZERO


def test_first_address_past_the_precompiles_and_checksums():
    assert address_problem("0x" + "0" * 37 + "100") == ""
    assert address_problem(GOOD) == "" and address_problem(GOOD.lower()) == "" and address_problem("0x" + GOOD[2:].upper()) == ""
    typo = GOOD[:-1] + ("d" if GOOD[-1] == "D" else "D")  # one letter's case flipped
    assert address_problem(typo) == ERR_CHECKSUM


@pytest.mark.parametrize("address", [ZERO, PRECOMPILES[0]])
def test_profile_form_refuses_an_unusable_wallet(client, address):
    user = UserFactory()
    client.force_login(user)
    resp = client.post(reverse("accounts:profile"), {"email": "x@example.org", "wallet_address": address, "bio": ""})
    assert resp.status_code == 200
    body = resp.content.decode()
    assert "zero address" in body or "precompiled contract" in body
    assert Profile.objects.get(user=user).wallet_address == ""


@pytest.mark.parametrize("address", [ZERO, PRECOMPILES[2]])
def test_api_refuses_an_unusable_wallet(address):
    user = UserFactory()
    api = APIClient()
    api.force_authenticate(user)
    resp = api.patch("/api/v1/me/", {"wallet_address": address}, format="json")
    assert resp.status_code == 400
    assert "wallet_address" in resp.json()["error"]["fields"]
    assert Profile.objects.get(user=user).wallet_address == ""
    ok = api.patch("/api/v1/me/", {"wallet_address": GOOD.lower()}, format="json")
    assert ok.status_code == 200 and ok.json()["wallet_address"] == GOOD


def test_a_zero_wallet_saved_before_the_rule_is_ignored_and_the_page_says_so(client):
    user = UserFactory()
    Profile.objects.filter(user=user).update(wallet_address=ZERO)  # as an older release let it be saved
    user.refresh_from_db()
    assert user_wallet(user) == ""
    assert address_for_user(user) == custodial_address_for_user_id(user.pk)
    assert balances_for(user=user).extra["wallet_ignored"] == ERR_ZERO
    client.force_login(user)
    assert "is not used" in client.get(reverse("ledger:rewards")).content.decode()
