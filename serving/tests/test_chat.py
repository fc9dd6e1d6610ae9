"""The chat playground: a streamed paid answer (server-sent events), multi-turn prompts, settings, Stop,
the finished answer's rendering (spans, contributors, fee), and every refusal."""
from __future__ import annotations

import json
from decimal import Decimal

import pytest
from django.core.signals import request_finished
from django.db import close_old_connections
from django.test import Client

from accounts.tests.factories import UserFactory
from factory.tests.factories import make_version
from serving.models import Inference, SpanIndex
from serving.services import span_index_build
from serving.tests.factories import make_model
from serving.tests.test_api import SPEECHES

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _settings(settings, tmp_path):
    settings.WEB3_PROVIDER_URI = ""
    settings.VAR_DIR = tmp_path
    settings.SERVING_FEE_PER_CALL = "0.01"
    settings.SERVING_MAX_INPUT_CHARS = 400
    settings.SERVING_BACKEND = "inprocess"


@pytest.fixture
def chat(finetuned_gpt2):
    base, adapter = finetuned_gpt2
    version = make_version(task="generation", rows=SPEECHES, contributors=2, slug="plays-chat")
    model = make_model(base_dir=base, adapter_dir=adapter, version=version)
    span_index_build(span_index_id=SpanIndex.objects.create(version=version, base_model=model.base_model).pk)
    client = Client()
    user = UserFactory()
    client.force_login(user)
    return model, client, user


def events(response) -> list[dict]:
    assert response["Content-Type"] == "text/event-stream"
    body = b"".join(response.streaming_content).decode()
    blocks = [b for b in body.split("\n\n") if b]
    assert all(b.startswith("data: ") for b in blocks)
    return [json.loads(b[6:]) for b in blocks]


def close_as_the_server_does(response) -> None:
    """What the server does when the connection closes (gunicorn, runserver): it closes the response. The
    test's database connection must outlive the request_finished signal that comes with it, as the test
    client arranges for its own requests."""
    request_finished.disconnect(close_old_connections)
    try:
        response.close()
    finally:
        request_finished.connect(close_old_connections)


def post(client, model, payload):
    return client.post(f"/factory/models/{model.pk}/chat/stream/", json.dumps(payload), content_type="application/json")


def test_chat_page_streams_a_paid_multi_turn_answer(chat):
    model, client, user = chat
    page = client.get(f"/factory/models/{model.pk}/chat/")
    html = page.content.decode()
    assert page.status_code == 200 and f'data-stream-url="/factory/models/{model.pk}/chat/stream/"' in html
    assert "js/chat.js" in html and "a plain chat template" in html and model.slug in html
    turns = [{"role": "user", "content": "Who speaks first?"}, {"role": "assistant", "content": "First Citizen."},
             {"role": "user", "content": "First Citizen: Before we proceed"}]
    got = events(post(client, model, {"messages": turns, "temperature": 0, "top_p": 1, "max_tokens": 10}))
    row = Inference.objects.get(pk=got[0]["inference_id"])
    deltas = [e["delta"] for e in got if "delta" in e]
    final = got[-1]
    assert deltas and final["text"] == "".join(deltas) == row.output["text"]
    assert row.channel == Inference.Channel.PLAYGROUND and row.user == user and row.status == Inference.Status.DONE
    assert row.input_text == ("User: Who speaks first?\nAssistant: First Citizen.\nUser: First Citizen: Before we "
                              "proceed\nAssistant:")
    assert row.params == {"max_new_tokens": 10, "temperature": 0.0, "top_p": 1.0, "stop": ["\nUser:", "\nSystem:"]}
    assert row.fee == Decimal("0.01") and row.settlement == Inference.Settlement.SETTLED
    assert row.output["completion_tokens"] <= 10 and f"{row.output['completion_tokens']} tokens" in final["html"]
    assert "fee 0.010000 OPEN" in final["html"]
    for span in row.attribution["spans"]:  # highlighted where the answer reused training text
        assert f">{span['text']}</mark>" in final["html"].replace("&#x27;", "'")


