"""Run a trained adapter on text: the playground's engine. Loads with plain PeftModel.from_pretrained."""
from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path

import torch

from factory.training.modeling import load_base, load_tokenizer, read_factory_meta
from factory.training.types import CLASSIFICATION, TrainingError

CACHE_SIZE = 2
_cache: OrderedDict[tuple[str, str], tuple] = OrderedDict()
_lock = threading.Lock()


def load_adapter(base_path: str, adapter_dir: str):
    """(model, tokenizer, meta), cached: the playground answers in milliseconds after the first call."""
    from peft import PeftModel

    key = (str(base_path), str(adapter_dir))
    with _lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    if not Path(adapter_dir).is_dir():
        raise TrainingError("The adapter files of this model are missing.")
    meta = read_factory_meta(adapter_dir)
    task = meta.get("task", CLASSIFICATION)
    tokenizer = load_tokenizer(adapter_dir if (Path(adapter_dir) / "tokenizer_config.json").is_file() else base_path)
    base = load_base(str(base_path), task=task, labels=meta.get("labels", []), pad_token_id=tokenizer.pad_token_id)
    model = PeftModel.from_pretrained(base, str(adapter_dir))
    model.eval()
    entry = (model, tokenizer, meta)
    with _lock:
        _cache[key] = entry
        while len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)
    return entry


def predict(base_path: str, adapter_dir: str, text: str, *, max_new_tokens: int = 40) -> dict:
    """Classification: {"label", "probabilities"}; generation: {"text"} (greedy, deterministic)."""
    model, tokenizer, meta = load_adapter(base_path, adapter_dir)
    max_length = int(meta.get("max_length", 128))
    with torch.no_grad():
        if meta.get("task", CLASSIFICATION) == CLASSIFICATION:
            enc = tokenizer(text, truncation=True, max_length=max_length, return_tensors="pt")
            probs = torch.softmax(model(**enc).logits[0].float(), -1).tolist()
            labels = meta.get("labels") or [str(i) for i in range(len(probs))]
            ranked = sorted(zip(labels, probs, strict=True), key=lambda x: -x[1])
            return {"label": ranked[0][0], "probabilities": {k: round(v, 4) for k, v in ranked}}
        if meta.get("chat"):  # a chat fine-tune: the text is the user's turn, the answer the assistant's
            from factory.training.chat import prompt_ids

            ids = prompt_ids(tokenizer, [{"role": "user", "content": text}])[-max_length:]
            enc = {"input_ids": torch.tensor([ids]), "attention_mask": torch.ones(1, len(ids), dtype=torch.long)}
        else:
            enc = tokenizer(text, return_tensors="pt", truncation=True, max_length=max_length)
        out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, no_repeat_ngram_size=3,
                             pad_token_id=tokenizer.pad_token_id)
        return {"text": tokenizer.decode(out[0][enc["input_ids"].shape[1]:], skip_special_tokens=True)}
