"""Token-by-token generation of one request on the serving engine, for streamed answers (no Django).

    stream = TokenStream(engine, InferenceRequest(base_path=..., adapter_dir=..., text=..., temperature=0.7))
    stream.start()                 # loads base and adapter, runs the prompt: errors surface here
    for piece in stream: ...       # text as it is decoded
    stream.text, stream.prompt_tokens, stream.completion_tokens, stream.finish_reason

Beam search cannot stream (its best beam is known only at the end), so a stream decodes greedily (with
the engine's no-repeat n-gram rule) or samples (temperature / top-p). Each step takes the base's lock for
one forward pass only, with this request's KV cache, so other requests on the same base (batches,
other streams) run between its tokens instead of waiting for the whole answer. Closing the generator
(a client that went away, a stop button) ends it after the current step; `finish_reason` is then
"cancelled".
"""
from __future__ import annotations

import torch

from serving.openlora.engine import GENERATION, InferenceRequest, ServingEngine, eos_ids, printable, stop_cut

REPLACEMENT = "\ufffd"  # a multi-byte character cut between tokens: wait for the next token


class TokenStream:
    def __init__(self, engine: ServingEngine, request: InferenceRequest):
        self.engine, self.request = engine, request
        self.text = ""
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.finish_reason = ""
        self._started = False

    def start(self) -> None:
        """Load the base and the adapter and fit the adapter's layers; raises AdapterError / OSError /
        ValueError for what cannot be served, before anything has been sent to a client."""
        engine, r = self.engine, self.request
        self.adapter = engine.adapter(r.adapter_dir) if r.adapter_dir else None
        self.served = engine.base(r.base_path, GENERATION)
        with self.served.lock:
            if self.adapter is not None:
                self.served.fit(self.adapter)
        tok = self.served.tokenizer
        encoded = tok(r.text)
        # Token types as generate() feeds them (the engine's whole answers), so a greedy stream is the
        # same text: all 0 for one sequence, when the tokenizer makes them at all.
        self.token_types = "token_type_ids" in encoded and self.served.token_types
        ids = encoded["input_ids"] or (
            [tok.bos_token_id] if tok.bos_token_id is not None else [tok.eos_token_id])
        limit = self.served.max_positions
        self.max_new = max(1, min(r.max_new_tokens or engine.config.max_new_tokens, limit // 2))
        # Keep the end of a long prompt (the latest turns of a chat), leaving room for the answer.
        ids = ids[-(limit - self.max_new):]
        self.prompt_ids = ids
        self.prompt_tokens = len(ids)
        self._processors = self._logits_processors()
        self._started = True

    def _logits_processors(self):
        from transformers import (
            LogitsProcessorList,
            NoRepeatNGramLogitsProcessor,
            TemperatureLogitsWarper,
            TopPLogitsWarper,
        )

        r = self.request
        self.sample = not (r.temperature is None and r.top_p is None) and r.temperature != 0
        procs = LogitsProcessorList()
        if self.engine.config.no_repeat_ngram_size and not self.sample:
            procs.append(NoRepeatNGramLogitsProcessor(self.engine.config.no_repeat_ngram_size))
        if self.sample:
            temperature = float(r.temperature if r.temperature is not None else 1.0)
            if temperature != 1.0:
                procs.append(TemperatureLogitsWarper(temperature))
            if r.top_p is not None and float(r.top_p) < 1.0:
                procs.append(TopPLogitsWarper(float(r.top_p)))
        return procs

    def _step(self, input_ids: torch.Tensor, cache):
        served, engine = self.served, self.engine
        with served.lock:
            served.state.set_rows([self.adapter], served.shapes, device=engine.device, dtype=engine.dtype)
            try:
                with torch.inference_mode():
                    extra = {"token_type_ids": torch.zeros_like(input_ids)} if self.token_types else {}
                    out = served.model(input_ids=input_ids, past_key_values=cache, use_cache=True, **extra)
            finally:
                served.state.clear()
        return out.logits[:, -1, :].float(), out.past_key_values

    def __iter__(self):
        if not self._started:
            self.start()
        tok, device = self.served.tokenizer, self.engine.device
        ends = eos_ids(self.served.model, tok)
        stops = [s for s in (self.request.stop or []) if s]
        hold = max((len(s) for s in stops), default=1) - 1
        seen = list(self.prompt_ids)
        generated: list[int] = []
        sent = 0
        cache = None
        step_input = torch.tensor([self.prompt_ids], device=device)
        self.finish_reason = "cancelled"  # until the loop ends by itself
        try:
            while True:
                logits, cache = self._step(step_input, cache)
                with torch.inference_mode():
                    scores = self._processors(torch.tensor([seen], device=device), logits)
                    if self.sample:
                        token = int(torch.multinomial(torch.softmax(scores, -1), 1)[0, 0])
                    else:
                        token = int(scores.argmax(-1)[0])
                if token in ends:
                    self.finish_reason = "stop"
                    break
                generated.append(token)
                seen.append(token)
                self.completion_tokens = len(generated)
                decoded = printable(tok.decode(generated, skip_special_tokens=True))
                text, stopped = stop_cut(decoded, stops)
                if stopped:
                    self.text = text
                    self.completion_tokens = len(tok(text, add_special_tokens=False)["input_ids"])
                    self.finish_reason = "stop"
                    break
                self.text = decoded
                # Hold back a possible start of a stop sequence, and a character cut between tokens.
                ready = len(decoded) - hold if stops else len(decoded)
                if decoded.endswith(REPLACEMENT):
                    ready = min(ready, len(decoded.rstrip(REPLACEMENT)))
                if ready > sent:
                    yield decoded[sent:ready]
                    sent = ready
                if len(generated) >= self.max_new or len(seen) >= self.served.max_positions:
                    self.finish_reason = "length"
                    break
                step_input = torch.tensor([[token]], device=device)
            if len(self.text) > sent:
                yield self.text[sent:]
        except GeneratorExit:
            self.finish_reason = "cancelled"
            raise
