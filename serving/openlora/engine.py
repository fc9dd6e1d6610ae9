"""OpenLoRA serving: one copy of each base model, adapters on demand in an LRU cache, mixed batches.

    engine = ServingEngine(ServingConfig(cache_adapters=100, cache_bytes=512 << 20))
    engine.infer([InferenceRequest(base_path=..., adapter_dir=..., text="...")])   # -> [dict]

Requests for adapters of the same base (and task) run in one forward pass (`serving.openlora.lora`);
different bases run one after another. Adapters are read from safetensors straight onto the device
(`serving.openlora.adapters`), never re-reading the base. CUDA is used when present. Thread-safe: one
forward at a time per base (the base's layers hold the batch's state).
"""
from __future__ import annotations

import inspect
import re
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch

from serving.openlora.adapters import AdapterError, LoadedAdapter, adapter_task, load_adapter
from serving.openlora.lora import BatchState, attach

CLASSIFICATION = "classification"
GENERATION = "generation"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# "int8" (CPU only): the base's Linear layers dynamically quantized to int8 (VNNI / AVX2 kernels), the
# adapters and heads kept in float32; the precision a CPU serves fastest at, for a small loss of accuracy.
INT8 = "int8"


@dataclass(frozen=True)
class ServingConfig:
    cache_adapters: int = 100          # most adapters held at once
    cache_bytes: int = 1 << 30         # and most bytes of adapter weights
    max_batch: int = 32                # rows per forward pass
    max_new_tokens: int = 40           # generation length
    no_repeat_ngram_size: int = 3      # greedy decoding of small models loops on one phrase without it
    # Beam search finds the likelier continuation, which for a small model is both better text and the
    # training passage it learned (2-3x more reused spans of >= 6 tokens than greedy, docs/serving.md).
    num_beams: int = 4
    device: str = ""                   # "" = cuda when present, else cpu
    threads: int = 0                   # torch CPU threads (0 = leave as is)
    dtype: str = ""                    # "" = float16 on CUDA, float32 on CPU; or float32 / bfloat16 / float16 / int8
    prefetch: bool = True              # read the next batch's adapters while this batch runs


@dataclass
class InferenceRequest:
    base_path: str
    adapter_dir: str | None
    text: str
    task: str | None = None            # taken from the adapter's factory.json when None
    max_new_tokens: int | None = None
    # Decoding (generation): temperature None and top_p None = the engine's beam search; temperature 0 =
    # greedy; otherwise sampling (top_p alone samples at temperature 1, as OpenAI's API does).
    temperature: float | None = None
    top_p: float | None = None
    stop: list[str] | None = None      # the text is cut before the first of these (finish_reason "stop")

    @property
    def decoding(self) -> tuple:
        """Requests batched into one generate() share this (sampling settings are per call)."""
        return (self.temperature, self.top_p)


def decoding_kwargs(temperature: float | None, top_p: float | None, *, num_beams: int) -> dict:
    """generate() arguments for a request's decoding settings (see InferenceRequest)."""
    if temperature is None and top_p is None:
        return {"do_sample": False, "num_beams": max(1, num_beams)}
    if temperature == 0:
        return {"do_sample": False, "num_beams": 1}
    return {"do_sample": True, "num_beams": 1, "temperature": float(temperature if temperature is not None else 1.0),
            "top_p": float(top_p if top_p is not None else 1.0)}


def eos_ids(model, tokenizer) -> set[int]:
    """Tokens that end an answer: the generation config's (a chat base may end a turn with its own token
    as well as end-of-text) and the tokenizer's end-of-sequence."""
    ids = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    found = set(ids if isinstance(ids, list) else [] if ids is None else [ids])
    if tokenizer.eos_token_id is not None:
        found.add(tokenizer.eos_token_id)
    return found


_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def printable(text: str) -> str:
    """Generated text without control characters other than tab and newlines. A byte-level tokenizer has a
    token for every byte, and sampling can pick NUL, which PostgreSQL cannot store (a 500 once) and no
    reader wants; removing characters keeps each streamed prefix a prefix of the whole."""
    return _CONTROL.sub("", text)


