"""The OpenAI-compatible API: what integrators of vLLM or LoRAX call, with `model` = a fine-tuned model's
slug. Each call is a paid inference like POST /api/v1/models/<id>/infer (same validation, fee, split and
attribution: serving.completions over serving.services), with the answer's attribution in an extra
`attribution` field. Errors have OpenAI's shape, {"error": {"message", "type", "param", "code"}}, so the
official clients raise their usual exception types.

Authenticated by `Authorization: Bearer <API key>` (or a user's REST token); the key's rate limit holds.
"""
from __future__ import annotations

from django.db import transaction
from django.http import Http404
from django.utils.decorators import method_decorator
from drf_spectacular.utils import extend_schema
from rest_framework import exceptions
from rest_framework.authentication import TokenAuthentication
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework.views import exception_handler as drf_exception_handler

from accounts.authentication import ApiKeyAuthentication, BearerAuthentication
from accounts.models import ApiKey
from core.errors import ApplicationError
from serving.api.serializers import InferenceSerializer
from serving.completions import (
    chat_messages_clean,
    chat_prompt_render,
    completion_execute,
    completion_stream_start,
    generation_params_clean,
    generator_check,
)
from serving.selectors import generator_models_list, model_get_by_name
from serving.sse import sse_response

ERR_BODY = "The request body must be a JSON object."
ERR_UNSUPPORTED = "`{name}` is not supported by this server."
ERR_PROMPT = "`prompt` must be a non-empty string (or a list of one)."
TYPES = {401: "authentication_error", 403: "permission_error", 429: "rate_limit_error"}
CODES = {401: "invalid_api_key", 404: "model_not_found", 409: "model_not_ready", 413: "context_length_exceeded",
         429: "rate_limit_exceeded"}


def error_body(message: str, *, status: int, param: str | None = None, code: str | None = None) -> dict:
    kind = TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code or CODES.get(status)}}


def openai_exception_handler(exc, context):
    """Every error of these routes in OpenAI's shape (the /api/v1/ routes keep the project's `detail`)."""
    if isinstance(exc, ApplicationError):
        return Response(error_body(exc.message, status=exc.status_code, param=exc.extra.get("param"),
                                   code=exc.extra.get("code")), status=exc.status_code)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    response = drf_exception_handler(exc, context)  # keeps WWW-Authenticate and Retry-After
    if response is None:
        return None
    detail = response.data.get("detail", response.data) if isinstance(response.data, dict) else response.data
    response.data = error_body(str(detail), status=response.status_code)
    return response


def _usage(inference) -> dict:
    out = inference.output or {}
    prompt, completion = int(out.get("prompt_tokens", 0)), int(out.get("completion_tokens", 0))
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _attribution(inference) -> dict:
    """The extra field: this call's row, fee and split, and its attribution (spans, records, contributors)."""
    data = InferenceSerializer(inference).data
    return {"inference_id": inference.pk, **(inference.attribution or {}), "fee": data["fee"],
            "fee_split": data["fee_split"], "settlement": data["settlement"]}


def _finish_reason(inference) -> str:
    reason = (inference.output or {}).get("finish_reason", "stop")
    return reason if reason in ("stop", "length") else "stop"


