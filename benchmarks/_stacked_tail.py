"""Train many copies of the quality benchmark's cached tail at once (one per LDS subset or removal set).

The retrainings of `benchmarks/attribution_quality.py` only train the LoRA matrices of the last layer and
the classification head, on cached lower-layer outputs. Run one at a time they cost ~3 s each, mostly
Python and tiny-op overhead; here the trainable tensors of M models are stacked on a leading axis and
every step is a handful of batched einsums over all M models, each reading its own batch of examples.
The loss is the sum of the M models' mean losses, so one backward gives each model exactly its own
gradient, and AdamW (elementwise) on the stacked tensors is M independent AdamWs: the same training as
`Bench.train`, model for model (`check_against_single` measures the difference).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

# suffixes of the trainable tensors of the PEFT tail, and our short names for them
_SUFFIX = {
    "query.lora_A.default.weight": "qA",
    "query.lora_B.default.weight": "qB",
    "value.lora_A.default.weight": "vA",
    "value.lora_B.default.weight": "vB",
    "classifier.modules_to_save.default.weight": "cW",
    "classifier.modules_to_save.default.bias": "cb",
}


class StackedTail:
    """The frozen parts of `bench`'s tail, its cache as padded tensors, and a batched trainer."""

    def __init__(self, bench, *, chunk: int = 50):
        self.bench = bench
        self.chunk = chunk
        self.names: dict[str, str] = {}
        for name in bench.trainable:
            short = next((s for suffix, s in _SUFFIX.items() if name.endswith(suffix)), None)
            if short is None:
                raise RuntimeError(f"unexpected trainable tensor {name}")
            self.names[short] = name
        assert len(self.names) == len(_SUFFIX), sorted(self.names)
        layer = bench.bert.bert.encoder.layer[bench.last]
        sa = layer.attention.self
        self.layer, self.pooler = layer, bench.bert.bert.pooler
        self.nh, self.hd = sa.num_attention_heads, sa.attention_head_size
        self.wq, self.bq = sa.query.base_layer.weight, sa.query.base_layer.bias
        adapter = sa.value.active_adapters[0]
        self.scaling = float(sa.value.scaling[adapter])
        assert float(sa.query.scaling[adapter]) == self.scaling
        cache = bench.cache
        t = max(len(c[0]) for c in cache)
        d = cache[0][0].shape[1]
        # keys and frozen values per head, (N, heads, T, head_dim): the attention reads them without copies
        self.h = torch.zeros(len(cache), t, d)
        self.k, self.vb = (torch.zeros(len(cache), self.nh, t, self.hd) for _ in range(2))
        self.lengths = torch.tensor([len(c[0]) for c in cache])
        for i, (h, k, vb) in enumerate(cache):
            n = len(h)
            self.h[i, :n] = h
            self.k[i, :, :n] = k.view(n, self.nh, self.hd).transpose(0, 1)
            self.vb[i, :, :n] = vb.view(n, self.nh, self.hd).transpose(0, 1)
        self.hc = self.h[:, 0].clone()
        self.bias = (torch.arange(t)[None, :] >= self.lengths[:, None]).float() * torch.finfo(torch.float32).min

    def init(self, m: int, states: list[dict] | None = None) -> dict[str, torch.Tensor]:
        """Stacked copies of the initial state (or of `states`, one per model) as leaf tensors."""
        src = states or [self.bench.init_state] * m
        return {s: torch.stack([st[name] for st in src]).clone().requires_grad_(True) for s, name in self.names.items()}

    def forward(self, p: dict[str, torch.Tensor], idx: torch.Tensor) -> torch.Tensor:
        """Logits (M, B, classes) of models p on examples idx (M, B): `tail_forward` for each model.

        The value LoRA is applied after the attention average (it is linear): sum_t a_t (vb_t + s B A h_t)
        = sum_t a_t vb_t + s B A (sum_t a_t h_t), so no per-token value tensor is ever built.
        """
        t = int(self.lengths[idx].max())
        m, b = idx.shape
        s = self.scaling
        flat = idx.reshape(-1)
        # index_select on whole rows (contiguous) is several times faster than fancy indexing of a slice
        h = self.h.index_select(0, flat)[:, :t].view(m, b, t, -1)
        k = self.k.index_select(0, flat)[:, :, :t].reshape(m, b, self.nh, t, self.hd)
        vb = self.vb.index_select(0, flat)[:, :, :t].reshape(m, b, self.nh, t, self.hd)
        bias = self.bias.index_select(0, flat)[:, :t].view(m, b, t)
        hc = self.hc.index_select(0, flat).view(m, b, -1)
        q = nn.functional.linear(hc, self.wq, self.bq)
        q = q + torch.einsum("mbr,mdr->mbd", torch.einsum("mbd,mrd->mbr", hc, p["qA"]), p["qB"]) * s
        q = q.view(m, b, self.nh, self.hd, 1)
        scores = (k @ q).squeeze(-1) / math.sqrt(self.hd) + bias[:, :, None, :]  # (M, B, heads, T)
        a = scores.softmax(-1)
        ctx = (a.unsqueeze(-2) @ vb).squeeze(-2)  # (M, B, heads, head_dim)
        ah = a @ h  # (M, B, heads, d)
        u = torch.einsum("mbnd,mrd->mbnr", ah, p["vA"])
        ctx = ctx + torch.einsum("mbnr,mnhr->mbnh", u, p["vB"].view(m, self.nh, self.hd, -1)) * s
        ctx = ctx.reshape(m, b, -1)
        att = self.layer.attention.output(ctx, hc)
        out = self.layer.output(self.layer.intermediate(att), att)
        pooled = self.pooler.activation(self.pooler.dense(out))
        return torch.einsum("mbd,mcd->mbc", pooled, p["cW"]) + p["cb"][:, None, :]

    def train(self, steps: list[np.ndarray], labels: torch.Tensor, *, states: list[dict] | None = None,
              m: int | None = None) -> dict[str, torch.Tensor]:
        """Train M models; steps[s] is (M, b_s): each model's batch of cached-example indices at step s.

        labels: (n_cached,) label of every cached example. Returns the stacked trained tensors (detached).
        """
        m = m or steps[0].shape[0]
        p = self.init(m, states)
        opt = torch.optim.AdamW(list(p.values()), lr=self.bench.cfg["lr"], weight_decay=0.0)
        for step in steps:
            idx = torch.as_tensor(step, dtype=torch.long)
            logits = self.forward(p, idx)
            y = labels[idx]
            loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="none")
            loss = loss.view(idx.shape).mean(1).sum()  # each model's mean loss: its own gradient
            opt.zero_grad()
            loss.backward()
            opt.step()
        return {k: v.detach() for k, v in p.items()}

    @torch.no_grad()
    def logits(self, p: dict[str, torch.Tensor], idx: list[int]) -> torch.Tensor:
        """(M, len(idx), classes): every model's logits on the same cached examples."""
        m = next(iter(p.values())).shape[0]
        out = []
        for s in range(0, len(idx), 64):
            part = torch.as_tensor(idx[s : s + 64], dtype=torch.long)
            out.append(self.forward(p, part[None].expand(m, -1)))
        return torch.cat(out, dim=1)

    def state(self, p: dict[str, torch.Tensor], j: int) -> dict[str, torch.Tensor]:
        """Model j of a stack as a `Bench` state dict."""
        return {name: p[s][j].clone() for s, name in self.names.items()}

    def run(self, orders: list[list[np.ndarray]], labels: torch.Tensor, eval_idx: list[int],
            states: list[dict] | None = None) -> torch.Tensor:
        """Train len(orders) models in chunks and return their logits (M, len(eval_idx), classes).

        orders[j]: model j's batches, in order; every model must have the same batch sizes.
        """
        out = []
        for c in range(0, len(orders), self.chunk):
            part = orders[c : c + self.chunk]
            steps = [np.stack([o[s] for o in part]) for s in range(len(part[0]))]
            p = self.train(steps, labels, states=states[c : c + self.chunk] if states else None)
            out.append(self.logits(p, eval_idx))
        return torch.cat(out)