def test_a_long_conversation_keeps_its_latest_turns(chat):
    model, client, _ = chat
    turns = [{"role": "system", "content": "Speak as a citizen."}]
    for i in range(8):
        turns += [{"role": "user", "content": f"question {i} " + "x" * 40}, {"role": "assistant", "content": "y" * 40}]
    turns.append({"role": "user", "content": "All: Speak, speak."})
    got = events(post(client, model, {"messages": turns, "max_tokens": 4}))
    row = Inference.objects.get(pk=got[0]["inference_id"])
    assert len(row.input_text) <= 400 and row.input_text.startswith("System: Speak as a citizen.\nUser: question")
    assert row.input_text.endswith("User: All: Speak, speak.\nAssistant:") and "question 0" not in row.input_text


def test_stop_ends_the_answer_and_it_is_charged_and_shown(chat):
    from django.test import RequestFactory

    from serving.views import model_chat_stream

    model, client, user = chat
    # The view itself, as the server calls it (the test client would also close the response its way).
    request = RequestFactory().post("/", json.dumps({"messages": [{"role": "user", "content": "First Citizen:"}],
                                                     "max_tokens": 60, "temperature": 0}),
                                    content_type="application/json")
    request.user = user
    response = model_chat_stream(request, model.pk)
    stream = iter(response.streaming_content)
    first = json.loads(next(stream).decode()[6:])
    next(stream)
    close_as_the_server_does(response)
    row = Inference.objects.get(pk=first["inference_id"])
    assert row.status == Inference.Status.DONE and row.output["finish_reason"] == "cancelled"
    assert row.output["completion_tokens"] < 60 and row.fee == Decimal("0.01")
    shown = client.get(f"/factory/inferences/{row.pk}/answer/")
    assert shown.status_code == 200 and "Stopped" in shown.content.decode()
    stranger = Client()
    stranger.force_login(UserFactory())
    assert stranger.get(f"/factory/inferences/{row.pk}/answer/").status_code == 404
    pending = Inference.objects.create(model=model, user=user, input_text="x")
    assert client.get(f"/factory/inferences/{pending.pk}/answer/").status_code == 202


