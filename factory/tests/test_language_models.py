"""Causal-LM bases of every family the catalog is tested on, trained on conversations through the factory's
real loop (factory.training.train, real PEFT, real from_pretrained), with the loss on assistant tokens only."""
import math

import pytest
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from factory.training import Callbacks, Example, TrainConfig, TrainingError, train
from factory.training import data as batching
from factory.training.chat import CHATML_TEMPLATE, encode_chat, has_generation_markers, template_check
from factory.training.modeling import inspect_model, load_tokenizer
from factory.training.predict import predict
from factory.training.tiny import FAMILIES, build_tiny_causal_lm
from factory.training.types import GENERATION

TARGETS = {"phi": ["q_proj", "v_proj", "dense"]}
CONVERSATION = [
    {"role": "system", "content": "Answer in one sentence."},
    {"role": "user", "content": "How did profit move?"},
    {"role": "assistant", "content": "Profit rose sharply."},
    {"role": "user", "content": "And sales?"},
    {"role": "assistant", "content": "Sales fell a little."},
]
# The same ChatML layout with no {% generation %} markers, as most Hub templates are written.
PLAIN_CHATML = CHATML_TEMPLATE.replace("{% generation %}", "").replace("{% endgeneration %}", "")


def chats(n: int = 40) -> list[Example]:
    """A learnable toy set: the answer is the number after the one asked about."""
    return [Example(text="", record_id=i, messages=[
        {"role": "user", "content": f"What follows {i % 10}?"},
        {"role": "assistant", "content": f"{(i % 10) + 1} follows."}]) for i in range(n)]


@pytest.fixture(scope="session")
def family_dirs(tmp_path_factory):
    return {f: build_tiny_causal_lm(tmp_path_factory.mktemp(f"tiny-{f}"), family=f) for f in FAMILIES}


def chat_config(path, family="llama", **kw):
    base = dict(task=GENERATION, model_path=str(path), lora_r=4, lora_alpha=8, lora_dropout=0.0,
                target_modules=TARGETS.get(family, ["q_proj", "v_proj"]), epochs=3, learning_rate=1e-2,
                batch_size=8, max_length=64, eval_split=0.2, seed=3, checkpoint_every=0, progress_every_s=0)
    base.update(kw)
    return TrainConfig(**base)


@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_is_inspected_and_fine_tuned_on_conversations(family, family_dirs, tmp_path):
    path = family_dirs[family]
    info = inspect_model(path)
    assert info["architecture"] == family and GENERATION in info["tasks"]
    assert {"q_proj", "v_proj"} <= set(info["target_modules"]) and info["default_target_modules"] == ["q_proj", "v_proj"]
    assert has_generation_markers(info["chat_template"])
    evals = []
    result = train(chat_config(path, family), chats(), output_dir=tmp_path, callbacks=Callbacks(on_eval=evals.append))
    assert result.steps == 3 * 4 and result.train_examples == 32 and result.eval_examples == 8
    assert [e["epoch"] for e in evals] == [1, 2, 3]
    assert all(math.isfinite(e["eval_loss"]) for e in evals)
    assert evals[-1]["eval_loss"] < evals[0]["eval_loss"]  # it learns the answers
    meta = (result.adapter_dir / "factory.json").read_text()
    assert '"chat": true' in meta
    # plain transformers + PEFT load the artifact; its tokenizer carries the chat template it was trained with
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(path)), str(result.adapter_dir))
    assert sum(1 for n, _ in model.named_parameters() if "lora_A" in n) > 0
    assert has_generation_markers(AutoTokenizer.from_pretrained(str(result.adapter_dir)).chat_template)
    answer = predict(str(path), str(result.adapter_dir), "What follows 3?", max_new_tokens=6)
    assert isinstance(answer["text"], str)


