"""The served base with one adapter, shaped as PEFT shapes it, for the gradient engine to explain an answer.

    with peft_view(engine, base_path, adapter_dir) as (module, tokenizer):
        ...  # module(**enc).logits; lora_pairs(module) finds every LoRA pair under PEFT's names

Why: explaining an answer needs the model's LoRA gradients, and loading a second copy of the base (as
`PeftModel.from_pretrained`) costs memory and can disagree with what was served. The served base already
holds the adapter's A and B*scale; for the length of the block, each layer the adapter touches becomes a
PEFT-style LoRA layer (`lora_A` / `lora_B` Linear modules in a ModuleDict, `scaling`) and each head the
adapter's own Linear, under the module names PEFT gives them (`base_model.model.<path>`), so the
gradient engine's hooks, shape checks and index layout apply unchanged. The block holds the base's lock
(the batcher waits), and everything is put back on exit.

Only exact where the engine serves in float32: an index's rows are float32 gradients, and a query
gradient taken in bfloat16 or through int8 kernels (which have no backward) would not be comparable.
`ServingEngine.explains_exactly` says whether it applies.
"""
from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from serving.openlora.adapters import CONFIG_FILE, AdapterError, _scale
from serving.openlora.lora import BatchedLoRALayer, HeadSwitch

CLASSIFICATION = "classification"
ADAPTER_NAME = "default"  # PEFT's name for a single adapter, part of the index's recorded layout


class _LoraLayer(nn.Module):
    """PEFT's LoRA Linear, for one adapter: base(x) + lora_B(lora_A(x)) * scaling."""

    def __init__(self, base_layer: nn.Module, a: torch.Tensor, b_scaled: torch.Tensor, scale: float):
        super().__init__()
        self.base_layer = base_layer
        rank, fin = a.shape
        lora_a = nn.Linear(fin, rank, bias=False, device=a.device, dtype=a.dtype)
        lora_b = nn.Linear(rank, b_scaled.shape[0], bias=False, device=a.device, dtype=a.dtype)
        with torch.no_grad():
            lora_a.weight.copy_(a)
            # PEFT keeps B unscaled and multiplies its output: dL/dB then carries the scale, as in the index.
            lora_b.weight.copy_(b_scaled / scale)
        lora_a.weight.requires_grad_(False)
        lora_b.weight.requires_grad_(False)
        self.lora_A = nn.ModuleDict({ADAPTER_NAME: lora_a})
        self.lora_B = nn.ModuleDict({ADAPTER_NAME: lora_b})
        self.scaling = scale
        self.active_adapters = [ADAPTER_NAME]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base_layer(x)
        return y + (self.lora_B[ADAPTER_NAME](self.lora_A[ADAPTER_NAME](x)) * self.scaling).to(y.dtype)


class _Head(nn.Module):
    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None):
        super().__init__()
        self.weight, self.bias = weight, bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(x, self.weight, self.bias)


class _PeftNames(nn.Module):
    """Puts the served model under `base_model.model`, where PeftModel keeps it."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.base_model = nn.Module()
        self.base_model.model = model

    def forward(self, **kwargs):
        return self.base_model.model(**kwargs)


def _adapter_scales(adapter_dir: str, layers: dict) -> dict[str, float]:
    config = json.loads((Path(adapter_dir) / CONFIG_FILE).read_text())
    return {name: _scale(config, int(a.shape[0])) for name, (a, _) in layers.items()}


@contextmanager
def peft_view(engine, base_path: str, adapter_dir: str):
    """Yield (module, tokenizer): the served classifier base with this adapter, PEFT-shaped (see above).

    Raises AdapterError for an adapter that does not fit the base, ValueError when the engine does not
    serve in float32 (the gradients would not match the index's)."""
    if not engine.explains_exactly:
        raise ValueError("the serving engine's precision is not float32; explain with a float32 copy")
    adapter = engine.adapter(adapter_dir)
    if adapter.task != CLASSIFICATION:
        raise AdapterError("only classifiers are explained by gradients")
    served = engine.base(base_path, CLASSIFICATION)
    scales = _adapter_scales(adapter_dir, adapter.layers)
    with served.lock:
        served.fit(adapter)
        swapped: list[tuple[nn.Module, str, nn.Module]] = []
        try:
            for path in sorted(adapter.layers.keys() | adapter.heads.keys()):
                parent_path, _, leaf = path.rpartition(".")
                parent = served.model.get_submodule(parent_path) if parent_path else served.model
                current = getattr(parent, leaf)
                if isinstance(current, BatchedLoRALayer):
                    a, b_scaled = adapter.layers[path]
                    replacement: nn.Module = _LoraLayer(current.base_layer, a, b_scaled, scales[path])
                elif isinstance(current, HeadSwitch):
                    replacement = _Head(*adapter.heads[path])
                else:  # fit() wrapped every path above; anything else is a bug, not a user error
                    raise RuntimeError(f"{path} is not a served LoRA layer or head")
                setattr(parent, leaf, replacement)
                swapped.append((parent, leaf, current))
            served.state.clear()
            yield _PeftNames(served.model), served.tokenizer
        finally:
            for parent, leaf, original in reversed(swapped):
                setattr(parent, leaf, original)
