"""HTML pages and /api/v1/ endpoints of attribution, with their permission checks."""
import pytest
from django.db import transaction
from django.urls import reverse
from rest_framework.test import APIClient

from accounts.tests.factories import UserFactory
from attribution import services
from attribution.models import AttributionIndex
from attribution.tests.factories import make_model

pytestmark = pytest.mark.django_db


@pytest.fixture
def model(trained_adapter, attr_base_dir, tmp_path):
    return make_model(adapter_src=trained_adapter, base_dir=attr_base_dir, workdir=tmp_path)


@pytest.fixture
def ready_model(model):
    with transaction.atomic():
        index = services.attribution_index_build_enqueue(model=model)
    assert services.attribution_index_build(index_id=index.id).status == AttributionIndex.Status.READY
    return model


def api(user=None) -> APIClient:
    client = APIClient()
    if user:
        client.force_authenticate(user)
    return client


def test_api_attribution_status_and_contributors(ready_model):
    assert api().get(f"/api/v1/models/{ready_model.pk}/attribution").status_code in (401, 403)
    res = api(UserFactory()).get(f"/api/v1/models/{ready_model.pk}/attribution")
    assert res.status_code == 200
    body = res.json()
    assert body["index"]["status"] == "ready" and body["index"]["record_count"] == 27
    assert len(body["contributors"]) == 3
    assert abs(sum(float(c["weight"]) for c in body["contributors"]) - 1) < 1e-12
    assert api(UserFactory()).get("/api/v1/models/999999/attribution").status_code == 404


def test_api_explain(ready_model):
    url = f"/api/v1/models/{ready_model.pk}/explain"
    assert api().post(url, {"text": "profit rose"}, format="json").status_code in (401, 403)
    res = api(UserFactory()).post(url, {"text": "the company profit rose", "top_k": 3}, format="json")
    assert res.status_code == 200, res.content
    body = res.json()
    assert len(body["records"]) == 3 and body["prediction"]["label"]
    ids = set(ready_model.datanet_version.records.values_list("id", flat=True))
    assert {r["record_id"] for r in body["records"]} <= ids
    bad = api(UserFactory()).post(url, {"text": "x", "top_k": 500}, format="json")
    assert bad.status_code == 400


def test_api_explain_is_409_until_the_index_is_ready(model):
    res = api(UserFactory()).post(f"/api/v1/models/{model.pk}/explain/", {"text": "profit rose"}, format="json")
    assert res.status_code == 409 and "no attribution index" in res.json()["error"]["message"]


def test_model_page_partial_and_explain(client, ready_model):
    page = reverse("attribution:model", args=[ready_model.pk])
    assert client.get(page).status_code == 302  # login first
    client.force_login(UserFactory())
    html = client.get(page).content.decode()
    top = ready_model.contributor_weights.order_by("-weight").first()
    assert top.contributor.username in html and "Likely mislabeled" in html and "Rebuild index" not in html
    partial = client.get(reverse("attribution:model-contributors", args=[ready_model.pk])).content.decode()
    assert "Top contributors" in partial and f"{top.percent}%" in partial and "hx-trigger" not in partial
    index = ready_model.attribution_indexes.first()
    for rule, signal, shown in (("signed_null_excess", True, False), ("equal_no_signal", False, True)):
        index.settings = {**index.settings, "weights_rule": rule, "weights_signal": signal}
        index.save(update_fields=["settings"])
        partial = client.get(reverse("attribution:model-contributors", args=[ready_model.pk])).content.decode()
        assert ("Equal split" in partial) is shown, rule  # the fallback is shown to the user
    res = client.post(reverse("attribution:model-explain", args=[ready_model.pk]),
                      {"text": "sales fell sharply", "top_k": 2}, HTTP_HX_REQUEST="true")
    body = res.content.decode()
    assert res.status_code == 200 and "Training records behind it" in body and "<html" not in body


def test_partial_polls_while_building(client, model):
    with transaction.atomic():
        services.attribution_index_build_enqueue(model=model)
    client.force_login(UserFactory())
    partial = client.get(reverse("attribution:model-contributors", args=[model.pk])).content.decode()
    assert 'hx-trigger="every 2s"' in partial and "being built" in partial


def test_only_the_developer_or_staff_can_rebuild(client, ready_model, django_capture_on_commit_callbacks):
    url = reverse("attribution:model-rebuild", args=[ready_model.pk])
    client.force_login(UserFactory())
    assert client.post(url).status_code == 403
    client.force_login(ready_model.developer)
    with django_capture_on_commit_callbacks() as callbacks:
        assert client.post(url).status_code == 302
    assert AttributionIndex.objects.get(model=ready_model).status == AttributionIndex.Status.QUEUED
    assert len(callbacks) == 1
