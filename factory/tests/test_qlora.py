# ruff: noqa: F811 - the fixtures imported from ui_helpers are the test arguments of the same names
"""QLoRA (issue 15, item 3): offered only while a GPU worker is up, refused with a clear error otherwise (form
and API), sent to the `cuda` queue; the training path through bitsandbytes (whose CPU kernels let it run
here, slowly); the estimate's peak-GPU-memory formula checked against a real 4-bit model's tensors."""
from __future__ import annotations

import pytest
import torch
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from core.heartbeat import CUDA_QUEUE
from core.models import WorkerHeartbeat
from factory import selectors, services
from factory.models import FineTuneJob
from factory.tests.factories import developer, make_version, small_params
from factory.tests.ui_helpers import tiny_bert  # noqa: F401 - fixture
from factory.training import Example, TrainConfig, train
from factory.training.estimate import (
    ACTIVATION_FACTOR,
    CHECKPOINT_INPUT_BYTES,
    CPU_STARTUP_SECONDS,
    GPU_STARTUP_SECONDS,
    NF4_BYTES_PER_WEIGHT,
    TRAINABLE_BYTES,
    estimate_run,
    gpu_peak_memory,
    linear_params,
)
from factory.training.modeling import inspect_model, load_base
from factory.training.tiny import build_tiny_causal_lm

H200 = {"kind": "cuda", "index": 0, "name": "NVIDIA H200", "memory_bytes": 150_000_000_000, "capability": "9.0"}
TEXTS = [f"the quick brown fox number {i} jumps over the lazy dog and runs home" for i in range(16)]


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    # Widths that are multiples of 64 (bitsandbytes' block size), so the formula's constants are exact.
    return build_tiny_causal_lm(tmp_path_factory.mktemp("qlora-llama"), texts=TEXTS, hidden=64, intermediate=128,
                                heads=4, kv_heads=2, vocab_size=400)


def gpu_worker_up(**kw) -> WorkerHeartbeat:
    """The row a worker with a CUDA device writes when it starts (core.heartbeat: devices, the cuda queue)."""
    now = timezone.now()
    return WorkerHeartbeat.objects.create(hostname=kw.get("hostname", "gpu@h200"), queues="cuda,gpu", pid=1,
                                          started_at=now, last_seen=kw.get("last_seen", now), devices=[H200])


# --- the estimate --------------------------------------------------------------------------------------

def test_estimate_memory_formula_on_a_tiny_structure(tiny_llama):
    info = inspect_model(tiny_llama)
    shapes = info["module_shapes"]
    # The body's Linear weights: 2 layers of q,k,v,o (64x64, 64x32 twice for 2 kv heads of 16) and the MLP.
    per_layer = 64 * 64 + 64 * 32 + 64 * 32 + 64 * 64 + 3 * 64 * 128
    assert linear_params(shapes) == 2 * per_layer
    trainable = 4 * (64 + 64) * 2 + 4 * (64 + 32) * 2  # r=4 on q_proj and v_proj of both layers
    assert estimate_run(info=info, targets=["q_proj", "v_proj"], r=4, task="generation", num_labels=0,
                        n_examples=10, mean_tokens=20, epochs=1, batch_size=2, max_length=16,
                        eval_split=0.2).trainable_params == trainable
    vocab = info["vocab_size"]
    head = 0 if info["tied_embeddings"] else vocab * 64  # an untied LM head is a matrix of its own
    params, tokens = info["parameter_count"] + head, 2 * 16
    logits = vocab * tokens * 4 * 3
    full = gpu_peak_memory(info=info, trainable=trainable, task="generation", batch_size=2, max_length=16)
    assert full == params * 4 + trainable * TRAINABLE_BYTES + tokens * 64 * 2 * ACTIVATION_FACTOR + logits
    nf4 = gpu_peak_memory(info=info, trainable=trainable, task="generation", batch_size=2, max_length=16,
                          quantization="nf4")
    quantized = 2 * per_layer
    assert nf4 == int(quantized * NF4_BYTES_PER_WEIGHT + (params - quantized) * 4 + trainable * TRAINABLE_BYTES
                      + tokens * 64 * (2 * CHECKPOINT_INPUT_BYTES + ACTIVATION_FACTOR) + logits)
    assert nf4 < full

    # The weight term against a real 4-bit load (bitsandbytes, here on the CPU): the NF4 weights and their
    # quantization constants, plus the rest of the model kept in full precision, within 2%.
    model = load_base(str(tiny_llama), task="generation", labels=[], pad_token_id=None, quantization="nf4")
    import bitsandbytes as bnb

    stored = 0
    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            qs = module.weight.quant_state
            stored += module.weight.numel() * module.weight.element_size() + qs.absmax.numel() * qs.absmax.element_size()
            if qs.state2 is not None:
                stored += qs.state2.absmax.numel() * qs.state2.absmax.element_size() + qs.offset.numel() * 4
    assert stored > 0
    rest = sum(p.numel() for n, p in model.named_parameters() if p.dtype != torch.uint8)
    measured = stored + rest * 4  # prepare_model_for_kbit_training keeps the rest in fp32
    formula = quantized * NF4_BYTES_PER_WEIGHT + (params - quantized) * 4
    assert abs(measured - formula) / measured < 0.02, (measured, formula)


