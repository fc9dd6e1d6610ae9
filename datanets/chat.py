"""Instruction data: conversations as records. Plain Python, no Django.

A chat Datanet's record is one conversation, stored as its canonical JSON (`conversation_text`): a list of
{"role", "content"} turns with each content in canonical form, compact separators, no other keys. Its
hashes are those of that text, like any record's, so versions and proofs work unchanged. Rows come from
JSONL with a `messages` list (OpenAI's and TRL's conversational format) or from prompt/response columns
(CSV, TSV, JSONL, Parquet), which become a user turn and an assistant turn.
"""
from __future__ import annotations

import json

from datanets.readers import canonical_text

ROLES = ("system", "user", "assistant")
MESSAGES_COLUMN_NAMES = ("messages", "conversation", "conversations", "chat")
PROMPT_COLUMN_NAMES = ("prompt", "instruction", "question", "input", "query", "text")
RESPONSE_COLUMN_NAMES = ("response", "completion", "answer", "output", "reply", "target")

# Plain ChatML, for previews of a Datanet that no base model is tied to yet (the same layout as the demo
# base's template; a fine-tune renders with its base's own).
PREVIEW_START, PREVIEW_END = "<|im_start|>", "<|im_end|>"


class ChatError(ValueError):
    """A row is not a valid conversation; the message is for the user (the row number is added by the caller)."""


def conversation_parse(value, *, max_length: int) -> list[dict]:
    """Validate a conversation (a list of turns, or its JSON text) and return it in canonical form.

    Rules: each turn an object with a role (system, user or assistant) and non-empty text content; a
    system turn only first; then user and assistant alternate, starting with the user and ending with the
    assistant; the contents together at most `max_length` characters. Raises ChatError saying which turn.
    """
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ChatError(f"messages is not JSON: {exc.msg}") from exc
    if isinstance(value, dict) and "messages" in value:
        value = value["messages"]
    if not isinstance(value, list) or not value:
        raise ChatError("messages must be a non-empty list of turns")
    turns = []
    for i, turn in enumerate(value, 1):
        if not isinstance(turn, dict):
            raise ChatError(f"turn {i} is not an object with role and content")
        role = str(turn.get("role", "")).strip().lower()
        if role not in ROLES:
            raise ChatError(f"turn {i} has role '{str(turn.get('role', ''))[:30]}'; roles are {', '.join(ROLES)}")
        content = turn.get("content")
        if not isinstance(content, str):
            raise ChatError(f"turn {i} ({role}) has no text content")
        content = canonical_text(content)
        if not content:
            raise ChatError(f"turn {i} ({role}) is empty")
        if "\x00" in content:
            raise ChatError(f"turn {i} ({role}) holds a NUL character")
        turns.append({"role": role, "content": content})
    body = turns[1:] if turns[0]["role"] == "system" else turns
    if not body:
        raise ChatError("the conversation has only a system turn")
    offset = len(turns) - len(body)
    for j, turn in enumerate(body):
        expected = "user" if j % 2 == 0 else "assistant"
        if turn["role"] != expected:
            where = "a system turn may only come first" if turn["role"] == "system" else f"expected {expected}"
            raise ChatError(f"turn {j + offset + 1} is {turn['role']}: {where} (user and assistant alternate, "
                            "starting with user)")
    if body[-1]["role"] != "assistant":
        raise ChatError("the conversation must end with an assistant turn (the answer to learn)")
    total = sum(len(t["content"]) for t in turns)
    if total > max_length:
        raise ChatError(f"the conversation is {total} characters; the limit is {max_length}")
    return turns


def conversation_text(turns: list[dict]) -> str:
    """The stored (and hashed) form of a canonical conversation: compact JSON, keys in a fixed order."""
    return json.dumps([{"role": t["role"], "content": t["content"]} for t in turns], ensure_ascii=False,
                      separators=(",", ":"))


def conversation_from_pair(prompt: str, response: str, *, max_length: int) -> list[dict]:
    """A prompt/response row as a user turn and an assistant turn (validated like any conversation)."""
    return conversation_parse([{"role": "user", "content": prompt or ""},
                               {"role": "assistant", "content": response or ""}], max_length=max_length)


def conversation_load(text: str) -> list[dict] | None:
    """A stored record's turns, or None when the text is not a conversation (a plain-text record)."""
    if not text.startswith("["):
        return None
    try:
        turns = json.loads(text)
    except json.JSONDecodeError:
        return None
    if isinstance(turns, list) and turns and all(isinstance(t, dict) and "role" in t for t in turns):
        return turns
    return None


def conversation_answers(text: str) -> str:
    """What a model trained on this record learns to say: a conversation's assistant turns joined by a blank
    line; any other record's text as it is. For indexes of reusable passages (spans), not for hashing."""
    turns = conversation_load(text)
    if turns is None:
        return text
    return "\n\n".join(t["content"] for t in turns if t.get("role") == "assistant")


def conversation_preview(turns: list[dict]) -> str:
    """The conversation as a ChatML prompt renders it (what the model is trained on)."""
    return "".join(f"{PREVIEW_START}{t['role']}\n{t['content']}{PREVIEW_END}\n" for t in turns)


def guess_chat_columns(columns: list[str]) -> tuple[str, str]:
    """(messages or prompt column, response column or ''): a messages column wins; else prompt + response."""
    lower = {c.lower().strip(): c for c in columns}
    messages = next((lower[n] for n in MESSAGES_COLUMN_NAMES if n in lower), "")
    if messages:
        return messages, ""
    prompt = next((lower[n] for n in PROMPT_COLUMN_NAMES if n in lower), "")
    response = next((lower[n] for n in RESPONSE_COLUMN_NAMES if n in lower and lower[n] != prompt), "")
    return prompt, response


CONTINUE_PROMPT = "Continue this passage:\n"
SENTIMENT_PROMPT = ("What is the sentiment of this sentence from financial news: positive, negative or neutral?\n\n")


def continuation_pairs(paragraphs: list[str], *, min_lines: int = 2) -> list[tuple[str, str]]:
    """("Continue this passage:" + the first lines, the rest) of each paragraph of at least min_lines + 1
    lines; the demo's instruction Datanet and the demo base's pre-training build them the same way."""
    pairs = []
    for para in paragraphs:
        lines = [line for line in para.strip().split("\n") if line.strip()]
        if len(lines) < min_lines + 1:
            continue
        cut = max(min_lines, len(lines) // 2)
        pairs.append((CONTINUE_PROMPT + "\n".join(lines[:cut]), "\n".join(lines[cut:])))
    return pairs


def sentiment_pairs(rows: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """(question, answer) from labelled (label, sentence) rows: the answer is the label."""
    return [(SENTIMENT_PROMPT + text, label) for label, text in rows]
