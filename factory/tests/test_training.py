"""The Django-free training loop on tiny random BERT and GPT-2 models: real PEFT, real from_pretrained."""
import json

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from factory.tests.conftest import LABELS, labelled_texts, plain_texts
from factory.training import (
    Callbacks,
    Example,
    TrainConfig,
    TrainingCancelled,
    TrainingError,
    checkpoint_step,
    train,
)
from factory.training import data as batching
from factory.training.artifacts import file_sha256, model_card_render
from factory.training.metrics import classification_metrics
from factory.training.modeling import inspect_model
from factory.training.predict import predict
from factory.training.trainer import is_oom, param_groups


def cls_config(path, **kw):
    base = dict(task="classification", model_path=str(path), labels=LABELS, lora_r=4, lora_alpha=8,
                target_modules=["query", "value"], epochs=2, learning_rate=5e-3, batch_size=8, max_length=32,
                eval_split=0.25, seed=7, checkpoint_every=3, progress_every_s=0)
    base.update(kw)
    return TrainConfig(**base)


def cls_examples(n=48):
    return [Example(text=t, label=lab, record_id=i) for i, (t, lab) in enumerate(labelled_texts(n))]


def test_classification_trains_and_plain_peft_loads_the_adapter(tiny_bert_dir, tmp_path):
    reports, evals = [], []
    result = train(cls_config(tiny_bert_dir), cls_examples(), output_dir=tmp_path,
                   callbacks=Callbacks(on_progress=reports.append, on_eval=evals.append))
    files = {p.name for p in result.adapter_dir.iterdir()}
    assert {"adapter_model.safetensors", "adapter_config.json", "factory.json"} <= files
    assert result.adapter_sha256 == file_sha256(result.adapter_dir / "adapter_model.safetensors")
    assert result.steps == 2 * 5 and result.train_examples == 36 and result.eval_examples == 12
    assert {"accuracy", "macro_f1", "confusion_matrix", "eval_loss"} <= set(result.metrics)
    assert sum(map(sum, result.metrics["confusion_matrix"])) == 12
    assert [e["epoch"] for e in evals] == [1, 2]
    assert result.best_epoch in (1, 2)
    first = reports[0]
    assert first.step == 1 and first.total_steps == 10 and first.loss > 0 and first.learning_rate > 0
    assert first.examples_per_s > 0 and first.tokens_per_s > 0 and first.eta_s >= 0
    # plain PEFT, no factory code: the classifier head is saved with the adapter
    base = AutoModelForSequenceClassification.from_pretrained(str(tiny_bert_dir), num_labels=3)
    model = PeftModel.from_pretrained(base, str(result.adapter_dir)).eval()
    tok = AutoTokenizer.from_pretrained(str(tiny_bert_dir))
    enc = tok(["the company profit rose"], return_tensors="pt")
    with torch.no_grad():
        logits = model(**enc).logits
    assert logits.shape == (1, 3)
    out = predict(str(tiny_bert_dir), str(result.adapter_dir), "the company profit rose")
    assert out["label"] in LABELS and abs(sum(out["probabilities"].values()) - 1) < 1e-3
    assert out["probabilities"][out["label"]] == pytest.approx(torch.softmax(logits[0], -1).max().item(), abs=1e-3)


def test_same_seed_gives_the_same_adapter(tiny_bert_dir, tmp_path):
    cfg = cls_config(tiny_bert_dir, epochs=1)
    a = train(cfg, cls_examples(), output_dir=tmp_path / "a")
    b = train(cfg, cls_examples(), output_dir=tmp_path / "b")
    c = train(cls_config(tiny_bert_dir, epochs=1, seed=8), cls_examples(), output_dir=tmp_path / "c")
    assert a.adapter_sha256 == b.adapter_sha256
    assert a.adapter_sha256 != c.adapter_sha256


def test_cancel_keeps_a_checkpoint_and_resume_matches_an_uninterrupted_run(tiny_bert_dir, tmp_path):
    cfg = cls_config(tiny_bert_dir, epochs=2)
    whole = train(cfg, cls_examples(), output_dir=tmp_path / "whole")
    seen = {"n": 0}

    def stop_after_seven():
        seen["n"] += 1
        return "cancel" if seen["n"] > 7 else None

    with pytest.raises(TrainingCancelled) as info:
        train(cfg, cls_examples(), output_dir=tmp_path / "cut", callbacks=Callbacks(should_stop=stop_after_seven))
    assert info.value.step == 7  # stopped before the 8th step: within one step of the flag
    assert checkpoint_step(tmp_path / "cut") == 7  # mid-epoch 2 (5 batches an epoch)
    resumed = train(cfg, cls_examples(), output_dir=tmp_path / "cut")
    assert resumed.resumed_from_step == 7 and resumed.steps == 10
    assert resumed.adapter_sha256 == whole.adapter_sha256  # optimizer, scheduler, RNG and data position restored