def stop_cut(text: str, stop) -> tuple[str, bool]:
    """`text` up to the first stop sequence, and whether one was found."""
    cut = min((i for i in (text.find(s) for s in stop or () if s) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    evictions: int = 0
    load_seconds: float = 0.0


class AdapterCache:
    """LRU of LoadedAdapter by count and by bytes. An adapter in use by a batch stays alive through
    the batch's own reference even when evicted, so a batch larger than the cache still runs."""

    def __init__(self, *, max_count: int, max_bytes: int):
        self.max_count = max(1, int(max_count))
        self.max_bytes = max(1, int(max_bytes))
        self._items: OrderedDict[str, LoadedAdapter] = OrderedDict()
        self._lock = threading.Lock()
        self.bytes = 0
        self.stats = CacheStats()

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: str) -> bool:
        return key in self._items

    def get(self, key: str, loader) -> LoadedAdapter:
        with self._lock:
            found = self._items.get(key)
            if found is not None:
                self._items.move_to_end(key)
                self.stats.hits += 1
                return found
        adapter = loader(key)  # outside the lock: loads of different adapters may overlap
        with self._lock:
            self.stats.misses += 1
            self.stats.load_seconds += adapter.load_seconds
            if key not in self._items:
                self._items[key] = adapter
                self.bytes += adapter.nbytes
            while self._items and (len(self._items) > self.max_count or self.bytes > self.max_bytes):
                _, old = self._items.popitem(last=False)
                self.bytes -= old.nbytes
                self.stats.evictions += 1
            return adapter


class ServedBase:
    """One base model in memory, with the batched-LoRA layers attached as adapters need them."""

    def __init__(self, path: str, task: str, device: torch.device, dtype: torch.dtype, *, quantize: bool = False):
        from factory.training.modeling import load_tokenizer

        self.path, self.task, self.device, self.dtype = path, task, device, dtype
        self.tokenizer = load_tokenizer(path)
        if task == GENERATION:
            from transformers import AutoModelForCausalLM

            self.tokenizer.padding_side = "left"  # generation appends on the right
            self.model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
        else:
            from transformers import AutoModelForSequenceClassification

            # One label: every served classifier brings its own head (PEFT modules_to_save).
            self.model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, dtype=dtype)
            if self.model.config.pad_token_id is None:
                self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.model.to(device).eval()
        # Tokenizers may return token types (GPT-2's then get an embedding); Llama-family models take none,
        # and generate() refuses an argument the model does not name.
        self.token_types = "token_type_ids" in inspect.signature(self.model.forward).parameters
        if quantize:
            _quantize_int8(self.model)
        self.state = BatchState()
        self.shapes: dict[str, tuple[int, int]] = {}  # every wrapped LoRA layer (attach fills it)
        self._heads: set[str] = set()                  # every wrapped head
        self.lock = threading.Lock()
        self.max_positions = int(getattr(self.model.config, "max_position_embeddings", 0)
                                 or getattr(self.model.config, "n_positions", 0) or 512)

    def fit(self, adapter: LoadedAdapter) -> None:
        """Wrap the layers this adapter touches (once per layer, for the life of the base)."""
        lora, heads = set(adapter.layers), set(adapter.heads)
        if lora <= self.shapes.keys() and heads <= self._heads:
            return  # the usual case: this base already serves an adapter of the same shape
        try:
            attach(self.model, self.state, lora=lora, heads=heads, shapes=self.shapes)
        except (KeyError, AttributeError) as exc:
            raise AdapterError(f"Adapter {adapter.key} does not fit the base model {self.path}: {exc}") from exc
        self._heads |= heads


def _quantize_int8(model: torch.nn.Module) -> None:
    """Dynamic int8 quantization of the body's Linear layers, in place. Heads (classifier, lm_head) stay
    float: every adapter brings its own head, swapped per row. GPT-2's Conv1D layers are left alone."""
    import warnings

    with warnings.catch_warnings():
        # torch.ao's eager quantization works in this torch, with a notice that it moves to torchao.
        warnings.simplefilter("ignore")
        torch.ao.quantization.quantize_dynamic(model.base_model, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)


