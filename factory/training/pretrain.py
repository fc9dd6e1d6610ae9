"""A short full pre-training of a tiny causal LM on local text (no Django).

No weights can be downloaded here, so the demo's generation base is built and pre-trained on this
machine: a random GPT-2 emits only noise, and LoRA on noise learns little. A few hundred steps on Tiny
Shakespeare are enough for it to write English-looking lines, so generation fine-tunes and span
attribution have something real to show.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch


def pretrain_causal_lm(path: str | Path, *, texts: list[str], steps: int = 300, seq_len: int = 64,
                       batch_size: int = 16, lr: float = 3e-3, seed: int = 0, log=None) -> dict:
    """Train every weight of the model in `path` on random windows of `texts`; saves it back in place.
    Returns the first and last training loss and the seconds it took."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    tok = AutoTokenizer.from_pretrained(str(path))
    model = AutoModelForCausalLM.from_pretrained(str(path))
    ids = torch.tensor(tok("\n".join(texts))["input_ids"], dtype=torch.long)
    if ids.numel() <= seq_len + 1:
        raise ValueError("not enough text to pre-train on")
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    model.train()
    started, first, loss = time.monotonic(), None, None
    for step in range(steps):
        starts = torch.randint(0, ids.numel() - seq_len - 1, (batch_size,), generator=gen)
        batch = torch.stack([ids[s:s + seq_len] for s in starts.tolist()])
        loss = model(input_ids=batch, labels=batch).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        first = first if first is not None else loss.item()
        if log and (step + 1) % 100 == 0:
            log(f"pre-training step {step + 1}/{steps}: loss {loss.item():.3f}")
    model.eval()
    model.save_pretrained(str(path))
    return {"first_loss": first, "last_loss": loss.item(), "seconds": time.monotonic() - started}
