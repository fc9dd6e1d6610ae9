import pytest
from django.urls import reverse
from rest_framework.test import APIClient

from accounts.models import ApiKey
from accounts.services import MAX_ACTIVE_KEYS, api_key_create
from accounts.tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def test_key_authenticates_and_only_hash_is_stored():
    user = UserFactory()
    key, raw = api_key_create(user=user, name="bot")
    assert raw.startswith(key.prefix + ".")
    assert raw.split(".", 1)[1] not in key.key_hash  # the secret itself is not stored
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Api-Key {raw}")
    assert api.get("/api/v1/me/").json()["username"] == user.username
    key.refresh_from_db()
    assert key.last_used_at is not None


@pytest.mark.parametrize("header", ["Api-Key nope", "Api-Key abc.def", "Api-Key "])
def test_bad_key_is_401(header):
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=header)
    resp = api.get("/api/v1/me/")
    assert resp.status_code == 401


def test_revoked_key_is_rejected():
    user = UserFactory()
    key, raw = api_key_create(user=user, name="bot")
    owner = APIClient()
    owner.force_authenticate(user)
    assert owner.delete(f"/api/v1/api-keys/{key.id}/").status_code == 204
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Api-Key {raw}")
    assert api.get("/api/v1/me/").status_code == 401


def test_cannot_revoke_someone_elses_key():
    key, _ = api_key_create(user=UserFactory(), name="theirs")
    api = APIClient()
    api.force_authenticate(UserFactory())
    assert api.delete(f"/api/v1/api-keys/{key.id}/").status_code == 404
    key.refresh_from_db()
    assert key.revoked_at is None


def test_rate_limit_per_key():
    user = UserFactory()
    _, raw = api_key_create(user=user, name="slow", rate_limit_per_minute=3)
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Api-Key {raw}")
    codes = [api.get("/api/v1/me/").status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    # another key of the same user has its own budget
    _, other = api_key_create(user=user, name="fast", rate_limit_per_minute=100)
    api.credentials(HTTP_AUTHORIZATION=f"Api-Key {other}")
    assert api.get("/api/v1/me/").status_code == 200


def test_api_create_returns_secret_once_and_limits_count():
    api = APIClient()
    user = UserFactory()
    api.force_authenticate(user)
    resp = api.post("/api/v1/api-keys/", {"name": "ci", "rate_limit_per_minute": 10}, format="json")
    assert resp.status_code == 201 and "." in resp.json()["key"]
    listed = api.get("/api/v1/api-keys/").json()
    assert "key" not in listed[0] and listed[0]["name"] == "ci"
    assert api.post("/api/v1/api-keys/", {"name": "x", "rate_limit_per_minute": 0}, format="json").status_code == 400
    for i in range(MAX_ACTIVE_KEYS - 1):
        api_key_create(user=user, name=f"k{i}")
    resp = api.post("/api/v1/api-keys/", {"name": "one too many"}, format="json")
    assert resp.status_code == 409 and "revoke one first" in resp.json()["error"]["message"]


def test_profile_page_creates_and_revokes_keys(client):
    user = UserFactory()
    client.force_login(user)
    resp = client.post(reverse("accounts:api-key-new"), {"name": "web", "rate_limit_per_minute": 5})
    assert resp.status_code == 200
    key = ApiKey.objects.get(user=user)
    assert f"{key.prefix}." in resp.content.decode()
    assert f"{key.prefix}." not in client.get(reverse("accounts:profile")).content.decode()  # shown once
    client.post(reverse("accounts:api-key-revoke", args=[key.id]))
    key.refresh_from_db()
    assert key.revoked_at is not None
