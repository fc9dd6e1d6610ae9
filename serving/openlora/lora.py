"""Batched LoRA: one forward pass over rows that each use a different adapter of the same base.

`attach(model, names)` swaps the named Linear / GPT-2 Conv1D layers for `BatchedLoRALayer`s and the
named head modules for `HeadSwitch`es; all read the same `BatchState`. Before a forward the engine
calls `state.set_rows(adapters)`: for every wrapped layer it gathers the row's A (r, in) and B*scale
(out, r), zero-padded to the batch's largest rank (a zero row/column adds nothing), so the update is
two batched matmuls, x @ A^T @ B^T, for the whole batch. Rows whose adapter does not touch a layer
get zeros there. With one adapter in the batch the gathered tensors broadcast instead of copying.
"""
from __future__ import annotations

import torch
from torch import nn


class BatchState:
    """What the current forward needs: per-layer gathered LoRA tensors and per-row heads."""

    def __init__(self):
        self.lora: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.heads: dict[str, list] = {}
        self.rows = 0

    def clear(self) -> None:
        self.lora, self.heads, self.rows = {}, {}, 0

    def set_rows(self, adapters: list, shapes: dict[str, tuple[int, int]], *, device, dtype) -> None:
        """Gather for `adapters` (one per row, None = the bare base model)."""
        self.clear()
        self.rows = len(adapters)
        uniq: list = []
        seen: dict[int, int] = {}
        index = []
        for a in adapters:
            if id(a) not in seen:
                seen[id(a)] = len(uniq)
                uniq.append(a)
            index.append(seen[id(a)])
        present = [a for a in uniq if a is not None]
        names = set().union(*(a.layers.keys() for a in present)) if present else set()
        rank = max((a.rank for a in present), default=0)
        row_index = torch.tensor(index, device=device)
        for name in names:
            if name not in shapes:
                continue
            fin, fout = shapes[name]
            if len(uniq) == 1:
                a_mat, b_mat = uniq[0].layers[name]
                self.lora[name] = (a_mat.t().unsqueeze(0), b_mat.t().unsqueeze(0))
                continue
            pairs = [adapter.layers.get(name) if adapter is not None else None for adapter in uniq]
            if all(p is not None and p[0].shape[0] == rank for p in pairs):
                # The common case (every adapter has this layer at one rank): one stack per matrix.
                a_all = torch.stack([p[0] for p in pairs]).transpose(1, 2)
                b_all = torch.stack([p[1] for p in pairs]).transpose(1, 2)
                self.lora[name] = (a_all[row_index], b_all[row_index])
                continue
            a_all = torch.zeros(len(uniq), fin, rank, device=device, dtype=dtype)
            b_all = torch.zeros(len(uniq), rank, fout, device=device, dtype=dtype)
            for u, adapter in enumerate(uniq):
                pair = adapter.layers.get(name) if adapter is not None else None
                if pair is not None:
                    r = pair[0].shape[0]
                    a_all[u, :, :r] = pair[0].t()
                    b_all[u, :r, :] = pair[1].t()
            self.lora[name] = (a_all[row_index], b_all[row_index])
        heads = set().union(*(a.heads.keys() for a in present)) if present else set()
        for name in heads:
            self.heads[name] = [a.heads.get(name) if a is not None else None for a in adapters]


class BatchedLoRALayer(nn.Module):
    """base(x) + (x @ A_row^T) @ (scale * B_row)^T for every row of the batch."""

    def __init__(self, base_layer: nn.Module, name: str, state: BatchState):
        super().__init__()
        self.base_layer = base_layer
        self.name = name
        self.state = state

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base_layer(x)
        pair = self.state.lora.get(self.name)
        if pair is None:
            return y
        a_t, b_t = pair  # (rows or 1, in, r), (rows or 1, r, out)
        flat = x.reshape(x.shape[0], -1, x.shape[-1])
        delta = torch.matmul(torch.matmul(flat, a_t), b_t)
        return y + delta.reshape(y.shape).to(y.dtype)


class HeadSwitch(nn.Module):
    """A module PEFT trains whole (a classifier head): each row uses its adapter's own copy.

    Adapters may have different label counts: the output is padded to the widest with -inf, and the
    engine cuts each row back to its adapter's labels.
    """

    def __init__(self, base_module: nn.Linear, name: str, state: BatchState):
        super().__init__()
        self.base_module = base_module
        self.name = name
        self.state = state

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        per_row = self.state.heads.get(self.name)
        if per_row is None:
            return self.base_module(x)
        groups: dict[int, list[int]] = {}
        weights = {}
        for row, head in enumerate(per_row):
            groups.setdefault(id(head), []).append(row)
            weights[id(head)] = head
        if len(groups) == 1:
            head = per_row[0]
            return self.base_module(x) if head is None else nn.functional.linear(x, head[0], head[1])
        outs = {}
        for key, rows in groups.items():
            head = weights[key]
            idx = torch.tensor(rows, device=x.device)
            xs = x.index_select(0, idx)
            outs[key] = (idx, self.base_module(xs) if head is None else nn.functional.linear(xs, head[0], head[1]))
        width = max(o.shape[-1] for _, o in outs.values())
        result = x.new_full((*x.shape[:-1], width), float("-inf"))
        for idx, o in outs.values():
            result[idx, ..., : o.shape[-1]] = o
        return result


def _linear_shape(module: nn.Module) -> tuple[int, int] | None:
    from transformers.pytorch_utils import Conv1D

    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    if isinstance(module, Conv1D):
        return int(module.weight.shape[0]), int(module.weight.shape[1])
    if isinstance(module, torch.ao.nn.quantized.dynamic.Linear):  # an int8 base (ServingConfig dtype "int8")
        return module.in_features, module.out_features
    return None


def attach(model: nn.Module, state: BatchState, *, lora: set[str], heads: set[str],
           shapes: dict[str, tuple[int, int]]) -> None:
    """Wrap the modules at these dotted paths (idempotent; unknown paths raise KeyError)."""
    for path in sorted(lora | heads):
        parent_path, _, leaf = path.rpartition(".")
        parent = model.get_submodule(parent_path) if parent_path else model
        current = getattr(parent, leaf)
        if isinstance(current, BatchedLoRALayer | HeadSwitch):
            continue
        if path in heads:
            if not isinstance(current, nn.Linear):
                raise KeyError(f"{path} is not a Linear layer; only Linear heads can be switched per row")
            setattr(parent, leaf, HeadSwitch(current, path, state))
            continue
        shape = _linear_shape(current)
        if shape is None:
            raise KeyError(f"{path} is not a Linear layer")
        shapes[path] = shape
        setattr(parent, leaf, BatchedLoRALayer(current, path, state))
