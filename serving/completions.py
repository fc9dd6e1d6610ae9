"""Completions for generators: chat messages rendered into a prompt, generation settings checked, and paid
calls whose text is streamed as it is generated. A prompt is run as given (not stripped: a chat
template's prompt ends where the answer begins). Used by the OpenAI-compatible API (serving.openai_api)
and the chat playground; both charge and attribute exactly as POST /api/v1/models/<id>/infer does
(serving.services: inference_create validates and writes the row, inference_finish charges and
attributes the answer).

Errors are ApplicationError: 400 bad messages or settings (`extra["param"]` names the field), and the
serving errors (404, 409, 413) of serving.services.
"""
from __future__ import annotations

import functools
import time

from django.conf import settings

from core.errors import ApplicationError
from serving.models import Inference
from serving.services import (
    ERR_FAILED,
    GENERATION,
    _serve_errors,
    inference_create,
    inference_dispatch,
    inference_execute,
    inference_fail,
    inference_finish,
    inference_request,
    model_serving_path,
    serving_engine,
    vllm_for,
)

ROLES = ("system", "user", "assistant")
MAX_STOP = 4
ERR_MESSAGES = "`messages` must be a non-empty list of {role, content} objects."
ERR_ROLE = "messages[{i}].role must be one of system, user, assistant, not {role!r}."
ERR_CONTENT = "messages[{i}].content must be non-empty text."
ERR_LAST = "The last message must be the user's."
ERR_NOT_GENERATOR = "Model {name} is a classifier; it cannot complete text (use POST /api/v1/models/{id}/infer)."
ERR_RANGE = "`{name}` must be a number from {low} to {high}."
ERR_LEFT_EARLY = "The client left before the first token: nothing was sent or charged."
ERR_STOP = f"`stop` must be a string or a list of at most {MAX_STOP} non-empty strings."

# A base without a chat template gets this plain one; the answer stops where the model would write the
# next turn.
PLAIN_ROLE = {"system": "System", "user": "User", "assistant": "Assistant"}
PLAIN_STOP = ["\nUser:", "\nSystem:"]


def _bad(message: str, param: str) -> ApplicationError:
    return ApplicationError(message, extra={"param": param})


def _content(value, i: int) -> str:
    """A message's text: a string, or OpenAI's list of content parts of type text."""
    if isinstance(value, list):
        value = "".join(p.get("text", "") for p in value if isinstance(p, dict) and p.get("type") == "text")
    if not isinstance(value, str) or not value.strip():
        raise _bad(ERR_CONTENT.format(i=i), f"messages[{i}].content")
    return value


def chat_messages_clean(*, messages) -> list[dict]:
    """[{role, content}] checked: known roles, non-empty text, ending with the user's turn."""
    if not isinstance(messages, list) or not messages:
        raise _bad(ERR_MESSAGES, "messages")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise _bad(ERR_MESSAGES, f"messages[{i}]")
        if m.get("role") not in ROLES:
            raise _bad(ERR_ROLE.format(i=i, role=m.get("role")), f"messages[{i}].role")
        out.append({"role": m["role"], "content": _content(m.get("content"), i)})
    if out[-1]["role"] != "user":
        raise _bad(ERR_LAST, "messages")
    return out


@functools.lru_cache(maxsize=16)
def _tokenizer(path: str):
    from factory.training.modeling import load_tokenizer

    return load_tokenizer(path)


def _template(model) -> tuple[object, str | None]:
    """(tokenizer, chat template or None): the one set on the catalog row, else the tokenizer's own."""
    tokenizer = _tokenizer(model_serving_path(model=model))
    return tokenizer, getattr(model.base_model, "chat_template", "") or getattr(tokenizer, "chat_template", None)


def chat_template_kind(*, model) -> str:
    """"base" when the base has a chat template, else "plain" (what chat_prompt_render uses)."""
    return "base" if _template(model)[1] else "plain"


def chat_prompt_render(*, model, messages: list[dict], fit_chars: int | None = None) -> tuple[str, list[str]]:
    """(prompt, stop sequences) for a chat: the base's chat template (one set on the catalog row, else the
    tokenizer's) with the generation prompt, or the plain `Role: text` template when the base has none.

    With `fit_chars`, the oldest turns after the system message are left out until the prompt fits (a
    long conversation in the playground keeps going; its last message always stays).
    """
    tokenizer, template = _template(model)

    def render(turns: list[dict]) -> str:
        if template:
            return tokenizer.apply_chat_template(turns, chat_template=template, tokenize=False,
                                                 add_generation_prompt=True)
        lines = [f"{PLAIN_ROLE[m['role']]}: {m['content'].strip()}" for m in turns]
        return "\n".join([*lines, "Assistant:"])

    turns = list(messages)
    prompt = render(turns)
    while fit_chars and len(prompt) > fit_chars:
        first = 1 if turns[0]["role"] == "system" else 0
        if len(turns) - first <= 1:
            break  # only the last message is left: the caller's length check answers
        del turns[first]
        prompt = render(turns)
    return prompt, ([] if template else list(PLAIN_STOP))