def test_generation_trains_with_perplexity_and_generates(tiny_gpt2_dir, tmp_path):
    cfg = TrainConfig(task="generation", model_path=str(tiny_gpt2_dir), lora_r=4, lora_alpha=8,
                      target_modules=["c_attn"], epochs=2, learning_rate=1e-2, batch_size=4, max_length=32,
                      eval_split=0.25, seed=1, checkpoint_every=0, progress_every_s=0)
    result = train(cfg, [Example(text=t) for t in plain_texts()], output_dir=tmp_path)
    assert result.metrics["perplexity"] > 1 and result.metrics["eval_loss"] > 0
    evals = [h for h in result.history if h["kind"] == "eval"]
    assert evals[-1]["eval_loss"] < evals[0]["eval_loss"] or result.best_epoch == 1
    base = AutoModelForCausalLM.from_pretrained(str(tiny_gpt2_dir))
    PeftModel.from_pretrained(base, str(result.adapter_dir))
    out = predict(str(tiny_gpt2_dir), str(result.adapter_dir), "First Citizen:", max_new_tokens=5)
    assert isinstance(out["text"], str)


def test_loraplus_gives_the_b_matrices_their_own_rate_and_changes_training(tiny_bert_dir, tmp_path):
    """LoRA+: every lora_B at learning_rate x ratio; lora_A and the classifier head at learning_rate; 1 is
    plain LoRA (one group). The ratio reaches the optimizer: the same run with it ends at another adapter."""
    from factory.training.modeling import wrap_lora

    base = AutoModelForSequenceClassification.from_pretrained(str(tiny_bert_dir), num_labels=3)
    model = wrap_lora(base, task="classification", r=4, alpha=8, dropout=0.0, target_modules=["query", "value"])
    names = {id(p): n for n, p in model.named_parameters()}
    plain = param_groups(model, cls_config(tiny_bert_dir))
    assert len(plain) == 1 and plain[0]["lr"] == 5e-3
    slow, fast = param_groups(model, cls_config(tiny_bert_dir, loraplus_ratio=16.0))
    assert slow["lr"] == 5e-3 and fast["lr"] == pytest.approx(0.08)
    assert fast["params"] and all(".lora_B." in names[id(p)] for p in fast["params"])
    assert any(".lora_A." in names[id(p)] for p in slow["params"])
    assert any("classifier" in names[id(p)] for p in slow["params"])  # the head learns at the base rate
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert {id(p) for g in (slow, fast) for p in g["params"]} == trainable

    cfg = cls_config(tiny_bert_dir, epochs=1, checkpoint_every=0)
    a = train(cfg, cls_examples(), output_dir=tmp_path / "a")
    b = train(cls_config(tiny_bert_dir, epochs=1, checkpoint_every=0, loraplus_ratio=16.0), cls_examples(),
              output_dir=tmp_path / "b")
    assert a.adapter_sha256 != b.adapter_sha256


def test_inspect_model_lists_linear_layers(tiny_bert_dir, tiny_gpt2_dir):
    bert = inspect_model(tiny_bert_dir)
    assert {"query", "key", "value", "dense"} <= set(bert["target_modules"])
    assert bert["default_target_modules"] == ["query", "value"] and bert["tasks"] == ["classification"]
    assert bert["module_shapes"]["query"] == {"count": 2, "shapes": [[32, 32], [32, 32]]}
    gpt = inspect_model(tiny_gpt2_dir)
    assert {"c_attn", "c_proj", "c_fc", "lm_head"} <= set(gpt["target_modules"])  # lm_head: by name, for generation
    assert "lm_head" not in gpt["default_target_modules"]
    assert gpt["tasks"][0] == "generation" and gpt["max_length"] == 256
    with pytest.raises(TrainingError, match="no config.json"):
        inspect_model(tiny_bert_dir.parent)


@pytest.mark.parametrize("kwargs, examples, message", [
    ({}, [Example(text="x", label="maybe")] * 8, "outside the label set"),
    ({}, cls_examples(2), "Too few records"),
    ({"target_modules": ["q_proj"]}, cls_examples(), "no layers named"),
    ({"lora_r": 0}, cls_examples(), "rank must be at least 1"),
    ({"model_path": "/nonexistent/model"}, cls_examples(), "does not exist"),
])
def test_bad_inputs_fail_with_clear_errors(tiny_bert_dir, tmp_path, kwargs, examples, message):
    with pytest.raises((TrainingError, OSError), match=message):
        train(cls_config(tiny_bert_dir, **kwargs), examples, output_dir=tmp_path)


