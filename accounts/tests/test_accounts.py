import pytest
from django.urls import reverse
from rest_framework.test import APIClient

from accounts.services import user_create
from accounts.tests.factories import UserFactory
from core.roles import CONTRIBUTOR, CURATOR, MODEL_DEVELOPER, user_has_role

pytestmark = pytest.mark.django_db
WALLET = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"


def test_signup_creates_user_with_roles_profile_and_logs_in(client):
    resp = client.post(reverse("accounts:signup"), {
        "username": "alice", "email": "alice@example.org", "password1": "a-long-secret-42",
        "password2": "a-long-secret-42", "roles": [CONTRIBUTOR], "wallet_address": WALLET.lower(),
    })
    assert resp.status_code == 302
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.get(username="alice")
    assert user_has_role(user, CONTRIBUTOR) and not user_has_role(user, MODEL_DEVELOPER)
    assert user.profile.wallet_address == WALLET  # stored checksummed
    assert client.get(reverse("accounts:profile")).status_code == 200


def test_signup_cannot_self_grant_curator(client):
    resp = client.post(reverse("accounts:signup"), {
        "username": "mallory", "password1": "a-long-secret-42", "password2": "a-long-secret-42",
        "roles": [CURATOR],
    })
    assert resp.status_code == 200
    assert "not one of the available choices" in resp.content.decode()


def test_signup_rejects_bad_wallet(client):
    resp = client.post(reverse("accounts:signup"), {
        "username": "bob", "password1": "a-long-secret-42", "password2": "a-long-secret-42",
        "roles": [CONTRIBUTOR], "wallet_address": "0x1234",
    })
    assert resp.status_code == 200
    assert "Enter an EVM address" in resp.content.decode()


def test_profile_requires_login(client):
    resp = client.get(reverse("accounts:profile"))
    assert resp.status_code == 302 and reverse("accounts:login") in resp["Location"]


def test_profile_update_wallet(client):
    user = UserFactory()
    client.force_login(user)
    resp = client.post(reverse("accounts:profile"), {"email": "x@example.org", "wallet_address": WALLET, "bio": ""})
    assert resp.status_code == 302
    user.refresh_from_db()
    assert user.profile.wallet_address == WALLET and user.email == "x@example.org"


def test_login_and_logout(client):
    UserFactory(username="carol")
    resp = client.post(reverse("accounts:login"), {"username": "carol", "password": "correct-horse-battery"})
    assert resp.status_code == 302
    assert client.get(reverse("accounts:profile")).status_code == 200
    client.post(reverse("accounts:logout"))
    assert client.get(reverse("accounts:profile")).status_code == 302


def test_api_token_auth_and_me():
    user_create(username="dev", password="a-long-secret-42", roles=[MODEL_DEVELOPER])
    api = APIClient()
    assert api.get("/api/v1/me/").status_code == 401
    token = api.post("/api/v1/auth/token/", {"username": "dev", "password": "a-long-secret-42"}).json()["token"]
    api.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    me = api.get("/api/v1/me/").json()
    assert me["username"] == "dev" and me["roles"] == [MODEL_DEVELOPER]
    resp = api.patch("/api/v1/me/", {"wallet_address": "not-a-wallet"}, format="json")
    assert resp.status_code == 400
    resp = api.patch("/api/v1/me/", {"wallet_address": WALLET.lower()}, format="json")
    assert resp.status_code == 200 and resp.json()["wallet_address"] == WALLET


def test_api_token_wrong_password():
    user_create(username="dev2", password="a-long-secret-42")
    resp = APIClient().post("/api/v1/auth/token/", {"username": "dev2", "password": "nope"})
    assert resp.status_code == 400


def test_staff_pass_every_role():
    admin = UserFactory(is_staff=True)
    assert all(user_has_role(admin, r) for r in (CONTRIBUTOR, MODEL_DEVELOPER, CURATOR))


def test_signup_api_creates_the_account_and_returns_a_token():
    api = APIClient()
    resp = api.post("/api/v1/auth/signup/", {"username": "bea", "password": "a-long-secret-42", "roles": [CONTRIBUTOR],
                                             "wallet_address": WALLET.lower()}, format="json")
    assert resp.status_code == 201, resp.json()
    body = resp.json()
    assert body["user"]["username"] == "bea" and body["user"]["roles"] == [CONTRIBUTOR]
    assert body["user"]["wallet_address"] == WALLET
    me = APIClient()
    me.credentials(HTTP_AUTHORIZATION=f"Token {body['token']}")
    assert me.get("/api/v1/me/").json()["username"] == "bea"
    again = api.post("/api/v1/auth/signup/", {"username": "BEA", "password": "12345678", "roles": [CURATOR]},
                     format="json")
    assert again.status_code == 400
    assert set(again.json()["error"]["fields"]) == {"username", "roles.0"}  # taken; curators are appointed
    weak = api.post("/api/v1/auth/signup/", {"username": "cy", "password": "12345678", "roles": [MODEL_DEVELOPER]},
                    format="json")
    assert weak.status_code == 400 and "password" in weak.json()["error"]["fields"]