@pytest.mark.parametrize("read", [0, 1], ids=["before-the-first-byte", "after-the-id-only"])
def test_a_client_gone_before_the_first_token_leaves_no_pending_row(chat, read):
    """Stop clicked before the answer's first token (or a tab closed at once): the server closes a
    response it has read `read` events of. The row is ended, failed and uncharged, never left pending;
    the same for the OpenAI-compatible stream."""
    from django.test import RequestFactory

    from accounts.services import api_key_create
    from serving.openai_api.views import ChatCompletionApi
    from serving.views import model_chat_stream

    model, client, user = chat
    request = RequestFactory().post("/", json.dumps({"messages": [{"role": "user", "content": "First Citizen:"}],
                                                     "max_tokens": 60, "temperature": 0}),
                                    content_type="application/json")
    request.user = user
    _, raw = api_key_create(user=user, name="gone")
    openai_request = RequestFactory().post(
        "/v1/chat/completions", json.dumps({"model": model.slug, "stream": True, "max_tokens": 60,
                                            "messages": [{"role": "user", "content": "First Citizen:"}]}),
        content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {raw}")
    for call in (lambda: model_chat_stream(request, model.pk), lambda: ChatCompletionApi.as_view()(openai_request)):
        response = call()
        assert response.status_code == 200 and Inference.objects.filter(status=Inference.Status.PENDING).count() == 1
        stream = iter(response.streaming_content)
        for _ in range(read):
            next(stream)
        close_as_the_server_does(response)
        row = Inference.objects.order_by("-pk").first()
        assert row.status == Inference.Status.FAILED and row.fee == 0, (row.status, row.fee)
        assert "before the first token" in row.error
    assert not Inference.objects.filter(status=Inference.Status.PENDING).exists()


def test_refusals_write_nothing(chat, tiny_bert, bert_adapters):
    model, client, _ = chat
    url = f"/factory/models/{model.pk}/chat/stream/"
    assert client.post(url, "not json", content_type="application/json").status_code == 400
    bad = [({"messages": []}, 400, "non-empty list"), ({"messages": [{"role": "user", "content": "hi"}],
                                                        "temperature": 3}, 400, "temperature"),
           ({"messages": [{"role": "assistant", "content": "hi"}]}, 400, "last message"),
           ({"messages": [{"role": "user", "content": "z" * 500}]}, 413, "limit is 400")]
    for payload, status, words in bad:
        response = post(client, model, payload)
        assert response.status_code == status and words in response.json()["error"], payload
    classifier = make_model(base_dir=tiny_bert, adapter_dir=bert_adapters[0], version=make_version(n=6))
    assert client.get(f"/factory/models/{classifier.pk}/chat/").status_code == 404
    assert post(client, classifier, {"messages": [{"role": "user", "content": "hi"}]}).status_code == 404
    anonymous = Client().get(f"/factory/models/{model.pk}/chat/")
    assert anonymous.status_code == 302 and "/accounts/login/" in anonymous["Location"]
    assert Client().post(url, "{}", content_type="application/json").status_code in (302, 403)
    assert not Inference.objects.exists()


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_chat_in_a_browser_streams_keeps_turns_and_stops(finetuned_gpt2, live_server):
    """static/js/chat.js in Debian's chromium: an answer streams in and is replaced by its rendering with
    the fee; the second turn is sent with the first; Stop ends a long answer, which is shown as stopped."""
    from playwright.sync_api import sync_playwright

    from tests.test_browser import CHROMIUM, CHROMIUM_ARGS

    base, adapter = finetuned_gpt2
    version = make_version(task="generation", rows=SPEECHES, contributors=2, slug="plays-browser")
    model = make_model(base_dir=base, adapter_dir=adapter, version=version)
    span_index_build(span_index_id=SpanIndex.objects.create(version=version, base_model=model.base_model).pk)
    user = UserFactory(username="chatter")
    user.set_password("a-long-secret-42")
    user.save()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.goto(f"{live_server.url}/accounts/login/?next=/factory/models/{model.pk}/chat/")
        page.fill("input[name=username]", "chatter")
        page.fill("input[name=password]", "a-long-secret-42")
        page.click("button[type=submit]")
        page.wait_for_selector("#chat form:not([hidden])")
        assert not page.is_visible("#chat-nojs")
        page.fill("textarea[name=content]", "First Citizen: Before we proceed")
        page.fill("input[name=max_tokens]", "8")
        page.click("#chat-send")
        page.wait_for_selector(".chat-assistant .chat-meta:has-text('fee 0.010000 OPEN')", timeout=30_000)
        first = Inference.objects.get()
        assert page.inner_text(".chat-assistant .chat-text").strip() == first.output["text"].strip()
        page.fill("textarea[name=content]", "All: Speak, speak.")
        page.press("textarea[name=content]", "Enter")
        page.wait_for_selector(".chat-assistant >> nth=1 >> .chat-meta", timeout=30_000)
        second = Inference.objects.exclude(pk=first.pk).get()
        assert second.input_text.startswith("User: First Citizen: Before we proceed\nAssistant:")
        assert "User: All: Speak, speak.\nAssistant:" in second.input_text
        # Stop: a long sampled answer, stopped as soon as its first piece is on the page.
        page.fill("input[name=max_tokens]", "120")
        page.fill("input[name=temperature]", "1")
        page.fill("textarea[name=content]", "MENENIUS:")
        page.click("#chat-send")
        # Its text, not the turn: the turn's "Model" label is there before the request has an answer.
        page.wait_for_function("document.querySelectorAll('.chat-assistant').length === 3 && "
                               "document.querySelectorAll('.chat-assistant .chat-text')[2].textContent.trim().length > 0")
        # Clicked in the page, not through the pointer: on a loaded machine the whole answer can arrive
        # between the wait above and the click (Stop is then disabled) or the growing answer shifts the
        # layout under the pointer; either way the assertions below still hold.
        page.evaluate("() => { const stop = document.querySelector('#chat-stop'); if (!stop.disabled) stop.click(); }")
        page.wait_for_selector(".chat-assistant >> nth=2 >> .chat-meta", timeout=30_000)
        third = Inference.objects.order_by("-pk").first()
        assert third.status == Inference.Status.DONE and third.fee == Decimal("0.01")
        if third.output["finish_reason"] == "cancelled":  # not when all 120 tokens came before the click
            assert "Stopped" in page.inner_text(".chat-assistant >> nth=2")
        assert page.is_enabled("#chat-send") and not page.is_enabled("#chat-stop")
        browser.close()