def test_out_of_memory_is_a_clear_error(tiny_bert_dir, tmp_path):
    with pytest.raises(TrainingError, match="Lower the batch size or the max sequence length"):
        train(cls_config(tiny_bert_dir, batch_size=10**9), cls_examples(), output_dir=tmp_path)
    try:  # a real failed allocation is recognised too
        torch.empty(2**62, dtype=torch.uint8)
    except RuntimeError as exc:
        assert is_oom(exc)
    assert not is_oom(RuntimeError("shape mismatch"))


def test_length_grouped_batches_cover_everything_and_pad_less():
    import random

    lengths = [random.Random(i).randint(5, 120) for i in range(1000)]
    grouped = batching.batch_order(lengths, batch_size=16, seed=3, epoch=0, group_by_length=True)
    plain = batching.batch_order(lengths, batch_size=16, seed=3, epoch=0, group_by_length=False)
    assert sorted(i for b in grouped for i in b) == list(range(1000))
    assert grouped == batching.batch_order(lengths, batch_size=16, seed=3, epoch=0, group_by_length=True)
    assert grouped != batching.batch_order(lengths, batch_size=16, seed=3, epoch=1, group_by_length=True)

    def padded(batches):
        return sum(len(b) * max(lengths[i] for i in b) for b in batches)

    assert padded(grouped) < 0.7 * padded(plain)
    assert max(lengths[i] for i in grouped[0]) == max(lengths)


def test_split_is_stratified_and_seeded():
    ex = cls_examples(60)
    train_a, eval_a = batching.split_examples(ex, eval_split=0.2, seed=1, task="classification")
    train_b, eval_b = batching.split_examples(ex, eval_split=0.2, seed=1, task="classification")
    assert eval_a == eval_b and train_a == train_b and len(eval_a) == 12
    assert {lab: sum(e.label == lab for e in eval_a) for lab in LABELS} == dict.fromkeys(LABELS, 4)
    with pytest.raises(TrainingError, match="between 0 and 1"):
        batching.split_examples(ex, eval_split=1.0, seed=1, task="classification")


