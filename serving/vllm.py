"""A vLLM server as the engine of causal-LM adapters (docs/serving.md, "vLLM on a GPU").

vLLM pins its own torch, so it runs as its own process and environment (requirements-vllm.txt,
`make vllm`), started on one base with LoRA enabled; this module talks to its OpenAI-compatible API
over HTTP. Adapters are loaded on demand (`POST /v1/load_lora_adapter`, which the server allows with
VLLM_ALLOW_RUNTIME_LORA_UPDATING=True) under a name derived from the adapter's folder, which must be
readable by the vLLM process at the same path. Classifiers, and generators on any other base, stay on
the built-in engine. No Django here: serving.services decides when to call it.

Decoding: vLLM's completions have no beam search, so the engine's default (beam search when neither
temperature nor top_p is given) is greedy here; sampling settings are passed on as they are.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

logger = logging.getLogger(__name__)

MODELS_TTL_S = 30.0  # how long the server's base (GET /v1/models) is trusted before it is asked again


class VllmError(RuntimeError):
    """The vLLM server refused or failed a request (the message says why)."""


def lora_name(adapter_dir: str) -> str:
    """One stable name per adapter folder (vLLM keys loaded adapters by name)."""
    return "mf-" + hashlib.sha256(os.path.realpath(adapter_dir).encode()).hexdigest()[:16]


def _printable(text: str) -> str:
    from serving.openlora.engine import printable  # the built-in engine's rule: no control characters

    return printable(text)


class VllmClient:
    def __init__(self, url: str, *, timeout: float = 60.0, max_new_tokens: int = 40):
        self.url = url.rstrip("/")
        self.timeout, self.max_new_tokens = timeout, max_new_tokens
        self._loaded: set[str] = set()
        self._lock = threading.Lock()
        self._base: tuple[float, str | None, str | None] = (0.0, None, None)  # (checked at, root, id)

    # --- HTTP ------------------------------------------------------------------------------------
    def _request(self, method: str, path: str, body: dict | None = None, *, stream: bool = False):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method,  # noqa: S310 - our setting
                                     headers={"Content-Type": "application/json"})
        try:
            resp = urllib.request.urlopen(req, timeout=self.timeout)  # noqa: S310 - http(s) checked in settings
        except urllib.error.HTTPError as exc:
            raw = exc.read() or b""
            try:
                detail = json.loads(raw)
                detail = (detail.get("error") or {}).get("message") if isinstance(detail.get("error"), dict) \
                    else detail.get("message") or detail.get("detail") or raw.decode(errors="replace")
            except ValueError:
                detail = raw.decode(errors="replace")
            raise VllmError(f"vLLM answered {exc.code}: {detail}") from None
        except (urllib.error.URLError, TimeoutError) as exc:
            raise OSError(f"the vLLM server at {self.url} did not answer: {exc}") from None
        if stream:
            return resp
        with resp:
            raw = resp.read()
        try:
            return json.loads(raw)
        except ValueError:
            return {"text": raw.decode(errors="replace")}

    # --- which base it serves --------------------------------------------------------------------
    def _served_base(self) -> tuple[str | None, str | None]:
        checked, root, model_id = self._base
        if time.monotonic() - checked < MODELS_TTL_S:
            return root, model_id
        try:
            listed = self._request("GET", "/v1/models")
            base = next((m for m in listed.get("data", []) if not m.get("parent")), None)
            root = os.path.realpath(base.get("root") or base["id"]) if base else None
            model_id = base["id"] if base else None
        except (OSError, VllmError, KeyError, TypeError) as exc:
            # Down or not vLLM: the built-in engine serves meanwhile (asked again after the TTL).
            logger.warning("vLLM at %s is not available (%s); the built-in engine serves", self.url, exc)
            root = model_id = None
        self._base = (time.monotonic(), root, model_id)
        return root, model_id

    def serves(self, base_path: str) -> bool:
        root, _ = self._served_base()
        return root is not None and root == os.path.realpath(str(base_path))

    # --- adapters --------------------------------------------------------------------------------
    def _model_for(self, adapter_dir: str | None, *, reload: bool = False) -> str:
        if not adapter_dir:
            return self._served_base()[1] or ""
        name = lora_name(adapter_dir)
        with self._lock:
            if reload:
                self._loaded.discard(name)
            if name in self._loaded:
                return name
            try:
                self._request("POST", "/v1/load_lora_adapter", {"lora_name": name, "lora_path": str(adapter_dir)})
            except VllmError as exc:
                if "already" not in str(exc).lower():  # loaded by another web process: fine
                    raise
            self._loaded.add(name)
        return name

    def _body(self, request, model: str, *, stream: bool) -> dict:
        body = {"model": model, "prompt": request.text,
                "max_tokens": int(request.max_new_tokens or self.max_new_tokens),
                "temperature": 0.0 if request.temperature is None and request.top_p is None
                else float(1.0 if request.temperature is None else request.temperature)}
        if request.top_p is not None:
            body["top_p"] = float(request.top_p)
        if request.stop:
            body["stop"] = list(request.stop)
        if stream:
            body.update(stream=True, stream_options={"include_usage": True})
        return body

    def _completions(self, request, *, stream: bool):
        model = self._model_for(request.adapter_dir)
        try:
            return self._request("POST", "/v1/completions", self._body(request, model, stream=stream), stream=stream)
        except VllmError as exc:
            if request.adapter_dir and "404" in str(exc):  # the server restarted and forgot the adapter
                model = self._model_for(request.adapter_dir, reload=True)
                return self._request("POST", "/v1/completions", self._body(request, model, stream=stream),
                                     stream=stream)
            raise

    # --- answers ---------------------------------------------------------------------------------
    def generate(self, request) -> dict:
        """A whole answer, in the built-in engine's shape."""
        out = self._completions(request, stream=False)
        choice = (out.get("choices") or [{}])[0]
        usage = out.get("usage") or {}
        return {"text": _printable(choice.get("text") or ""), "task": "generation",
                "prompt_tokens": int(usage.get("prompt_tokens") or 0),
                "completion_tokens": int(usage.get("completion_tokens") or 0),
                "finish_reason": "length" if choice.get("finish_reason") == "length" else "stop"}

    def stream(self, request) -> VllmStream:
        return VllmStream(self, request)