def _stream_events(stream, *, chunk_id: str, created: int, model_name: str, kind: str, include_usage: bool):
    """The chunks of a streamed answer; `kind` "chat" (deltas) or "text" (completions). The stream is
    closed with the generator, so a client that leaves stops the generation (and is charged for it)."""
    base = {"id": chunk_id, "object": "chat.completion.chunk" if kind == "chat" else "text_completion",
            "created": created, "model": model_name}

    def choice(text: str | None, finish: str | None, role: bool = False) -> dict:
        if kind == "chat":
            delta = ({"role": "assistant", "content": text} if role else {"content": text}) if text is not None else {}
            return {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
        return {"index": 0, "text": text or "", "finish_reason": finish, "logprobs": None}

    pieces = iter(stream)
    try:
        if kind == "chat":
            yield {**base, "choices": [choice("", None, role=True)]}
        for piece in pieces:
            yield {**base, "choices": [choice(piece, None)]}
    finally:
        pieces.close()
    if stream.error:
        yield error_body(f"The model failed while answering: {stream.error}", status=500)
        return
    done = stream.inference
    yield {**base, "choices": [choice(None if kind == "chat" else "", _finish_reason(done))],
           "attribution": _attribution(done)}
    if include_usage:
        yield {**base, "choices": [], "usage": _usage(done)}


# Not in the request transaction: the row must be committed before a `gpu` worker can run it, and a
# streamed answer is charged after the view has returned.
@method_decorator(transaction.non_atomic_requests, name="dispatch")
class OpenAIApi(APIView):
    authentication_classes = [BearerAuthentication, ApiKeyAuthentication, TokenAuthentication]
    permission_classes = [IsAuthenticated]

    def get_exception_handler(self):
        return openai_exception_handler

    def body(self) -> dict:
        data = self.request.data
        if not isinstance(data, dict):
            raise ApplicationError(ERR_BODY)
        for name, allowed in (("n", (None, 1)), ("best_of", (None, 1)), ("echo", (None, False)),
                              ("logprobs", (None, False, 0)), ("suffix", (None, "")), ("tools", (None, []))):
            if data.get(name) not in allowed:
                raise ApplicationError(ERR_UNSUPPORTED.format(name=name), extra={"param": name})
        return data

    def respond(self, *, model, text: str, params: dict, body: dict, kind: str):
        key = self.request.auth if isinstance(self.request.auth, ApiKey) else None
        name = model.slug or str(model.pk)
        prefix = "chatcmpl" if kind == "chat" else "cmpl"
        if body.get("stream"):
            stream = completion_stream_start(model=model, user=self.request.user, text=text, params=params, api_key=key)
            options = body.get("stream_options") or {}
            return sse_response(_stream_events(
                stream, chunk_id=f"{prefix}-{stream.inference.pk}", created=int(stream.inference.created_at.timestamp()),
                model_name=name, kind=kind, include_usage=bool(isinstance(options, dict) and options.get("include_usage"))),
                done="[DONE]", on_close=stream.close)
        inference = completion_execute(model=model, user=self.request.user, text=text, params=params, api_key=key)
        answer = inference.output.get("text", "")
        if kind == "chat":
            choice = {"index": 0, "message": {"role": "assistant", "content": answer}, "logprobs": None,
                      "finish_reason": _finish_reason(inference)}
        else:
            choice = {"index": 0, "text": answer, "logprobs": None, "finish_reason": _finish_reason(inference)}
        return Response({
            "id": f"{prefix}-{inference.pk}", "object": "chat.completion" if kind == "chat" else "text_completion",
            "created": int(inference.created_at.timestamp()), "model": name, "choices": [choice],
            "usage": _usage(inference), "attribution": _attribution(inference)})


def _model_object(model) -> dict:
    return {"id": model.slug or str(model.pk), "object": "model", "created": int(model.created_at.timestamp()),
            "owned_by": model.developer.username, "name": model.name, "model_id": model.pk,
            "base_model": model.base_model.name if model.base_model else None}


@extend_schema(exclude=True)  # documented in docs/openai_api.md: OpenAI's own schema, not this API's
class ModelListApi(OpenAIApi):
    def get(self, request):
        return Response({"object": "list", "data": [_model_object(m) for m in generator_models_list()]})


@extend_schema(exclude=True)
class ModelDetailApi(OpenAIApi):
    def get(self, request, name: str):
        return Response(_model_object(model_get_by_name(name=name)))


@extend_schema(exclude=True)
class ChatCompletionApi(OpenAIApi):
    def post(self, request):
        body = self.body()
        model = model_get_by_name(name=body.get("model"))
        generator_check(model=model)
        messages = chat_messages_clean(messages=body.get("messages"))
        prompt, stops = chat_prompt_render(model=model, messages=messages)
        params = generation_params_clean(
            max_tokens=body.get("max_completion_tokens", body.get("max_tokens")), temperature=body.get("temperature"),
            top_p=body.get("top_p"), stop=body.get("stop"), extra_stop=stops)
        return self.respond(model=model, text=prompt, params=params, body=body, kind="chat")


@extend_schema(exclude=True)
class CompletionApi(OpenAIApi):
    def post(self, request):
        body = self.body()
        model = model_get_by_name(name=body.get("model"))
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1:
            prompt = prompt[0]
        if not isinstance(prompt, str) or not prompt.strip():
            raise ApplicationError(ERR_PROMPT, extra={"param": "prompt"})
        params = generation_params_clean(max_tokens=body.get("max_tokens"), temperature=body.get("temperature"),
                                         top_p=body.get("top_p"), stop=body.get("stop"))
        return self.respond(model=model, text=prompt, params=params, body=body, kind="text")
