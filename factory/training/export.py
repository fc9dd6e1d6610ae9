"""Export of a fine-tuned model: the base with its LoRA adapter merged in, as a plain Hugging Face folder
(safetensors weights, config, tokenizer) zipped, so that `AutoModelFor...from_pretrained` on the unzipped
folder loads it with no PEFT and no Model Factory.

No Django here: the `cpu`-queue task (factory.exports) calls `merged_model_write` and keeps the zip.
"""
from __future__ import annotations

import json
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path

from factory.training.modeling import adapter_wraps_output_layer, load_tokenizer, read_factory_meta
from factory.training.types import CLASSIFICATION, GENERATION, TrainingError

ZIP_NAME = "merged.zip"
MERGE_NOTE = """

## Merged export

This folder is the base model with the LoRA adapter merged into its weights (PEFT `merge_and_unload`),
saved as safetensors with its tokenizer. Load it with plain transformers:

```python
from transformers import {cls}, AutoTokenizer
model = {cls}.from_pretrained(FOLDER)
tokenizer = AutoTokenizer.from_pretrained(FOLDER)
```
"""


def _model_class(task: str):
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    if task == CLASSIFICATION:
        return AutoModelForSequenceClassification
    if task == GENERATION:
        return AutoModelForCausalLM
    raise TrainingError(f"Unknown task {task!r}.")


def merge_adapter(*, base_path: str, adapter_dir: str, chat_template: str = ""):
    """(merged model, tokenizer, meta): the base loaded in its stored dtype, the adapter applied by PEFT and
    folded into the weights; a classifier keeps the adapter's trained head and its labels."""
    from peft import PeftModel

    if not Path(base_path).is_dir():
        raise TrainingError(f"The base model folder {base_path} does not exist (was it moved or deleted?).")
    if not (Path(adapter_dir) / "adapter_config.json").is_file():
        raise TrainingError("The adapter files of this model are missing.")
    meta = read_factory_meta(adapter_dir)
    task = meta.get("task", CLASSIFICATION)
    own = (Path(adapter_dir) / "tokenizer_config.json").is_file()
    # The adapter's own tokenizer (saved by the trainer, with the catalog's chat template and a pad token);
    # the base's for adapters written without one.
    tokenizer = load_tokenizer(adapter_dir if own else base_path, chat_template="" if own else chat_template)
    kwargs: dict = {"dtype": "auto"}
    if task == CLASSIFICATION:
        labels = list(meta.get("labels") or [])
        kwargs.update(num_labels=len(labels), id2label=dict(enumerate(labels)),
                      label2id={name: i for i, name in enumerate(labels)})
    base = _model_class(task).from_pretrained(base_path, **kwargs)
    if base.config.pad_token_id is None and tokenizer.pad_token_id is not None:
        base.config.pad_token_id = tokenizer.pad_token_id
    if task == GENERATION and adapter_wraps_output_layer(adapter_dir):
        untie_output_layer(base)
    model = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    model.eval()
    return model, tokenizer, meta


def untie_output_layer(model) -> None:
    """Give the output layer its own copy of the weights it shares with the input embeddings. Merging LoRA
    into a tied output layer would change the embeddings too, which the adapter never did; the merged folder
    then stores both matrices (config tie_word_embeddings false)."""
    from torch import nn

    if not getattr(model.config, "tie_word_embeddings", False):
        return
    out, inp = model.get_output_embeddings(), model.get_input_embeddings()
    if out is None or inp is None or out.weight.data_ptr() != inp.weight.data_ptr():
        return
    out.weight = nn.Parameter(out.weight.detach().clone())
    model.config.tie_word_embeddings = False


def merged_model_write(*, base_path: str, adapter_dir: str, out_dir: str | Path, name: str, chat_template: str = "",
                       progress: Callable[[float], None] | None = None) -> Path:
    """Write `<out_dir>/merged.zip` (one top folder `name`) and return its path. The zip appears only when
    complete (written beside, then renamed), so a killed run leaves nothing that looks done."""
    report = progress or (lambda fraction: None)
    out = Path(out_dir)
    work = out / "work"
    shutil.rmtree(work, ignore_errors=True)
    folder = work / name
    folder.mkdir(parents=True)
    report(0.05)
    model, tokenizer, meta = merge_adapter(base_path=base_path, adapter_dir=adapter_dir, chat_template=chat_template)
    report(0.5)
    model.save_pretrained(str(folder), safe_serialization=True)
    tokenizer.save_pretrained(str(folder))
    del model
    card = Path(adapter_dir) / "README.md"
    cls = _model_class(meta.get("task", CLASSIFICATION)).__name__
    (folder / "README.md").write_text((card.read_text() if card.is_file() else f"# {name}\n")
                                      + MERGE_NOTE.format(cls=cls))
    (folder / "factory.json").write_text(json.dumps({**meta, "merged": True}, indent=2))
    report(0.8)
    tmp = work / (ZIP_NAME + ".tmp")
    with zipfile.ZipFile(tmp, "w") as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                # Weights hardly compress; the rest (tokenizer files) does.
                method = zipfile.ZIP_STORED if path.suffix == ".safetensors" else zipfile.ZIP_DEFLATED
                zf.write(path, arcname=f"{name}/{path.relative_to(folder)}", compress_type=method)
    final = out / ZIP_NAME
    tmp.replace(final)
    shutil.rmtree(work, ignore_errors=True)
    report(1.0)
    return final