def test_estimate_per_epoch_and_qlora_costs_more_time(tiny_llama):
    info = inspect_model(tiny_llama)
    common = dict(info=info, targets=["q_proj", "v_proj"], r=8, task="generation", num_labels=0, n_examples=100,
                  mean_tokens=30, epochs=4, batch_size=4, max_length=64, eval_split=0.2)
    plain, qlora = estimate_run(**common), estimate_run(**common, quantization="nf4")
    # the totals add the start-up (loading, the CUDA context) to the epochs' training loop
    assert plain.gpu_seconds_per_epoch == pytest.approx((plain.gpu_seconds - GPU_STARTUP_SECONDS) / 4)
    assert plain.cpu_seconds_per_epoch == pytest.approx((plain.cpu_seconds - CPU_STARTUP_SECONDS) / 4)
    assert qlora.gpu_seconds > plain.gpu_seconds  # a second forward (checkpointing) and NF4 dequantization
    assert qlora.gpu_memory_bytes < plain.gpu_memory_bytes and qlora.quantization == "nf4"


# --- the training path ---------------------------------------------------------------------------------

@pytest.mark.slow
def test_qlora_training_path_trains_a_4bit_base(tiny_llama, tmp_path):
    """The trainer's QLoRA path, really: bitsandbytes NF4 layers, PEFT's k-bit preparation with gradient
    checkpointing, LoRA on top; the adapter it saves serves on the full-precision base."""
    torch.set_num_threads(1)
    logs: list[str] = []
    from factory.training.trainer import Callbacks

    config = TrainConfig(task="generation", model_path=str(tiny_llama), lora_r=4, lora_alpha=8, lora_dropout=0.0,
                         target_modules=["q_proj", "v_proj"], epochs=2, learning_rate=2e-2, batch_size=4,
                         max_length=24, eval_split=0.25, seed=3, checkpoint_every=0, progress_every_s=0,
                         cpu_threads=1, quantization="nf4", device="cpu")
    result = train(config, [Example(text=t) for t in TEXTS], output_dir=tmp_path / "run",
                   callbacks=Callbacks(on_log=logs.append, on_progress=lambda p: None))
    assert any("QLoRA: base Linear layers in 4-bit NF4" in line for line in logs), logs
    losses = [h["loss"] for h in result.history if h["kind"] == "train"]
    evals = [h["eval_loss"] for h in result.history if h["kind"] == "eval"]
    assert losses and len(evals) == 2 and all(torch.isfinite(torch.tensor([*losses, *evals])))
    # LoRA's B starts at zero: non-zero B means gradients flowed back through the 4-bit layers.
    from safetensors.torch import load_file

    weights = load_file(str(result.adapter_dir / "adapter_model.safetensors"))
    assert all(float(w.abs().max()) > 0 for k, w in weights.items() if "lora_B" in k)
    from peft import PeftModel

    base = load_base(str(tiny_llama), task="generation", labels=[], pad_token_id=None)
    served = PeftModel.from_pretrained(base, str(result.adapter_dir))
    lora = [n for n, _ in served.named_parameters() if "lora_A" in n]
    assert len(lora) == 4  # q_proj and v_proj of both layers


def test_unknown_quantization_is_a_training_error(tiny_llama):
    from factory.training.types import TrainingError

    with pytest.raises(TrainingError, match="Unknown quantization"):
        load_base(str(tiny_llama), task="generation", labels=[], pad_token_id=None, quantization="int3")


# --- offered only with a GPU worker ---------------------------------------------------------------------

def _api():
    api = APIClient()
    api.user = developer(username="qdev")
    api.force_authenticate(api.user)
    return api