class ServingEngine:
    def __init__(self, config: ServingConfig | None = None):
        self.config = config or ServingConfig()
        if self.config.threads:
            torch.set_num_threads(self.config.threads)
        if self.config.device:
            self.device = torch.device(self.config.device)
        else:
            self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        # Default: fp16 on GPUs (half the memory, twice the matmul rate), fp32 on CPUs; bfloat16 roughly
        # halves CPU time where the CPU has native bf16 (AVX512-BF16 / AMX) at ~1e-3 logit error.
        self.quantize = self.config.dtype == INT8
        if self.quantize and self.device.type != "cpu":
            raise ValueError("dtype int8 is for CPUs; on a GPU use float16 or bfloat16")
        if self.quantize:
            self.dtype = torch.float32  # adapters, heads and activations between layers
        elif self.config.dtype:
            if self.config.dtype not in DTYPES:
                raise ValueError(f"dtype must be one of {sorted([*DTYPES, INT8])}, not {self.config.dtype!r}")
            self.dtype = DTYPES[self.config.dtype]
        else:
            self.dtype = torch.float16 if self.device.type == "cuda" else torch.float32
        self.cache = AdapterCache(max_count=self.config.cache_adapters, max_bytes=self.config.cache_bytes)
        self._bases: dict[tuple[str, str], ServedBase] = {}
        self._bases_lock = threading.Lock()
        # One reader thread: reading safetensors (and copying to the device) overlaps the forward pass,
        # which matters most on a GPU, where a batch's forward is as short as its adapters' reads.
        self._prefetcher = ThreadPoolExecutor(1, "adapter-prefetch") if self.config.prefetch else None

    # --- parts ------------------------------------------------------------------------------
    def base(self, path: str, task: str) -> ServedBase:
        key = (str(path), task)
        with self._bases_lock:
            if key not in self._bases:
                if not Path(path).is_dir():
                    raise AdapterError(f"The base model folder {path} does not exist.")
                self._bases[key] = ServedBase(str(path), task, self.device, self.dtype, quantize=self.quantize)
            return self._bases[key]

    def adapter(self, adapter_dir: str) -> LoadedAdapter:
        return self.cache.get(str(adapter_dir), lambda k: load_adapter(k, device=self.device, dtype=self.dtype))

    def adapters_for(self, requests: list[InferenceRequest]) -> list[LoadedAdapter | None]:
        """One adapter (or None: the bare base) per request, through the cache."""
        return [self.adapter(r.adapter_dir) if r.adapter_dir else None for r in requests]

    def _task_of(self, request: InferenceRequest, adapter: LoadedAdapter | None) -> str:
        return request.task or (adapter.task if adapter is not None else CLASSIFICATION)

    @property
    def explains_exactly(self) -> bool:
        """Whether an answer's gradients can be taken on the served base itself (`peft_view`): only in
        float32, the precision of every attribution index's rows."""
        return self.dtype == torch.float32 and not self.quantize

    def peft_view(self, base_path: str, adapter_dir: str):
        """Context manager: (module, tokenizer) of the served base with this adapter, PEFT-shaped, for
        the gradient engine (see `serving.openlora.peft_view`). Holds the base's lock while open."""
        from serving.openlora.peft_view import peft_view

        return peft_view(self, base_path, adapter_dir)

    # --- running ----------------------------------------------------------------------------
    def forward(self, requests: list[InferenceRequest], adapters: list | None = None) -> list[torch.Tensor]:
        """Raw per-row outputs: classification logits (cut to the adapter's labels); for generation
        the next-token logits at the last input position. All requests must share one base."""
        if not requests:
            return []
        if adapters is None:
            adapters = self.adapters_for(requests)
        served = self.base(requests[0].base_path, self._task_of(requests[0], adapters[0]))
        out: list[torch.Tensor] = []
        with served.lock:
            for a in {id(a): a for a in adapters if a is not None}.values():
                served.fit(a)
            enc = self._encode(served, requests, adapters)
            if served.task == GENERATION:
                # Left padding: positions count real tokens only, as generate() does.
                enc["position_ids"] = (enc["attention_mask"].cumsum(-1) - 1).clamp(min=0)
            served.state.set_rows(adapters, served.shapes, device=self.device, dtype=self.dtype)
            try:
                with torch.inference_mode():
                    logits = served.model(**enc).logits
            finally:
                served.state.clear()
            if served.task == GENERATION:
                logits = logits[:, -1, :]
            for row, a in enumerate(adapters):
                width = len(a.labels) if (a is not None and a.labels and served.task == CLASSIFICATION) else None
                out.append(logits[row, :width].float().cpu())
        return out

    def _encode(self, served: ServedBase, requests, adapters):
        max_len = max(a.max_length if a is not None else served.max_positions for a in adapters)
        enc = served.tokenizer([r.text for r in requests], padding=True, truncation=True,
                               max_length=min(max_len, served.max_positions), return_tensors="pt")
        return {k: v.to(self.device) for k, v in enc.items() if k != "token_type_ids" or served.token_types}

    def generate(self, requests: list[InferenceRequest], adapters: list | None = None) -> list[dict]:
        """Generation for a batch of adapters of one base, all with the same decoding settings (beam search
        by default, greedy, or sampling). Each row: {"text", "prompt_tokens", "completion_tokens",
        "finish_reason"} ("stop": end of text or a stop sequence; "length": max_new_tokens reached)."""
        if adapters is None:
            adapters = self.adapters_for(requests)
        served = self.base(requests[0].base_path, GENERATION)
        new = max(r.max_new_tokens or self.config.max_new_tokens for r in requests)
        decoding = decoding_kwargs(requests[0].temperature, requests[0].top_p, num_beams=self.config.num_beams)
        with served.lock:
            for a in {id(a): a for a in adapters if a is not None}.values():
                served.fit(a)
            limit = max(1, served.max_positions - new)
            enc = served.tokenizer([r.text for r in requests], padding=True, truncation=True,
                                   max_length=limit, return_tensors="pt")
            enc = {k: v.to(self.device) for k, v in enc.items() if k != "token_type_ids" or served.token_types}
            beams = decoding["num_beams"]
            # generate() runs each request's beams as consecutive rows: each row's adapter, repeated.
            served.state.set_rows([a for a in adapters for _ in range(beams)], served.shapes, device=self.device,
                                  dtype=self.dtype)
            try:
                with torch.inference_mode():
                    ids = served.model.generate(**enc, max_new_tokens=new, **decoding,
                                                no_repeat_ngram_size=self.config.no_repeat_ngram_size,
                                                pad_token_id=served.tokenizer.pad_token_id)
            finally:
                served.state.clear()
        prompt = enc["input_ids"].shape[1]
        ends = eos_ids(served.model, served.tokenizer)
        out = []
        for row, r in enumerate(requests):
            tokens = ids[row, prompt: prompt + (r.max_new_tokens or self.config.max_new_tokens)].tolist()
            end = next((i for i, t in enumerate(tokens) if t in ends), None)
            ended = end is not None
            if ended:
                tokens = tokens[:end]
            text, stopped = stop_cut(printable(served.tokenizer.decode(tokens, skip_special_tokens=True)), r.stop)
            count = len(served.tokenizer(text, add_special_tokens=False)["input_ids"]) if stopped else len(tokens)
            out.append({"text": text, "prompt_tokens": int(enc["attention_mask"][row].sum()),
                        "completion_tokens": count, "finish_reason": "stop" if ended or stopped else "length"})
        return out

    def infer(self, requests: list[InferenceRequest]) -> list[dict]:
        """The serving entry point: results in request order, each {"label", "probabilities"} or {"text"}.

        Requests are grouped by (base, task, decoding settings), sorted by length and cut into batches of `max_batch`; each
        batch is one forward pass (one `generate` for generation). Timings per request in "latency_ms".
        """
        results: list[dict | None] = [None] * len(requests)
        groups: dict[tuple[str, str], list[int]] = {}
        for i, r in enumerate(requests):
            task = r.task or (adapter_task(r.adapter_dir) if r.adapter_dir else CLASSIFICATION)
            groups.setdefault((str(r.base_path), task, r.decoding if task == GENERATION else None), []).append(i)
        plan: list[tuple[str, list[int]]] = []
        for (_, task, _), idxs in groups.items():
            # Similar lengths batched together: less padding, so less compute (results keep request order).
            idxs.sort(key=lambda i: len(requests[i].text))
            plan += [(task, idxs[s: s + self.config.max_batch]) for s in range(0, len(idxs), self.config.max_batch)]

        # Adapters are looked up per batch, so a batch never waits on one evicted meanwhile (it holds
        # references); the next batch's are read ahead while this one runs.
        pending: Future | None = None
        for n, (task, chunk) in enumerate(plan):
            batch = [requests[i] for i in chunk]
            started = time.perf_counter()
            adapters = pending.result() if pending is not None else self.adapters_for(batch)
            pending = None
            if self._prefetcher is not None and n + 1 < len(plan):
                pending = self._prefetcher.submit(self.adapters_for, [requests[i] for i in plan[n + 1][1]])
            if task == GENERATION:
                outs = self.generate(batch, adapters)
            else:
                outs = [self._classify(a, logits)
                        for a, logits in zip(adapters, self.forward(batch, adapters), strict=True)]
            ms = (time.perf_counter() - started) * 1000
            for i, o in zip(chunk, outs, strict=True):
                results[i] = {**o, "task": task, "batch_size": len(chunk), "latency_ms": round(ms, 2)}
        return results  # type: ignore[return-value]

    def _classify(self, adapter: LoadedAdapter | None, logits: torch.Tensor) -> dict:
        probs = torch.softmax(logits, -1).tolist()
        labels = (adapter.labels if adapter is not None else []) or [str(i) for i in range(len(probs))]
        ranked = sorted(zip(labels, probs, strict=True), key=lambda x: -x[1])
        return {"label": ranked[0][0], "probabilities": {k: round(v, 6) for k, v in ranked}}

    def stats(self) -> dict:
        s = self.cache.stats
        return {"device": self.device.type, "bases": len(self._bases), "adapters_cached": len(self.cache),
                "adapter_bytes": self.cache.bytes, "hits": s.hits, "misses": s.misses,
                "evictions": s.evictions, "load_seconds": round(s.load_seconds, 4)}
