"""The classifier head's linear-probe start (factory/training/head.py, LP-FT), on tiny random models and real
training: the probe itself, the head it sets, and the first evaluation it gives compared with a random head."""

import pytest
import torch
from safetensors.torch import load_file

from factory.tests.conftest import LABELS
from factory.tests.test_training import cls_config, cls_examples
from factory.training import Callbacks, TrainConfig, train
from factory.training.estimate import CPU_STARTUP_SECONDS, estimate_run
from factory.training.head import fit_probe


def test_fit_probe_separates_and_returns_weights_for_raw_features():
    """Four labels, linearly separable but on features of very different scales and offsets (as a tanh pooler
    or a decoder's hidden state give): the probe fits them, and its weight and bias apply to the raw
    features (the standardisation folded in), as the head's Linear will apply them."""
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(4, 6, generator=g) * 3
    y = torch.arange(200) % 4
    x = centers[y] + 0.3 * torch.randn(200, 6, generator=g)
    x = x * torch.tensor([1e-3, 1.0, 50.0, 1.0, 0.1, 7.0]) + torch.tensor([5.0, -2.0, 100.0, 0.0, 0.0, 1.0])
    weight, bias = fit_probe(x, y, 4)
    assert weight.shape == (4, 6) and bias.shape == (4,)
    assert ((x.double() @ weight.T + bias).argmax(-1) == y).double().mean() == 1.0
    again = fit_probe(x, y, 4)  # full-batch L-BFGS from zeros: deterministic
    assert torch.equal(again[0], weight) and torch.equal(again[1], bias)


def _first_eval(path, tmp_path, examples, **kw):
    lines, evals = [], []
    result = train(
        cls_config(path, epochs=1, learning_rate=1e-12, **kw),
        examples,
        output_dir=tmp_path,
        callbacks=Callbacks(on_log=lines.append, on_eval=evals.append),
    )
    return result, evals[0], lines


def test_probe_head_learns_before_the_first_step_and_random_does_not(tiny_bert_dir, tmp_path):
    """With a learning rate too small to move anything, the first evaluation shows the head's start: the
    probe's head already separates the toy labels from the frozen tiny model's features; transformers'
    random head does not. The head saved with the adapter is the probe's."""
    examples = cls_examples(96)
    probe, probe_eval, lines = _first_eval(tiny_bert_dir, tmp_path / "probe", examples, head_init="probe")
    rand, rand_eval, rand_lines = _first_eval(tiny_bert_dir, tmp_path / "random", examples, head_init="random")
    assert any(line.startswith("head initialised by a linear probe") for line in lines)
    assert not any(line.startswith("head initialised") for line in rand_lines)
    assert probe_eval["macro_f1"] >= rand_eval["macro_f1"] + 0.3, (probe_eval["macro_f1"], rand_eval["macro_f1"])
    assert probe_eval["macro_f1"] > probe_eval["baseline"]["macro_f1"] + 0.3

    saved = {
        k: v
        for k, v in load_file(str(probe.adapter_dir / "adapter_model.safetensors")).items()
        if "classifier" in k and k.endswith("weight")
    }
    (weight,) = saved.values()
    assert weight.abs().max() > 0.2  # transformers' random start has std 0.02


def test_a_scaled_probe_keeps_its_predictions_at_the_norm_asked_for(tiny_bert_dir, tmp_path):
    """probe_norm scales the probe's weight and bias by one factor: the saved head's weight has that norm, and
    its first evaluation (nothing trained yet) predicts as the unscaled probe does."""
    examples = cls_examples(96)
    full, full_eval, _ = _first_eval(tiny_bert_dir, tmp_path / "full", examples, head_init="probe")
    scaled, scaled_eval, lines = _first_eval(tiny_bert_dir, tmp_path / "scaled", examples, head_init="probe",
                                             probe_norm=2.0)

    def head_weight(result):
        tensors = load_file(str(result.adapter_dir / "adapter_model.safetensors"))
        return next(v for k, v in tensors.items() if "classifier" in k and k.endswith("weight"))

    assert head_weight(scaled).norm().item() == pytest.approx(2.0, rel=1e-3)
    assert head_weight(full).norm().item() > 2.5  # as fitted
    assert scaled_eval["confusion_matrix"] == full_eval["confusion_matrix"]
    assert any("weight norm 2.00 (fitted" in line for line in lines)


def test_decoder_classifier_head_is_probed_at_the_last_real_token(tiny_gpt2_dir, tmp_path):
    """A decoder's `score` (no bias) reads per-token features: the probe reads the last real token of each
    right-padded row, as transformers' sequence classifier reads its logits, and sets the weights."""
    examples = cls_examples(96)
    cfg = TrainConfig(
        task="classification",
        model_path=str(tiny_gpt2_dir),
        labels=LABELS,
        lora_r=4,
        lora_alpha=8,
        target_modules=["c_attn"],
        epochs=1,
        learning_rate=1e-12,
        batch_size=8,
        max_length=32,
        eval_split=0.25,
        seed=7,
        checkpoint_every=0,
        progress_every_s=0,
        head_init="probe",
    )
    lines, evals = [], []
    train(cfg, examples, output_dir=tmp_path, callbacks=Callbacks(on_log=lines.append, on_eval=evals.append))
    probed = next(line for line in lines if line.startswith("head initialised by a linear probe"))
    assert float(probed.rsplit(" ", 1)[-1]) > 0.5
    assert evals[0]["macro_f1"] > evals[0]["baseline"]["macro_f1"]


def test_estimate_counts_the_probe_pass_once_for_a_classifier():
    """The probe's forward pass over the training split is in a classifier's total time, once per run (not in
    the per-epoch time); a language model has none."""
    info = {
        "hidden_size": 384,
        "num_layers": 6,
        "parameter_count": 22_713_216,
        "vocab_size": 30522,
        "module_shapes": {"query": {"shapes": [(384, 384)] * 6}, "value": {"shapes": [(384, 384)] * 6}},
    }
    common = dict(
        info=info,
        targets=["query", "value"],
        r=16,
        n_examples=1000,
        mean_tokens=31,
        batch_size=16,
        max_length=64,
        eval_split=0.2,
    )
    one, four = (estimate_run(task="classification", num_labels=21, epochs=e, head_init="probe", **common) for e in (1, 4))
    probe = one.cpu_seconds - CPU_STARTUP_SECONDS - one.cpu_seconds_per_epoch
    assert probe > 0 and probe == pytest.approx(four.cpu_seconds - CPU_STARTUP_SECONDS - 4 * four.cpu_seconds_per_epoch)
    assert probe < one.cpu_seconds_per_epoch / 2  # a forward pass without gradients, over the training split
    lm = estimate_run(task="generation", num_labels=0, epochs=1, **common)
    assert lm.cpu_seconds == pytest.approx(CPU_STARTUP_SECONDS + lm.cpu_seconds_per_epoch)
    plain = estimate_run(task="classification", num_labels=21, epochs=1, **common)  # the default random start
    assert plain.cpu_seconds == pytest.approx(CPU_STARTUP_SECONDS + plain.cpu_seconds_per_epoch)