@pytest.mark.django_db
def test_qlora_is_refused_without_a_gpu_worker(tiny_bert):
    version = make_version(n=24)
    # A CPU worker on the gpu queue (as on this machine) is not a GPU worker; nor is a stale CUDA worker.
    now = timezone.now()
    WorkerHeartbeat.objects.create(hostname="gpu@cpu-box", queues="gpu", started_at=now, last_seen=now, devices=[])
    gpu_worker_up(hostname="gpu@gone", last_seen=now - timezone.timedelta(minutes=10))
    assert selectors.cuda_workers() == []
    api = _api()
    r = api.post("/api/v1/factory/jobs/", {"datanet_version": version.pk, "base_model": tiny_bert.pk,
                                           "task": "classification", **small_params(), "quantization": "nf4"},
                 format="json")
    assert r.status_code == 400, r.json()
    assert r.json()["error"]["fields"]["quantization"] == [services.ERR_QLORA_NO_GPU]
    assert FineTuneJob.objects.count() == 0

    client = Client()
    client.force_login(api.user)
    page = client.get(reverse("factory:finetune-new")).content.decode()
    assert 'value="nf4"' not in page and "needs a GPU worker; none is connected" in page
    data = {"datanet_version": version.pk, "base_model": tiny_bert.pk, "task": "classification", "preset": "",
            "lora_r": "4", "lora_alpha": "8", "lora_dropout": "0", "target_modules": ["query", "value"],
            "epochs": "2", "learning_rate": "0.005", "batch_size": "8", "max_length": "32", "eval_split": "0.25",
            "seed": "7", "quantization": "nf4"}
    r = client.post(reverse("factory:finetune-new"), data)
    assert r.status_code == 200 and "QLoRA (4-bit NF4) needs a GPU worker" in r.content.decode()
    assert FineTuneJob.objects.count() == 0


@pytest.mark.django_db
def test_qlora_is_offered_with_a_gpu_worker_and_sent_to_the_cuda_queue(tiny_bert):
    version = make_version(n=24)
    gpu_worker_up()
    assert [w["hostname"] for w in selectors.cuda_workers()] == ["gpu@h200"]
    api = _api()
    client = Client()
    client.force_login(api.user)
    page = client.get(reverse("factory:finetune-new")).content.decode()
    assert 'value="nf4"' in page and "NVIDIA H200" in page
    r = api.post("/api/v1/factory/jobs/", {"datanet_version": version.pk, "base_model": tiny_bert.pk,
                                           "task": "classification", **small_params(), "quantization": "nf4"},
                 format="json")
    assert r.status_code == 201, r.json()
    job = FineTuneJob.objects.get(pk=r.json()["id"])
    assert job.hyperparameters["quantization"] == "nf4"
    assert services.train_config_for(job, "/tmp/base").quantization == "nf4"
    assert services.finetune_training_step(job.id, "t1").options["queue"] == CUDA_QUEUE
    plain = api.post("/api/v1/factory/jobs/", {"datanet_version": version.pk, "base_model": tiny_bert.pk,
                                               "task": "classification", **small_params()}, format="json")
    assert plain.status_code == 201 and plain.json()["hyperparameters"]["quantization"] == "none"
    assert "queue" not in services.finetune_training_step(plain.json()["id"], "t2").options  # routes: gpu

    # The estimate for a QLoRA run: peak GPU memory of a 4-bit base and time per epoch.
    r = client.get(reverse("factory:finetune-estimate"), {
        "datanet_version": version.pk, "base_model": tiny_bert.pk, "task": "classification", "lora_r": "4",
        "lora_alpha": "8", "lora_dropout": "0", "target_modules": ["query", "value"], "epochs": "2",
        "learning_rate": "0.005", "batch_size": "8", "max_length": "32", "eval_split": "0.25", "seed": "7",
        "quantization": "nf4"})
    html = r.content.decode()
    assert "Peak GPU memory" in html and "4-bit NF4 base, gradient checkpointing" in html and "per epoch" in html


@pytest.mark.slow
def test_a_real_worker_on_this_cpu_machine_reports_no_cuda_device(start_worker):
    worker = start_worker(queues="gpu")
    row = WorkerHeartbeat.objects.get(hostname=worker.hostname)
    assert row.devices == [] and row.queues == "gpu"  # no CUDA device here: it does not join the cuda queue
    assert selectors.cuda_workers() == []