def _number(value, name: str, low: float, high: float, *, integer: bool = False):
    if value is None:
        return None
    ok = isinstance(value, int) if integer else isinstance(value, int | float)
    if isinstance(value, bool) or not ok or not low <= value <= high:
        raise _bad(ERR_RANGE.format(name=name, low=low, high=high), name)
    return value


def generation_params_clean(*, max_tokens=None, temperature=None, top_p=None, stop=None,
                            extra_stop: list[str] | None = None) -> dict:
    """The row's `params` from a caller's settings: max tokens 1..SERVING_MAX_NEW_TOKENS_LIMIT,
    temperature 0..2, top_p 0..1 (both left out: the engine's default decoding), up to 4 stop strings."""
    limit = settings.SERVING_MAX_NEW_TOKENS_LIMIT
    params: dict = {}
    if (n := _number(max_tokens, "max_tokens", 1, limit, integer=True)) is not None:
        params["max_new_tokens"] = n
    if (t := _number(temperature, "temperature", 0, 2)) is not None:
        params["temperature"] = float(t)
    if (p := _number(top_p, "top_p", 0, 1)) is not None:
        params["top_p"] = float(p)
    if isinstance(stop, str):
        stop = [stop]
    if stop is not None and (not isinstance(stop, list) or len(stop) > MAX_STOP
                             or not all(isinstance(s, str) and s for s in stop)):
        raise _bad(ERR_STOP, "stop")
    stops = [*(stop or []), *(extra_stop or [])]
    if stops:
        params["stop"] = stops
    return params


def generator_check(*, model) -> None:
    if model.task != GENERATION:
        raise ApplicationError(ERR_NOT_GENERATOR.format(name=model.slug or model.pk, id=model.pk))


def completion_execute(*, model, user, text: str, params: dict, api_key=None,
                       channel: str = Inference.Channel.API) -> Inference:
    """One paid completion, whole, through serving.services.inference_execute (any backend)."""
    generator_check(model=model)
    return inference_execute(model=model, user=user, text=text, api_key=api_key, channel=channel, params=params,
                             strip=False)


class CompletionStream:
    """A paid call whose text arrives as it is generated: iterate for the pieces of text. When the
    iteration ends, or is closed early (a client that left, a stop button), `inference` is the finished
    row, charged and attributed like any call; an engine failure mid-way leaves it failed (uncharged)
    with `error` set."""

    def __init__(self, inference: Inference, tokens=None):
        self.inference, self._tokens = inference, tokens
        self.error = ""
        self._iterated = False

    def __iter__(self):
        self._iterated = True
        if self._tokens is None:  # another process served it whole (http or celery backend)
            if self.inference.output.get("text"):
                yield self.inference.output["text"]
            return
        tokens, started, failed = self._tokens, time.perf_counter(), None
        try:
            yield from tokens
        except _serve_errors() as exc:
            failed = exc
        finally:
            if failed is not None:
                self.inference = inference_fail(inference=self.inference, error=failed)
                self.error = self.inference.error
            else:
                self.inference = inference_finish(inference=self.inference, seconds=time.perf_counter() - started,
                                                  result={"text": tokens.text, "prompt_tokens": tokens.prompt_tokens,
                                                          "completion_tokens": tokens.completion_tokens,
                                                          "finish_reason": tokens.finish_reason})

    def close(self) -> None:
        """End a stream whose pieces were never asked for (the client left before the first one, e.g. a
        Stop clicked before the answer's headers arrived): a generator that never ran cannot run its own
        `finally`, so the row would stay pending for ever. Nothing was sent, so nothing is charged."""
        if self._iterated or self._tokens is None:
            return
        self._iterated = True
        if hasattr(self._tokens, "close"):  # vLLM's stream was opened by start(): hang it up
            self._tokens.close()
        self.inference = inference_fail(inference=self.inference, error=ApplicationError(ERR_LEFT_EARLY))
        self.error = self.inference.error


def completion_stream_start(*, model, user, text: str, params: dict, api_key=None,
                            channel: str = Inference.Channel.API) -> CompletionStream:
    """Validate, write the pending row and start generating (base, adapter and prompt loaded), so every
    refusal or load failure is an ApplicationError before the first byte reaches the client.

    Token-by-token streaming runs where the engine does, in this process (SERVING_BACKEND inprocess);
    with the http or celery backend the answer is generated there whole and sent as one piece. A generator
    on the base of the vLLM server at SERVING_VLLM_URL streams from it token by token, whatever the backend.
    """
    from serving.openlora.stream import TokenStream

    generator_check(model=model)
    inference = inference_create(model=model, user=user, text=text, api_key=api_key, channel=channel, params=params,
                                 strip=False)
    client = tokens = None
    try:
        request = inference_request(inference=inference, base_path=model_serving_path(model=model))
        client = vllm_for(request)  # vLLM streams to this process whatever the backend
        if client is not None or settings.SERVING_BACKEND not in ("http", "celery"):
            tokens = client.stream(request) if client is not None else TokenStream(serving_engine(), request)
            tokens.start()
    except _serve_errors() as exc:
        inference = inference_fail(inference=inference, error=exc)
        raise ApplicationError(ERR_FAILED.format(error=inference.error), status_code=409) from exc
    if tokens is None:  # another process serves it whole
        return CompletionStream(inference_dispatch(inference=inference))
    return CompletionStream(inference, tokens)
