"""Chat templates and the assistant-only loss mask (no Django).

A conversation is a list of {"role", "content"} turns. It is rendered with the base model's chat template
(the tokenizer's own, or one set per base in the catalog) and only the assistant's tokens are trained on,
as TRL's SFTTrainer does with `assistant_only_loss=True`.

The mask comes from the template's `{% generation %}` markers when it has them (transformers'
`return_assistant_tokens_mask`, which TRL uses too); templates without them (most on the Hub) are handled
by rendering growing prefixes of the conversation: the tokens between "…up to the user's turn, plus the
assistant header" and "…up to the assistant's turn" are that turn's answer (with whatever separator the
template writes after its end-of-turn token). This needs a template that renders a conversation as the
concatenation of its turns, which is what chat templates do.
"""
from __future__ import annotations

from factory.training.types import TrainingError

# ChatML, with generation markers so transformers (and TRL) can tell the assistant's tokens.
CHATML_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\n' }}"
    "{%- if message['role'] == 'assistant' %}"
    "{% generation %}{{- message['content'] + '<|im_end|>' }}{% endgeneration %}{{- '\n' }}"
    "{%- else %}"
    "{{- message['content'] + '<|im_end|>' + '\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}{%- endif %}"
)
CHATML_SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
SAMPLE_CONVERSATION = [
    {"role": "system", "content": "You are helpful."},
    {"role": "user", "content": "Hello?"},
    {"role": "assistant", "content": "Hi."},
]
ERR_NO_TEMPLATE = ("The base model's tokenizer has no chat template; set one for this base in the catalog "
                   "(register_base_model --chat-template FILE) to train on conversations.")


def template_check(tokenizer, template: str = "") -> str:
    """Render a sample conversation with `template` (or the tokenizer's own); return what it renders.
    Raises TrainingError with the template's error: a broken template fails at registration, not mid-run."""
    try:
        text = tokenizer.apply_chat_template(SAMPLE_CONVERSATION, chat_template=template or None, tokenize=False)
    except Exception as exc:  # jinja2's errors, a missing template (ValueError): one message for the user
        raise TrainingError(f"The chat template does not render a conversation: {exc}") from exc
    if "Hello?" not in text or "Hi." not in text:
        raise TrainingError("The chat template leaves out the conversation's turns.")
    return text


def has_generation_markers(template: str | None) -> bool:
    return bool(template) and "{% generation %}" in template.replace("{%-", "{%").replace("-%}", "%}")


def encode_chat(tokenizer, messages: list[dict], *, max_length: int) -> tuple[list[int], list[int]]:
    """(token ids, assistant mask) of one conversation, truncated to `max_length`. The mask is 1 on the
    tokens the loss is taken on: every assistant turn's content and its end-of-turn token."""
    template = tokenizer.chat_template
    if not template:
        raise TrainingError(ERR_NO_TEMPLATE)
    if has_generation_markers(template):
        out = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True,
                                            return_assistant_tokens_mask=True)
        ids, mask = list(out["input_ids"]), list(out["assistant_masks"])
    else:
        ids, mask = _encode_by_prefixes(tokenizer, messages)
    return ids[:max_length], mask[:max_length]


def _render_ids(tokenizer, messages: list[dict], *, add_generation_prompt: bool) -> list[int]:
    if not messages:
        return []
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def _encode_by_prefixes(tokenizer, messages: list[dict]) -> tuple[list[int], list[int]]:
    ids = _render_ids(tokenizer, messages, add_generation_prompt=False)
    mask = [0] * len(ids)
    for i, turn in enumerate(messages):
        if turn["role"] != "assistant":
            continue
        start = len(_render_ids(tokenizer, messages[:i], add_generation_prompt=True))
        end = len(_render_ids(tokenizer, messages[:i + 1], add_generation_prompt=False))
        for j in range(start, min(end, len(ids))):
            mask[j] = 1
    return ids, mask


def prompt_ids(tokenizer, messages: list[dict]) -> list[int]:
    """The tokens a generation starts from: the conversation so far plus the assistant's header."""
    if not tokenizer.chat_template:
        raise TrainingError(ERR_NO_TEMPLATE)
    return _render_ids(tokenizer, messages, add_generation_prompt=True)
