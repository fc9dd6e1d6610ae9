"""A short full pre-training of a small causal LM on local text (no Django).

No weights can be downloaded here, so the demo's generation base is built and pre-trained on this
machine: a random model emits only noise, and LoRA on noise learns little. A thousand steps on Tiny
Shakespeare are enough for it to write English-looking lines, so generation fine-tunes and span
attribution have something real to show.
"""
from __future__ import annotations

import random
import time
from collections.abc import Callable
from pathlib import Path

import torch

from factory.training.types import TrainingCancelled

# One paragraph in this many is also given as a "continue this passage" conversation, so the base knows
# the chat format (and where an answer ends) before it is fine-tuned on instructions.
CHAT_EVERY = 4


def chat_corpus(lines: list[str], *, path: str | Path) -> list[str]:
    """Tiny Shakespeare's paragraphs, every CHAT_EVERY-th one followed by a continuation conversation
    rendered with the tokenizer's chat template in `path`."""
    from transformers import AutoTokenizer

    from datanets.chat import continuation_pairs  # plain Python: the demo Datanet's pairs, built the same way

    tok = AutoTokenizer.from_pretrained(str(path))
    paragraphs = [p for p in "\n".join(lines).split("\n\n") if p.strip()]
    out = []
    for i, para in enumerate(paragraphs):
        out.append(para + "\n")
        if i % CHAT_EVERY == 0:
            pair = continuation_pairs([para])
            if pair:
                prompt, answer = pair[0]
                out.append(tok.apply_chat_template([{"role": "user", "content": prompt},
                                                    {"role": "assistant", "content": answer}], tokenize=False))
    return out


def pretrain_causal_lm(path: str | Path, *, texts: list[str], steps: int = 300, seq_len: int = 64,
                       batch_size: int = 16, lr: float = 3e-3, seed: int = 0,
                       on_progress: Callable[[int, int, float], None] | None = None,
                       should_stop: Callable[[], bool] | None = None, threads: int = 0) -> dict:
    """Train every weight of the model in `path` on random windows of `texts`; saves it back in place.
    `on_progress(step, steps, loss)` after each step; `should_stop()` before each, raising
    TrainingCancelled (nothing saved) when it says so. Returns the first and last loss and the seconds."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if threads:
        torch.set_num_threads(threads)
    path = Path(path)
    tok = AutoTokenizer.from_pretrained(str(path))
    tok.model_max_length = 1 << 40  # the corpus is tokenised whole, then cut into windows: no length warning
    model = AutoModelForCausalLM.from_pretrained(str(path))
    ids = torch.tensor(tok("\n".join(texts), add_special_tokens=False)["input_ids"], dtype=torch.long)
    if ids.numel() <= seq_len + 1:
        raise ValueError("not enough text to pre-train on")
    gen = torch.Generator().manual_seed(seed)
    random.seed(seed)
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    model.train()
    started, first, loss = time.monotonic(), None, None
    for step in range(steps):
        if should_stop and should_stop():
            raise TrainingCancelled(step)
        starts = torch.randint(0, ids.numel() - seq_len - 1, (batch_size,), generator=gen)
        batch = torch.stack([ids[s:s + seq_len] for s in starts.tolist()])
        loss = model(input_ids=batch, labels=batch).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        first = first if first is not None else loss.item()
        if on_progress:
            on_progress(step + 1, steps, loss.item())
    model.eval()
    model.save_pretrained(str(path))
    return {"first_loss": first, "last_loss": loss.item(), "seconds": time.monotonic() - started}