@pytest.mark.parametrize("template", ["markers", "no markers"])
def test_only_assistant_tokens_carry_labels(template, family_dirs):
    """The batch's labels, decoded: exactly the assistant turns (and their end-of-turn token), nothing of
    the system or user turns; with the generation markers and with the prefix fallback."""
    tok = load_tokenizer(str(family_dirs["llama"]), chat_template="" if template == "markers" else PLAIN_CHATML)
    assert has_generation_markers(tok.chat_template) == (template == "markers")
    data = batching.encode([Example(text="", messages=CONVERSATION), Example(text="", messages=CONVERSATION[1:3])],
                           tokenizer=tok, task=GENERATION, labels=[], max_length=200)
    batch = batching.collate(data, [0, 1], pad_id=tok.pad_token_id, task=GENERATION)
    labels = batch["labels"]
    kept = [tok.decode([t for t in row.tolist() if t != batching.LABEL_PAD]) for row in labels]
    sep = "" if template == "markers" else "\n"  # the fallback keeps the template's separator after <|im_end|>
    assert kept[0] == f"Profit rose sharply.<|im_end|>{sep}Sales fell a little.<|im_end|>{sep}"
    assert kept[1] == f"Profit rose sharply.<|im_end|>{sep}"
    # the inputs are the whole conversation, and the padding of the shorter row is masked too
    assert "Answer in one sentence." in tok.decode(batch["input_ids"][0]) and "How did profit move?" in tok.decode(batch["input_ids"][0])
    assert (labels[1][batch["attention_mask"][1] == 0] == batching.LABEL_PAD).all()
    assert int((labels != batching.LABEL_PAD).sum()) < int(batch["attention_mask"].sum()) // 2


def test_a_catalog_template_replaces_the_tokenizers_and_a_broken_one_is_refused(family_dirs):
    tok = load_tokenizer(str(family_dirs["qwen2"]))
    custom = "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"
    assert template_check(tok, custom).startswith("[system] You are helpful.")
    with pytest.raises(TrainingError, match="does not render"):
        template_check(tok, "{% for m in messages %}{{ m['content'] }")
    with pytest.raises(TrainingError, match="leaves out"):
        template_check(tok, "nothing here")


def test_packing_fills_rows_and_keeps_every_answer(family_dirs, tmp_path):
    tok = load_tokenizer(str(family_dirs["llama"]))
    data = batching.encode(chats(30), tokenizer=tok, task=GENERATION, labels=[], max_length=256)
    packed = batching.pack(data, max_length=256, seed=1)
    assert len(packed) < len(data) // 3
    assert max(packed.lengths) <= 256 and sum(packed.lengths) == sum(data.lengths)
    assert sum(map(sum, packed.loss_masks)) == sum(map(sum, data.loss_masks))
    unpacked = train(chat_config(family_dirs["llama"], epochs=1, max_length=256), chats(), output_dir=tmp_path / "a")
    with_packing = train(chat_config(family_dirs["llama"], epochs=1, max_length=256, packing=True), chats(),
                         output_dir=tmp_path / "b")
    assert with_packing.steps < unpacked.steps and math.isfinite(with_packing.metrics["eval_loss"])


def test_conversations_cut_before_their_answer_are_dropped_or_refused(family_dirs):
    tok = load_tokenizer(str(family_dirs["llama"]))
    long_prompt = [{"role": "user", "content": "word " * 200}, {"role": "assistant", "content": "Short."}]
    data = batching.encode([Example(text="", messages=long_prompt), *chats(2)], tokenizer=tok, task=GENERATION,
                           labels=[], max_length=64)
    assert len(data) == 2 and data.dropped == 1
    ids, mask = encode_chat(tok, long_prompt, max_length=64)
    assert len(ids) == 64 and sum(mask) == 0
    with pytest.raises(TrainingError, match="No conversation keeps an assistant answer within 64 tokens"):
        batching.encode([Example(text="", messages=long_prompt)], tokenizer=tok, task=GENERATION, labels=[],
                        max_length=64)


def test_a_base_without_a_chat_template_says_how_to_set_one(tiny_gpt2_dir):
    tok = load_tokenizer(str(tiny_gpt2_dir))
    with pytest.raises(TrainingError, match="--chat-template"):
        encode_chat(tok, CONVERSATION, max_length=64)