class VllmStream:
    """The answer's text as vLLM streams it, with the built-in TokenStream's interface: `start()` opens
    the stream (so a refusal is raised before anything reaches a client), iterate for the pieces, then
    `text`, `prompt_tokens`, `completion_tokens`, `finish_reason`."""

    def __init__(self, client: VllmClient, request):
        self.client, self.request = client, request
        self.text, self.prompt_tokens, self.completion_tokens, self.finish_reason = "", 0, 0, ""
        self._resp = None

    def start(self) -> None:
        self._resp = self.client._completions(self.request, stream=True)

    def close(self) -> None:
        """Drop a stream that was opened but never read (its client left): vLLM stops on the closed connection."""
        if self._resp is not None:
            self._resp.close()

    def __iter__(self) -> Iterator[str]:
        if self._resp is None:
            self.start()
        self.finish_reason = "cancelled"
        raw_text = ""
        try:
            with self._resp as resp:
                for line in resp:
                    line = line.strip()
                    if not line.startswith(b"data:"):
                        continue
                    data = line[5:].strip()
                    if data == b"[DONE]":
                        break
                    chunk = json.loads(data)
                    if chunk.get("usage"):
                        self.prompt_tokens = int(chunk["usage"].get("prompt_tokens") or 0)
                        self.completion_tokens = int(chunk["usage"].get("completion_tokens") or 0)
                    for choice in chunk.get("choices") or []:
                        raw_text += choice.get("text") or ""
                        if choice.get("finish_reason"):
                            self.finish_reason = "length" if choice["finish_reason"] == "length" else "stop"
                        clean = _printable(raw_text)
                        if len(clean) > len(self.text):
                            piece, self.text = clean[len(self.text):], clean
                            yield piece
        except (ValueError, KeyError) as exc:
            raise VllmError(f"vLLM sent a malformed stream: {exc}") from None
