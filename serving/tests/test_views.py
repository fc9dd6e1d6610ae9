# ruff: noqa: F811 - the fixtures imported from ui_helpers are the test arguments of the same names
"""The playground on a model's page (serving.views) through the Django test client."""
import pytest
from django.urls import reverse

from factory.tests.conftest import tiny_bert_dir  # noqa: F401 - fixture
from factory.tests.ui_helpers import (  # noqa: F401 - fixtures
    dev_client,
    make_job,
    make_model,
    tiny_bert,
    trained_adapter,
)
from serving.models import Inference

pytestmark = pytest.mark.django_db
HTMX = {"HTTP_HX_REQUEST": "true"}


def test_playground_runs_the_adapter(client, dev_client, tiny_bert, trained_adapter):
    model = make_model(job=make_job(owner=dev_client.user, base=tiny_bert), result=trained_adapter)
    url = reverse("serving:model-playground", args=[model.pk])
    r = dev_client.post(url, {"text": "the company profit rose"}, **HTMX)
    html = r.content.decode()
    assert r.status_code == 200 and "<html" not in html
    label = html.split('id="playground-label">')[1].split("<")[0]
    assert label in model.labels and html.count('class="ft-bar"') == 3
    # The playground is a paid call like the API's: one inference row, its fee shown, its payees listed.
    inference = Inference.objects.get(model=model, channel=Inference.Channel.PLAYGROUND)
    assert inference.status == Inference.Status.DONE and inference.output["label"] == label
    assert 'id="playground-fee"' in html and inference.fee > 0
    # No attribution index yet: the contributors' part is held (serving/tests/test_settlement.py) and says so.
    assert inference.settlement == Inference.Settlement.PENDING and 'id="playground-settlement"' in html
    assert "OPEN) held" in html and "attribution index is not ready yet" in html
    r = dev_client.post(url, {"text": "   "}, **HTMX)
    assert "required" in r.content.decode()
    r = dev_client.post(url, {"text": "profit rose"})  # without htmx: the whole page with the answer
    assert r.status_code == 200 and 'id="playground-label"' in r.content.decode() and "<h2>Model card" in r.content.decode()
    client.logout()
    assert client.post(url, {"text": "x"}).status_code == 403  # a POST without a login
    assert dev_client.get(url).status_code == 405


def test_playground_without_javascript_renders_the_model_page(dev_client, tiny_bert, trained_adapter):
    model = make_model(job=make_job(owner=dev_client.user, base=tiny_bert), result=trained_adapter)
    r = dev_client.post(reverse("serving:model-playground", args=[model.pk]), {"text": "the company profit rose"})
    html = r.content.decode()
    assert r.status_code == 200 and "<html" in html and 'id="playground-label"' in html
    assert model.adapter_sha256 in html  # the factory's page around it
    r = dev_client.post(reverse("serving:model-playground", args=[model.pk]), {"text": "   "})
    assert r.status_code == 400 and 'role="alert"' in r.content.decode()


def test_playground_keeps_its_path_and_needs_a_login(client, dev_client, tiny_bert, trained_adapter):
    model = make_model(job=make_job(owner=dev_client.user, base=tiny_bert), result=trained_adapter)
    url = reverse("serving:model-playground", args=[model.pk])
    assert url == f"/factory/models/{model.pk}/try/"
    assert client.post(url, {"text": "x"}).status_code == 403  # a POST without a login (core.middleware)
    assert not Inference.objects.exists()
    html = dev_client.get(reverse("factory:model", args=[model.pk])).content.decode()
    assert f'action="{url}"' in html and 'id="playground"' in html
