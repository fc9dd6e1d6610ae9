"""Loading base models (the real `from_pretrained` of a local directory) and wrapping them with LoRA."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from factory.training.types import CLASSIFICATION, GENERATION, OUTPUT_LAYER, TrainingError

# Output heads are trained whole (modules_to_save), never LoRA-wrapped; the one exception is a language
# model's output layer, which a generation fine-tune may wrap when asked by name (types.OUTPUT_LAYER).
HEAD_NAMES = {"classifier", "score", "lm_head", "qa_outputs", "cls", "decoder"}
# Preferred default targets per architecture: the attention projections.
DEFAULT_TARGETS = {
    "bert": ["query", "value"],
    "roberta": ["query", "value"],
    "distilbert": ["q_lin", "v_lin"],
    "gpt2": ["c_attn"],
    "llama": ["q_proj", "v_proj"],
    "mistral": ["q_proj", "v_proj"],
    "qwen2": ["q_proj", "v_proj"],
    "gemma": ["q_proj", "v_proj"],
    "phi": ["q_proj", "v_proj"],
}
CAUSAL_TYPES_HINT = ("ForCausalLM", "LMHeadModel")


def is_causal_lm(config) -> bool:
    """Whether this is a decoder-only LM of any family transformers knows (not a fixed list). Encoders such
    as BERT also have a causal-LM class in transformers, but only as decoders (`is_decoder`)."""
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    archs = config.architectures or []
    decoder_only = (config.model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
                    and config.model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES)
    return bool(getattr(config, "is_decoder", False) or any(a.endswith(CAUSAL_TYPES_HINT) for a in archs)
                or decoder_only)


def _linear_like():
    from transformers.pytorch_utils import Conv1D

    return (nn.Linear, Conv1D)


def _features(module) -> tuple[int, int]:
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    w = module.weight  # transformers' Conv1D stores (in, out)
    return int(w.shape[0]), int(w.shape[1])


def inspect_model(path: str | Path) -> dict:
    """What the catalog needs, read from the config on the meta device (no weights loaded, ~instant).

    Returns architecture, tasks it supports, parameter count, max length, and every Linear(-like) layer
    name (the LoRA target choices) with its shapes. Raises TrainingError when the folder is not a model.
    """
    from transformers import AutoConfig, AutoModel

    path = Path(path)
    if not (path / "config.json").is_file():
        raise TrainingError(f"{path} is not a Hugging Face model folder (no config.json).")
    config = AutoConfig.from_pretrained(str(path))
    with torch.device("meta"):
        model = AutoModel.from_config(config)
    params = sum(p.numel() for p in model.parameters())
    modules: dict[str, dict] = {}
    for name, module in model.named_modules():
        if isinstance(module, _linear_like()):
            leaf = name.rsplit(".", 1)[-1]
            if leaf in HEAD_NAMES:
                continue
            fin, fout = _features(module)
            entry = modules.setdefault(leaf, {"count": 0, "shapes": []})
            entry["count"] += 1
            entry["shapes"].append([fin, fout])
    causal = is_causal_lm(config)
    tasks = [GENERATION, CLASSIFICATION] if causal else [CLASSIFICATION]
    preferred = DEFAULT_TARGETS.get(config.model_type, ["q_proj", "v_proj"])
    defaults = [m for m in preferred if m in modules] or sorted(modules)[:2]
    max_len = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None) or 512
    hidden = getattr(config, "hidden_size", None) or getattr(config, "n_embd", None) or 0
    vocab = int(getattr(config, "vocab_size", 0) or 0)
    if causal and hidden and vocab:  # AutoModel builds the body only; the LM head is hidden -> vocab
        modules[OUTPUT_LAYER] = {"count": 1, "shapes": [[int(hidden), vocab]]}
    layers = getattr(config, "num_hidden_layers", None) or getattr(config, "n_layer", None) or 0
    return {
        "chat_template": read_chat_template(path),
        "architecture": config.model_type,
        "tasks": tasks,
        "parameter_count": int(params),
        "max_length": int(max_len),
        "hidden_size": int(hidden),
        "num_layers": int(layers),
        "vocab_size": vocab,
        # An untied LM head is a second vocab x hidden matrix that `parameter_count` (the body) leaves out.
        "tied_embeddings": bool(getattr(config, "tie_word_embeddings", True)),
        "target_modules": sorted(modules),
        "default_target_modules": defaults,
        "module_shapes": modules,
    }


def read_chat_template(path: str | Path) -> str:
    """The tokenizer's own chat template, read from its files (no tokenizer loaded): `chat_template.jinja`
    (transformers >= 4.50 writes it there) or the `chat_template` key of tokenizer_config.json."""
    path = Path(path)
    jinja = path / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    cfg = path / "tokenizer_config.json"
    if cfg.is_file():
        template = json.loads(cfg.read_text(encoding="utf-8")).get("chat_template") or ""
        if isinstance(template, list):  # named templates: the default one
            template = next((t["template"] for t in template if t.get("name") == "default"), "")
        return template
    return ""


def pick_device(preferred: str = "") -> tuple[torch.device, torch.dtype]:
    """CUDA when present, else CPU; bf16 autocast on GPUs that support it, fp32 otherwise."""
    if preferred:
        device = torch.device(preferred)
    else:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.float32
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        dtype = torch.bfloat16
    return device, dtype


def load_tokenizer(path: str, *, chat_template: str = ""):
    """The tokenizer, with a pad token, and the catalog's chat template when the base sets one."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    if chat_template:
        tok.chat_template = chat_template
    if tok.pad_token is None:
        if tok.eos_token is None:
            raise TrainingError("The tokenizer has neither a pad nor an end-of-sequence token.")
        tok.pad_token = tok.eos_token
    return tok


