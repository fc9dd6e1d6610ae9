"""Reading a PEFT LoRA adapter straight from its safetensors file (no base model, no PeftModel).

A `LoadedAdapter` holds, per wrapped layer, A (r, in) and B*scale (out, r) ready for the batched
forward, plus full replacement weights of the modules PEFT trained whole (`modules_to_save`, e.g. a
classifier head). Raises AdapterError for what the batched forward cannot serve (DoRA, bias on LoRA,
prompt-tuning adapters...), so a bad adapter fails at load time with a reason.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

ADAPTER_FILE = "adapter_model.safetensors"
CONFIG_FILE = "adapter_config.json"
META_FILE = "factory.json"
PREFIX = "base_model.model."


class AdapterError(ValueError):
    """The adapter cannot be served: missing files or a PEFT feature the batched forward lacks."""


@dataclass(eq=False)  # identity hashing: the batch groups rows by the adapter object
class LoadedAdapter:
    key: str
    task: str
    labels: list[str]
    max_length: int
    # module path -> (A (r, in), B * scale (out, r))
    layers: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    # module path -> (weight, bias or None) replacing that module's own for this adapter's rows
    heads: dict[str, tuple[torch.Tensor, torch.Tensor | None]] = field(default_factory=dict)
    rank: int = 0
    nbytes: int = 0
    load_seconds: float = 0.0


def _scale(config: dict, rank: int) -> float:
    alpha = float(config.get("lora_alpha") or rank)
    return alpha / math.sqrt(rank) if config.get("use_rslora") else alpha / rank


def adapter_task(adapter_dir: str | Path) -> str:
    """The adapter's task from its small json files, without reading the weights."""
    adapter_dir = Path(adapter_dir)
    meta_path = adapter_dir / META_FILE
    if meta_path.is_file():
        task = json.loads(meta_path.read_text()).get("task")
        if task:
            return task
    config_path = adapter_dir / CONFIG_FILE
    if not config_path.is_file():
        raise AdapterError(f"No LoRA adapter at {adapter_dir} (need {ADAPTER_FILE} and {CONFIG_FILE}).")
    return "generation" if json.loads(config_path.read_text()).get("task_type") == "CAUSAL_LM" else "classification"


def load_adapter(adapter_dir: str | Path, *, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32) -> LoadedAdapter:
    """Read adapter_config.json, factory.json and the safetensors tensors onto `device`."""
    import time

    from safetensors.torch import load

    started = time.perf_counter()
    adapter_dir = Path(adapter_dir)
    weights_path = adapter_dir / ADAPTER_FILE
    if not weights_path.is_file() or not (adapter_dir / CONFIG_FILE).is_file():
        raise AdapterError(f"No LoRA adapter at {adapter_dir} (need {ADAPTER_FILE} and {CONFIG_FILE}).")
    config = json.loads((adapter_dir / CONFIG_FILE).read_text())
    if config.get("peft_type", "LORA") != "LORA":
        raise AdapterError(f"Only LoRA adapters can be served, not {config.get('peft_type')}.")
    unsupported = [k for k in ("use_dora", "lora_bias") if config.get(k)]
    if config.get("bias", "none") != "none":
        unsupported.append("bias")
    if config.get("alpha_pattern") or config.get("rank_pattern"):
        unsupported.append("alpha_pattern/rank_pattern")
    if unsupported:
        raise AdapterError(f"The batched server does not support LoRA options {unsupported}.")
    meta_path = adapter_dir / META_FILE
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    task = meta.get("task") or ("generation" if config.get("task_type") == "CAUSAL_LM" else "classification")

    # Read and convert on the CPU, then move the whole adapter to the device in one copy (below): on a
    # GPU, one small copy and a few kernels per tensor cost more than the read itself.
    # One read of the whole (small) file, then parsing from memory: half the time of load_file's
    # per-tensor reads through a memory map, and every served request that misses the cache pays it.
    try:
        tensors = load(weights_path.read_bytes())
    except Exception as exc:  # safetensors raises its own SafetensorError for a malformed file
        raise AdapterError(f"{weights_path} is not a readable safetensors file: {exc}") from exc
    lora_a: dict[str, torch.Tensor] = {}
    lora_b: dict[str, torch.Tensor] = {}
    head_parts: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        name = key[len(PREFIX):] if key.startswith(PREFIX) else key
        if name.endswith(".lora_A.weight"):
            lora_a[name[: -len(".lora_A.weight")]] = value
        elif name.endswith(".lora_B.weight"):
            lora_b[name[: -len(".lora_B.weight")]] = value
        elif name.endswith((".weight", ".bias")):
            module, _, part = name.rpartition(".")
            head_parts.setdefault(module, {})[part] = value
        else:
            raise AdapterError(f"Unexpected tensor {key!r} in {weights_path}.")
    if set(lora_a) != set(lora_b):
        raise AdapterError(f"{weights_path} has LoRA A and B matrices for different layers.")
    out = LoadedAdapter(key=str(adapter_dir), task=task, labels=list(meta.get("labels") or []),
                        max_length=int(meta.get("max_length") or 128))
    for name, a in lora_a.items():
        b = lora_b[name]
        rank = int(a.shape[0])
        scale = _scale(config, rank)
        out.layers[name] = (a.to(dtype).contiguous(), (b.to(dtype) * scale).contiguous())
        out.rank = max(out.rank, rank)
    for module, parts in head_parts.items():
        if "weight" not in parts:
            raise AdapterError(f"{weights_path}: module {module!r} has a bias but no weight.")
        bias = parts.get("bias")
        out.heads[module] = (parts["weight"].to(dtype).contiguous(), None if bias is None else bias.to(dtype))
    if torch.device(device).type != "cpu":
        _to_device_in_one_copy(out, torch.device(device))
    out.nbytes = sum(a.nbytes + b.nbytes for a, b in out.layers.values()) + sum(
        w.nbytes + (0 if b is None else b.nbytes) for w, b in out.heads.values())
    out.load_seconds = time.perf_counter() - started
    return out


def _to_device_in_one_copy(adapter: LoadedAdapter, device: torch.device) -> None:
    """Pack every tensor of `adapter` (one dtype) into one buffer, copy it once, and re-point the
    adapter's tensors at views of the device buffer."""
    parts = [t for a, b in adapter.layers.values() for t in (a, b)]
    parts += [t for w, b in adapter.heads.values() for t in (w, b) if t is not None]
    if not parts:
        return
    flat = torch.cat([t.reshape(-1) for t in parts]).to(device)
    views = iter(v.view(t.shape) for v, t in zip(torch.split(flat, [t.numel() for t in parts]), parts, strict=True))
    adapter.layers = {name: (next(views), next(views)) for name in adapter.layers}
    adapter.heads = {name: (next(views), None if b is None else next(views)) for name, (_, b) in adapter.heads.items()}
