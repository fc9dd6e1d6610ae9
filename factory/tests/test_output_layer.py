"""LoRA on a language model's output layer (`lm_head`, types.OUTPUT_LAYER): offered by name for generation
only, trained by the factory's loop, merged into a plain transformers folder with the output layer untied
from the embeddings (the embeddings keep the base's weights), and served by the built-in engine with the
same logits as PEFT, alone and batched beside an adapter without it."""
import json
import zipfile

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from factory.tests.test_language_models import chat_config, chats
from factory.training import TrainingError, train
from factory.training.export import merge_adapter, merged_model_write
from factory.training.modeling import adapter_wraps_output_layer, inspect_model, load_tokenizer, wrap_lora
from factory.training.tiny import build_tiny_causal_lm
from factory.training.types import CLASSIFICATION, OUTPUT_LAYER
from serving.openlora import InferenceRequest, ServingConfig, ServingEngine

PROMPT = "What follows 3?"


@pytest.fixture(scope="module")
def tied_llama(tmp_path_factory):
    path = build_tiny_causal_lm(tmp_path_factory.mktemp("tied-llama"), family="llama")
    assert json.loads((path / "config.json").read_text())["tie_word_embeddings"] is True
    return path


@pytest.fixture(scope="module")
def adapters(tied_llama, tmp_path_factory):
    """Two adapters of the same base: one with LoRA on the output layer too, one on the attention only."""
    out = {}
    for name, targets in (("output", ["q_proj", "v_proj", OUTPUT_LAYER]), ("body", ["q_proj", "v_proj"])):
        # A high rate so that three epochs move the output layer far from the embeddings it was tied to.
        result = train(chat_config(tied_llama, target_modules=targets, learning_rate=3e-2, loraplus_ratio=4.0),
                       chats(), output_dir=tmp_path_factory.mktemp(f"out-{name}"))
        out[name] = result.adapter_dir
    return out


def test_the_output_layer_is_a_target_of_causal_lms_only_and_never_a_default(tied_llama, tiny_bert_dir):
    info = inspect_model(tied_llama)
    assert OUTPUT_LAYER in info["target_modules"] and OUTPUT_LAYER not in info["default_target_modules"]
    assert info["module_shapes"][OUTPUT_LAYER] == {"count": 1, "shapes": [[info["hidden_size"], info["vocab_size"]]]}
    assert OUTPUT_LAYER not in inspect_model(tiny_bert_dir)["target_modules"]


def test_a_classifier_cannot_wrap_the_output_layer(tied_llama):
    model = AutoModelForCausalLM.from_pretrained(str(tied_llama))
    with pytest.raises(TrainingError, match="no layers named \\['lm_head'\\]"):
        wrap_lora(model, task=CLASSIFICATION, r=4, alpha=8, dropout=0.0, target_modules=["q_proj", OUTPUT_LAYER])


def test_the_adapter_trains_the_output_layer(adapters):
    assert adapter_wraps_output_layer(adapters["output"]) and not adapter_wraps_output_layer(adapters["body"])
    tensors = load_file(str(adapters["output"] / "adapter_model.safetensors"))
    b = next(v for k, v in tensors.items() if k.endswith(f"{OUTPUT_LAYER}.lora_B.weight"))
    assert b.abs().max() > 0  # B starts at zero: a non-zero B is a trained output layer
    # LoRA matrices only: not a copy of the tied output layer's whole weight, which the base has.
    assert all(".lora_A." in k or ".lora_B." in k for k in tensors)


def _peft_logits(base, adapter, text):
    tok = load_tokenizer(str(base))
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(base)), str(adapter)).eval()
    with torch.no_grad():
        return model(**tok(text, return_tensors="pt")).logits[0, -1]


def test_the_merged_export_unties_the_output_layer_and_keeps_the_embeddings(tied_llama, adapters, tmp_path):
    base = AutoModelForCausalLM.from_pretrained(str(tied_llama))
    merged, tok, _ = merge_adapter(base_path=str(tied_llama), adapter_dir=str(adapters["output"]))
    assert merged.config.tie_word_embeddings is False
    embeddings = merged.get_input_embeddings().weight
    # Merging into a tied layer would have changed the embeddings too, which training never did.
    assert torch.equal(embeddings, base.get_input_embeddings().weight)
    assert not torch.allclose(merged.get_output_embeddings().weight, embeddings)
    # Written, zipped, unzipped and loaded by plain transformers: the adapter's logits.
    zipped = merged_model_write(base_path=str(tied_llama), adapter_dir=str(adapters["output"]), out_dir=tmp_path,
                                name="recite")
    zipfile.ZipFile(zipped).extractall(tmp_path / "unzipped")
    plain = AutoModelForCausalLM.from_pretrained(str(tmp_path / "unzipped" / "recite")).eval()
    assert plain.config.tie_word_embeddings is False
    with torch.no_grad():
        logits = plain(**tok(PROMPT, return_tensors="pt")).logits[0, -1]
    torch.testing.assert_close(logits, _peft_logits(tied_llama, adapters["output"], PROMPT), atol=1e-4, rtol=1e-4)


def test_a_body_only_adapter_keeps_the_tied_layout(tied_llama, adapters):
    merged, _, _ = merge_adapter(base_path=str(tied_llama), adapter_dir=str(adapters["body"]))
    assert merged.config.tie_word_embeddings is True


def test_the_served_logits_are_peft_s_alone_and_batched_with_another_adapter(tied_llama, adapters):
    engine = ServingEngine(ServingConfig(device="cpu"))
    texts = [PROMPT, "What follows 7?"]
    requests = [InferenceRequest(base_path=str(tied_llama), adapter_dir=str(adapters[name]), text=text,
                                 task="generation") for name, text in (("output", texts[0]), ("body", texts[1]))]
    alone = engine.forward(requests[:1])[0]
    torch.testing.assert_close(alone, _peft_logits(tied_llama, adapters["output"], texts[0]), atol=1e-4, rtol=1e-4)
    batched = engine.forward(requests)
    torch.testing.assert_close(batched[0], alone, atol=1e-4, rtol=1e-4)
    # The other row gets no output-layer update: its logits are its own adapter's.
    torch.testing.assert_close(batched[1], _peft_logits(tied_llama, adapters["body"], texts[1]), atol=1e-4, rtol=1e-4)
