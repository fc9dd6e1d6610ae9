"""Instruction data: chat JSONL (`messages`) and prompt/response columns become conversation records,
validated turn by turn with row-numbered errors, stored in canonical form and previewed as ChatML."""
import json

import pytest

from datanets import chat
from datanets.models import Contribution, Datanet, Record
from datanets.readers import record_sha256
from datanets.tests.factories import DatanetFactory, contributor
from datanets.tests.helpers import ingest, parquet, upload

pytestmark = pytest.mark.django_db


def jsonl(rows) -> bytes:
    return "".join((json.dumps(r) if not isinstance(r, str) else r) + "\n" for r in rows).encode()


def convo(q: str, a: str, system: str = "") -> dict:
    turns = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": q}, {"role": "assistant", "content": a}]
    return {"messages": turns}


@pytest.fixture
def datanet():
    return DatanetFactory(task=Datanet.Task.CHAT, labels=[], max_text_length=200)


@pytest.fixture
def alice():
    return contributor("alice")


def test_chat_jsonl_becomes_canonical_conversation_records(datanet, alice):
    rows = [convo("How did profit move? ", "It rose.", system="Be brief."), convo("And sales?", "They fell.")]
    c = ingest(upload(datanet, alice, "chat.jsonl", jsonl(rows)))
    assert c.ingest_state == Contribution.IngestState.DONE, c.ingest_errors
    assert c.record_count == 2 and c.options["text_column"] == "messages" and c.options["label_column"] == ""
    first = Record.objects.order_by("row_number").first()
    assert first.label == "" and first.sha256 == record_sha256(first.text, "")
    assert json.loads(first.text) == [{"role": "system", "content": "Be brief."},
                                      {"role": "user", "content": "How did profit move?"},  # canonical: stripped
                                      {"role": "assistant", "content": "It rose."}]
    assert chat.conversation_load(first.text)[2]["content"] == "It rose."
    assert chat.conversation_answers(first.text) == "It rose." and chat.conversation_answers("plain text") == "plain text"
    preview = c.options["chat_preview"]
    assert preview[0]["text"] == ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHow did profit move?"
                                  "<|im_end|>\n<|im_start|>assistant\nIt rose.<|im_end|>\n")


@pytest.mark.parametrize("name, content", [
    ("pairs.csv", b"prompt,response\nHow did profit move?,It rose.\nAnd sales?,They fell.\n"),
    ("pairs.jsonl", jsonl([{"question": "How did profit move?", "answer": "It rose."},
                           {"question": "And sales?", "answer": "They fell."}])),
    ("pairs.parquet", parquet([{"instruction": "How did profit move?", "output": "It rose."},
                               {"instruction": "And sales?", "output": "They fell."}])),
])
def test_prompt_and_response_columns_become_two_turn_conversations(datanet, alice, name, content):
    c = ingest(upload(datanet, alice, name, content))
    assert c.ingest_state == Contribution.IngestState.DONE, c.ingest_errors
    texts = [json.loads(t) for t in Record.objects.order_by("row_number").values_list("text", flat=True)]
    assert texts[1] == [{"role": "user", "content": "And sales?"}, {"role": "assistant", "content": "They fell."}]
    # the same conversation from JSONL messages is the same record (a duplicate)
    again = ingest(upload(datanet, alice, "same.jsonl", jsonl([convo("And sales?", "They fell.")])))
    assert again.duplicates_dropped == 1 and again.record_count == 0


def test_invalid_conversations_fail_with_their_row_numbers(datanet, alice):
    rows = [
        convo("Fine question", "Fine answer"),                                                  # 1
        {"messages": [{"role": "bot", "content": "hi"}, {"role": "assistant", "content": "x"}]},  # 2
        {"messages": [{"role": "user", "content": "   "}, {"role": "assistant", "content": "x"}]},  # 3
        {"messages": [{"role": "user", "content": "q"}]},                                        # 4
        {"messages": [{"role": "user", "content": "q"}, {"role": "user", "content": "q2"},
                      {"role": "assistant", "content": "a"}]},                                  # 5
        convo("long " * 50, "answer"),                                                          # 6
        "{not json",                                                                            # 7
        {"text": "no messages"},                                                                # 8
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"},
                      {"role": "system", "content": "late"}, {"role": "assistant", "content": "b"}]},  # 9
        {"messages": "a string"},                                                               # 10
    ]
    c = ingest(upload(datanet, alice, "bad.jsonl", jsonl(rows)))
    assert c.ingest_state == Contribution.IngestState.FAILED and c.record_count == 0
    assert "9 of 10 rows failed validation" in c.ingest_errors[0]["error"]
    errors = {e["row"]: e["error"] for e in c.ingest_errors[1:]}
    assert errors[2] == "turn 1 has role 'bot'; roles are system, user, assistant"
    assert errors[3] == "turn 1 (user) is empty"
    assert errors[4] == "the conversation must end with an assistant turn (the answer to learn)"
    assert errors[5].startswith("turn 2 is user: expected assistant")
    assert errors[6] == "the conversation is 255 characters; the limit is 200"
    assert errors[7].startswith("invalid JSON")
    assert errors[8] == "no 'messages' field"
    assert errors[9].startswith("turn 3 is system: a system turn may only come first")
    assert errors[10] == "messages is not JSON: Expecting value"
    assert not Record.objects.exists()


def test_empty_responses_are_named_by_row_and_the_rest_kept_on_request(datanet, alice):
    content = b"prompt,response\nHow did profit move?,It rose.\nAnd sales?,\n,An answer with no question\n"
    c = ingest(upload(datanet, alice, "pairs.csv", content, drop_bad_rows=True))
    assert c.ingest_state == Contribution.IngestState.DONE and c.record_count == 1 and c.rows_bad == 2
    assert {e["row"]: e["error"] for e in c.ingest_errors} == {2: "turn 2 (assistant) is empty",
                                                              3: "turn 1 (user) is empty"}


def test_the_preview_shows_each_rows_problem_before_the_ingest(datanet, alice):
    res = upload(datanet, alice, "mixed.jsonl", jsonl([convo("q", "a"), {"messages": [{"role": "user", "content": "q"}]}]),
                 auto_start=False)
    preview = res.contribution.options["chat_preview"]
    assert preview[0]["error"] == "" and "<|im_start|>assistant\na<|im_end|>" in preview[0]["text"]
    assert preview[1] == {"row": 2, "text": "", "error": "the conversation must end with an assistant turn "
                                                         "(the answer to learn)"}


def test_plain_text_is_refused_with_what_to_upload(datanet, alice):
    from core.errors import ApplicationError

    with pytest.raises(ApplicationError, match="chat JSONL"):
        upload(datanet, alice, "story.txt", b"Once upon a time.\n")


def test_contribution_page_previews_the_conversations(client, datanet, alice):
    c = ingest(upload(datanet, alice, "chat.jsonl", jsonl([convo("How did <b>profit</b> move?", "It rose.")])))
    client.force_login(alice)
    page = client.get(f"/datanets/contributions/{c.pk}/").content.decode()
    assert 'id="chat-preview"' in page and "&lt;|im_start|&gt;user" in page
    assert "&lt;b&gt;profit&lt;/b&gt;" in page  # escaped, never raw HTML