def test_metrics_macro_f1():
    m = classification_metrics([0, 0, 1, 1, 2, 2], [0, 1, 1, 1, 2, 0], ["a", "b", "c"])
    assert m["accuracy"] == pytest.approx(4 / 6)
    # f1: a = 0.5, b = 0.8, c = 2/3
    assert m["macro_f1"] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    assert m["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]


def test_model_card_names_data_contributors_and_hashes():
    kw = dict(
        name="fin|bert", task="classification", base_model="MiniLM-L6", base_model_source="pkg", datanet="Finance",
        version_number=3, merkle_root="0x" + "ab" * 32, hyperparameters={"lora_r": 8}, best_epoch=2,
        metrics={"macro_f1": 0.81, "accuracy": 0.85, "confusion_matrix": [[1, 0], [0, 1]], "labels": ["a", "b"]},
        contributors=[("alice", 10), ("bob", 3)], adapter_sha256="f" * 64, labels=["a", "b"], train_examples=8,
        eval_examples=2, train_seconds=12.0, device="cpu")
    card = model_card_render(**kw)
    assert "0x" + "ab" * 32 in card and "| alice | 10 |" in card and "f" * 64 in card
    assert "macro_f1: 0.8100" in card and "fin\\|bert" in card and "PeftModel.from_pretrained" in card
    assert json.dumps(card) and "## Evaluation (best epoch: 2)" in card
    last = model_card_render(**{**kw, "hyperparameters": {"keep_epoch": "last"}, "best_epoch": 40})
    assert "## Evaluation (last epoch: 40)" in last  # the verbatim preset keeps the last epoch, not the best


def _kept_adapter_confusion(tiny_bert_dir, adapter_dir, cfg, examples) -> list[list[int]]:
    """The confusion matrix of the saved adapter on the run's own evaluation split, through the predictor."""
    _, held = batching.split_examples(examples, eval_split=cfg.eval_split, seed=cfg.seed, task=cfg.task)
    predicted = [predict(str(tiny_bert_dir), str(adapter_dir), ex.text)["label"] for ex in held]
    index = {name: i for i, name in enumerate(LABELS)}
    return classification_metrics([index[ex.label] for ex in held], [index[p] for p in predicted],
                                  LABELS)["confusion_matrix"]


def test_early_stopping_ends_the_run_and_keeps_the_best_epoch(tiny_bert_dir, tmp_path):
    """A learning rate far too high for the tiny model: the validation score peaks, then falls; with patience
    2 the run stops two evaluations after its best one (but not before half its 12 epochs), and the adapter
    it saves is the best epoch's (its predictions reproduce that epoch's confusion matrix, not the last's)."""
    cfg = cls_config(tiny_bert_dir, epochs=12, patience=2, learning_rate=0.3, lora_r=8, lora_alpha=16,
                     target_modules=["query", "key", "value", "dense"])
    examples = cls_examples()
    evals, lines = [], []
    result = train(cfg, examples, output_dir=tmp_path, callbacks=Callbacks(on_eval=evals.append, on_log=lines.append))
    assert result.stopped_early and result.epochs_run == len(evals) == max(result.best_epoch + 2, 6) < 12
    assert result.steps == 5 * len(evals)  # 36 training rows, batch 8: 5 steps an epoch
    best = evals[result.best_epoch - 1]
    assert best["macro_f1"] == max(e["macro_f1"] for e in evals) == result.metrics["macro_f1"]
    assert all(e["macro_f1"] <= best["macro_f1"] + 1e-4 for e in evals[result.best_epoch:])
    assert evals[-1]["confusion_matrix"] != best["confusion_matrix"]
    assert _kept_adapter_confusion(tiny_bert_dir, result.adapter_dir, cfg, examples) == best["confusion_matrix"]
    assert any(line.startswith(f"early stop after epoch {len(evals)}") for line in lines)
    assert json.loads((result.adapter_dir / "factory.json").read_text())["best_epoch"] == result.best_epoch


def test_keep_epoch_last_keeps_the_last_epochs_adapter_whatever_its_score(tiny_bert_dir, tmp_path):
    """The same over-fast run without early stopping: "best" keeps the peak epoch, "last" (the verbatim
    preset's choice) keeps the final one, with that epoch's metrics, even though an earlier one scored better."""
    kw = dict(epochs=6, learning_rate=0.3, lora_r=8, lora_alpha=16, target_modules=["query", "key", "value", "dense"])
    examples = cls_examples()
    evals = []
    best = train(cls_config(tiny_bert_dir, **kw), examples, output_dir=tmp_path / "best",
                 callbacks=Callbacks(on_eval=evals.append))
    assert best.best_epoch < 6 and evals[-1]["confusion_matrix"] != evals[best.best_epoch - 1]["confusion_matrix"]
    cfg = cls_config(tiny_bert_dir, keep_epoch="last", **kw)
    last = train(cfg, examples, output_dir=tmp_path / "last")
    assert last.best_epoch == last.epochs_run == 6 and not last.stopped_early
    assert last.metrics["confusion_matrix"] == evals[-1]["confusion_matrix"]  # the same seeded run
    assert _kept_adapter_confusion(tiny_bert_dir, last.adapter_dir, cfg, examples) == evals[-1]["confusion_matrix"]
    assert json.loads((last.adapter_dir / "factory.json").read_text())["config"]["keep_epoch"] == "last"


def test_a_flat_validation_score_stops_after_patience_and_baseline_is_reported(tiny_bert_dir, tmp_path):
    """With a learning rate too small to change anything, no evaluation beats the first: the run stops after
    1 + patience epochs, or half its epochs when that is later. Every evaluation carries the majority-class
    baseline of the split."""
    cfg = cls_config(tiny_bert_dir, epochs=6, patience=2, learning_rate=1e-12)
    examples = cls_examples()
    result = train(cfg, examples, output_dir=tmp_path)
    assert result.stopped_early and result.epochs_run == 3 and result.best_epoch == 1 and result.steps == 15
    late = train(cls_config(tiny_bert_dir, epochs=10, patience=2, learning_rate=1e-12), examples,
                 output_dir=tmp_path / "late")
    assert late.stopped_early and late.epochs_run == 5 and late.best_epoch == 1  # not before half of 10
    train_ex, held = batching.split_examples(examples, eval_split=cfg.eval_split, seed=cfg.seed, task=cfg.task)
    top = max(LABELS, key=lambda lab: (sum(e.label == lab for e in train_ex), -LABELS.index(lab)))
    share = sum(e.label == top for e in held) / len(held)
    baseline = result.metrics["baseline"]
    assert baseline["label"] == top and baseline["accuracy"] == pytest.approx(share)
    assert 0 < baseline["macro_f1"] < baseline["accuracy"]
    # patience 0 trains every epoch
    assert train(cls_config(tiny_bert_dir, epochs=3, learning_rate=1e-12), examples,
                 output_dir=tmp_path / "all").epochs_run == 3
