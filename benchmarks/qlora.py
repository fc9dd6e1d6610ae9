"""QLoRA on CUDA: the form's estimate (peak GPU memory, time per epoch) against measurement (issue 15, item 3).

For random-weight Llama bases of a few sizes (built here: the GPU machines have no internet), one epoch of the
factory's own trainer with LoRA on a full-precision base and with QLoRA (4-bit NF4, gradient checkpointing),
on full-length rows; measured: torch.cuda.max_memory_allocated over training (the trainer's figure) and the
epoch's wall time; estimated: factory.training.estimate.estimate_run for the same settings. Target: within
+-15%. Writes benchmarks/results/qlora_cuda.{md,json} (or $BENCH_RESULTS_DIR).

    python benchmarks/qlora.py [--quick]      # needs CUDA and bitsandbytes; run by benchmarks/gpu_run.sh

On a machine without CUDA it says so and writes nothing (exit 0, so `make bench` passes): the table is only
ever a GPU's.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RESULTS = Path(os.environ.get("BENCH_RESULTS_DIR") or ROOT / "benchmarks" / "results")
TARGET = 0.15
# name: (hidden, layers, heads, kv_heads, intermediate, vocab)
BASES = {
    "llama-110m": (768, 12, 12, 12, 2048, 32000),
    "llama-1.1b": (2048, 22, 32, 4, 5632, 32000),
    "llama-3b": (3072, 26, 24, 8, 8192, 32000),
}
QUICK = ("llama-110m", "llama-1.1b")
BATCH, MAX_LENGTH, EXAMPLES, R = 8, 256, 256, 16
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
WORDS = ("the of and to in a is that for it as was with be by on not he this are or his from at which but "
         "have an they you were her she there been one all we their has would when if so no will more").split()


def build_base(path: Path, dims) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from factory.training.tiny import build_chat_tokenizer

    hidden, layers, heads, kv, inter, vocab = dims
    tok = build_chat_tokenizer(path, texts=[" ".join(WORDS)] * 50, vocab_size=300, model_max_length=2048)
    config = LlamaConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                         num_key_value_heads=kv, intermediate_size=inter, max_position_embeddings=2048,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                         architectures=["LlamaForCausalLM"])
    with torch.device("cuda"):
        model = LlamaForCausalLM(config)
    model.save_pretrained(str(path))  # fp32, as the factory's bases load
    del model
    torch.cuda.empty_cache()
    return path


def run(base: Path, quantization: str, texts: list[str], work: Path) -> dict:
    import torch

    from factory.training import Example, TrainConfig, train
    from factory.training.estimate import estimate_run
    from factory.training.modeling import inspect_model

    cfg = TrainConfig(task="generation", model_path=str(base), lora_r=R, lora_alpha=2 * R, lora_dropout=0.0,
                      target_modules=TARGETS, epochs=1, learning_rate=1e-4, batch_size=BATCH, max_length=MAX_LENGTH,
                      eval_split=0.1, seed=0, checkpoint_every=0, progress_every_s=5, quantization=quantization,
                      group_by_length=False)
    torch.cuda.empty_cache()
    started = time.perf_counter()
    result = train(cfg, [Example(text=t) for t in texts], output_dir=work / f"{base.name}-{quantization}")
    wall = time.perf_counter() - started
    info = inspect_model(base)
    est = estimate_run(info=info, targets=TARGETS, r=R, task="generation", num_labels=0, n_examples=len(texts),
                       mean_tokens=MAX_LENGTH, epochs=1, batch_size=BATCH, max_length=MAX_LENGTH, eval_split=0.1,
                       quantization=quantization)
    return {"base": base.name, "parameters": info["parameter_count"], "quantization": quantization,
            "est_peak_bytes": est.gpu_memory_bytes, "peak_bytes": result.peak_memory_bytes,
            "est_epoch_s": est.gpu_seconds_per_epoch, "epoch_s": result.train_seconds, "wall_s": wall,
            "steps": result.steps, "device": result.device, "dtype": result.dtype}


def main() -> int:
    import torch

    if not torch.cuda.is_available():
        print("benchmarks/qlora.py needs CUDA (QLoRA runs on GPU workers); none here, nothing measured.")
        return 0  # make bench on a CPU machine: nothing to measure, not a failure
    quick = "--quick" in sys.argv
    names = QUICK if quick else tuple(BASES)
    work = Path(tempfile.mkdtemp(prefix="bench-qlora-", dir=os.environ.get("BENCH_TMP")))
    # Full-length rows: every example fills max_length, as the estimate assumes for its peak.
    texts = [" ".join(WORDS[(i + j) % len(WORDS)] for j in range(MAX_LENGTH * 2)) for i in range(EXAMPLES)]
    rows = []
    for name in names:
        base = build_base(work / name, BASES[name])
        for quantization in ("none", "nf4"):
            try:
                rows.append(run(base, quantization, texts, work))
            except Exception as exc:  # an OOM at 3B in fp32 is a finding, not a crash of the table
                rows.append({"base": name, "quantization": quantization, "error": f"{type(exc).__name__}: {exc}"[:300]})
            print(json.dumps(rows[-1]), flush=True)
    device = torch.cuda.get_device_name()
    lines = [f"# QLoRA on CUDA: estimate vs measurement ({device})", "",
             f"`python benchmarks/qlora.py{' --quick' if quick else ''}`; one epoch of the factory's trainer, "
             f"batch {BATCH} x {MAX_LENGTH} tokens, {EXAMPLES} examples (10% held out), LoRA r={R} on every Linear "
             f"layer; random-weight Llama bases. Peak: torch.cuda.max_memory_allocated (the CUDA context not "
             f"included, nor in the estimate). Target +-{TARGET:.0%}.", "",
             "| base | parameters | quantization | est. peak GB | measured GB | ratio | est. s/epoch | measured s/epoch | ratio |",
             "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['base']} | | {r['quantization']} | | {r['error']} | | | | |")
            continue
        mem, tim = r["peak_bytes"] / r["est_peak_bytes"], r["epoch_s"] / r["est_epoch_s"]
        flag = lambda x: "" if abs(x - 1) <= TARGET else " **off**"  # noqa: E731
        lines.append(f"| {r['base']} | {r['parameters'] / 1e6:.0f}M | {r['quantization']} | {r['est_peak_bytes'] / 1e9:.2f} | "
                     f"{r['peak_bytes'] / 1e9:.2f} | {mem:.2f}{flag(mem)} | {r['est_epoch_s']:.1f} | {r['epoch_s']:.1f} | "
                     f"{tim:.2f}{flag(tim)} |")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "qlora_cuda.md").write_text("\n".join(lines) + "\n")
    (RESULTS / "qlora_cuda.json").write_text(json.dumps({"device": device, "rows": rows}, indent=2))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