NF4 = "nf4"
ERR_NO_BITSANDBYTES = ("QLoRA needs the bitsandbytes package (requirements.txt pins it); it is not installed "
                       "on this worker: {exc}")


def nf4_config():
    """QLoRA's quantization (Dettmers et al. 2023): NF4 weights, double-quantized constants, bf16 compute.
    Output heads stay in full precision: they are trained whole (modules_to_save)."""
    import torch
    from transformers import BitsAndBytesConfig

    try:
        import bitsandbytes  # noqa: F401 - imported here only: CPU-only machines need not load it
    except ImportError as exc:
        raise TrainingError(ERR_NO_BITSANDBYTES.format(exc=exc)) from exc
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=torch.bfloat16, llm_int8_skip_modules=sorted(HEAD_NAMES))


def load_base(path: str, *, task: str, labels: list[str], pad_token_id: int | None, quantization: str = "none",
              device: str = "cpu"):
    """The base model for a task, through the real from_pretrained; with quantization "nf4" its Linear layers
    are 4-bit (bitsandbytes) and placed on `device` at load (a quantized model is not moved afterwards)."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    if not Path(path).is_dir():
        raise TrainingError(f"The base model folder {path} does not exist (was it moved or deleted?).")
    extra: dict = {}
    if quantization == NF4:
        extra = {"quantization_config": nf4_config(), "device_map": {"": str(device)}}
    elif quantization not in ("", "none"):
        raise TrainingError(f"Unknown quantization {quantization!r}; use none or nf4.")
    if task == CLASSIFICATION:
        model = AutoModelForSequenceClassification.from_pretrained(
            path, num_labels=len(labels), id2label=dict(enumerate(labels)),
            label2id={name: i for i, name in enumerate(labels)}, **extra,
        )
        if model.config.pad_token_id is None and pad_token_id is not None:
            model.config.pad_token_id = pad_token_id
        return model
    if task == GENERATION:
        return AutoModelForCausalLM.from_pretrained(path, **extra)
    raise TrainingError(f"Unknown task {task!r}.")


def prepare_kbit(model):
    """PEFT's preparation of a k-bit base for training: norms and the rest in fp32, input gradients on,
    gradient checkpointing (non-reentrant: LoRA's parameters are the only ones that need gradients)."""
    from peft import prepare_model_for_kbit_training

    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=True,
                                           gradient_checkpointing_kwargs={"use_reentrant": False})


def wrap_lora(model, *, task: str, r: int, alpha: int, dropout: float, target_modules: list[str],
              layers: list[int] | None = None):
    from peft import LoraConfig, TaskType, get_peft_model

    if r <= 0:
        raise TrainingError("The LoRA rank must be at least 1.")
    if not target_modules:
        raise TrainingError("Pick at least one target module for LoRA.")
    names = {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, _linear_like())}
    offered = names - HEAD_NAMES | ({OUTPUT_LAYER} & names if task == GENERATION else set())
    missing = sorted(set(target_modules) - offered)
    if missing:
        raise TrainingError(f"The model has no layers named {missing}; choose from {sorted(offered)}.")
    config = LoraConfig(
        task_type=TaskType.SEQ_CLS if task == CLASSIFICATION else TaskType.CAUSAL_LM,
        r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(target_modules),
        fan_in_fan_out=model.config.model_type == "gpt2", layers_to_transform=list(layers or []) or None,
    )
    return get_peft_model(model, config)


def adapter_wraps_output_layer(adapter_dir: str | Path) -> bool:
    """Whether a PEFT adapter puts LoRA on the output layer (its adapter_config.json's target modules, a list
    or a regular expression). Such an adapter needs an untied output layer when merged, and vLLM does not
    load LoRA weights on it."""
    import re

    path = Path(adapter_dir) / "adapter_config.json"
    if not path.is_file():
        return False
    targets = json.loads(path.read_text()).get("target_modules") or []
    if isinstance(targets, str):
        return re.fullmatch(targets, OUTPUT_LAYER) is not None
    return OUTPUT_LAYER in targets


def read_factory_meta(adapter_dir: str | Path) -> dict:
    path = Path(adapter_dir) / "factory.json"
    return json.loads(path.read_text()) if path.is_file() else {}