def batches(subset, universe: int, epochs: int, batch: int, seed: int) -> list[np.ndarray]:
    """The batches `Bench.train` visits for `subset` with `seed` (same rng, same filtering)."""
    rng = np.random.default_rng(seed)
    keep = np.zeros(universe, dtype=bool)
    keep[np.asarray(subset, dtype=np.int64)] = True
    out = []
    for _ in range(epochs):
        perm = rng.permutation(universe)
        order = perm[keep[perm]]
        out += [order[s : s + batch] for s in range(0, len(order), batch)]
    return out


def check_against_single(bench, stacked: StackedTail, subset, labels: list[int], seed: int, eval_idx) -> float:
    """Max |logit difference| between `Bench.train` and the stacked trainer on one subset (stacked twice)."""
    bench.train(list(subset), [labels[i] for i in subset], seed=seed)
    single = bench.logits(list(eval_idx))
    bench.reset()
    y = torch.zeros(len(bench.cache), dtype=torch.long)
    y[: len(labels)] = torch.tensor(labels)
    order = batches(subset, len(bench.cache), bench.cfg["epochs"], bench.cfg["batch"], seed)
    both = stacked.run([order, order], y, list(eval_idx))
    return float(max((both[0] - single).abs().max(), (both[1] - single).abs().max()))
