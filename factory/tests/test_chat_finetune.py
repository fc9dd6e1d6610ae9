"""Chat bases in the catalog (their chat template, the tokenizer's or the catalog's), an instruction Datanet
ingested through the real services and fine-tuned by the real job path, and the demo chat base pre-trained
by a real Celery worker on the gpu queue."""
import json
import time
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command

from core.errors import ApplicationError
from datanets import services as datanet_services
from datanets.models import Datanet
from datanets.tests.factories import DatanetFactory, contributor, curator_of
from factory import services
from factory.models import BaseModel, FineTunedModel
from factory.tests.factories import developer
from factory.training.chat import has_generation_markers
from factory.training.tiny import build_tiny_causal_lm

pytestmark = pytest.mark.django_db

CUSTOM = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}</{{ m['role'] }}>{% endfor %}"


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    return build_tiny_causal_lm(tmp_path_factory.mktemp("tiny-llama"), family="llama")


def chat_version(n: int = 24):
    """An instruction Datanet: half its conversations uploaded as chat JSONL, half as prompt/response CSV,
    ingested, accepted and frozen through the datanets services."""
    datanet = DatanetFactory(task=Datanet.Task.CHAT, labels=[])
    cora = curator_of(datanet)
    lines = [json.dumps({"messages": [{"role": "user", "content": f"What follows {i}?"},
                                      {"role": "assistant", "content": f"{i + 1} follows {i}."}]})
             for i in range(n // 2)]
    csv_rows = "prompt,response\n" + "".join(f"Name the number after {i},It is {i + 1}.\n" for i in range(n // 2))
    for user, name, content in ((contributor("ann"), "chat.jsonl", "\n".join(lines).encode()),
                                (contributor("ben"), "pairs.csv", csv_rows.encode())):
        result = datanet_services.contribution_upload(datanet=datanet, contributor=user, inline=True, file_name=name,
                                                      file=SimpleUploadedFile(name, content))
        assert result.contribution.record_count == n // 2, result.contribution.ingest_errors
        datanet_services.contribution_accept(contribution=result.contribution, curator=cora)
    return datanet_services.datanet_version_create(datanet=datanet, user=cora)


def chat_params(**kw) -> dict:
    params = {"lora_r": 4, "lora_alpha": 8, "lora_dropout": 0.0, "target_modules": ["q_proj", "v_proj"],
              "epochs": 2, "learning_rate": 1e-2, "batch_size": 8, "max_length": 64, "eval_split": 0.25, "seed": 7}
    params.update(kw)
    return params


def test_a_chat_base_keeps_its_tokenizers_template_or_the_catalogs(llama_dir, tmp_path, capsys):
    own = services.base_model_register(path=str(llama_dir), name="tiny-llama")
    assert own.chat_template_source == "tokenizer" and has_generation_markers(own.chat_template)
    assert own.architecture == "llama" and own.tasks == ["generation", "classification"]
    template_file = tmp_path / "template.jinja"
    template_file.write_text(CUSTOM)
    call_command("register_base_model", str(llama_dir), name="tiny-llama-custom", chat_template=str(template_file))
    assert "chat template: catalog" in capsys.readouterr().out
    assert BaseModel.objects.get(name="tiny-llama-custom").chat_template == CUSTOM
    with pytest.raises(ApplicationError, match="Chat template of .*does not render"):
        services.base_model_register(path=str(llama_dir), name="broken", chat_template="{% for m in messages %}")
    with pytest.raises(CommandError, match="Cannot read the chat template"):
        call_command("register_base_model", str(llama_dir), chat_template=str(tmp_path / "missing.jinja"))


def test_admin_sets_a_bases_chat_template_and_keeps_it_on_reinspect(client, llama_dir):
    from accounts.tests.factories import UserFactory

    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    form = {"name": "llama-admin", "source_kind": "local", "source": str(llama_dir), "description": "",
            "tasks": "[]", "chat_template": CUSTOM, "is_active": "on"}
    page = client.post("/admin/factory/basemodel/add/", {**form, "chat_template": "{% if %}"})
    assert page.status_code == 200 and "does not render a conversation" in page.content.decode()
    assert client.post("/admin/factory/basemodel/add/", form).status_code == 302
    base = BaseModel.objects.get(name="llama-admin")
    assert base.chat_template == CUSTOM and base.chat_template_source == "catalog" and base.architecture == "llama"
    client.post("/admin/factory/basemodel/", {"action": "reinspect", "_selected_action": [base.id]})
    base.refresh_from_db()
    assert base.chat_template == CUSTOM and base.chat_template_source == "catalog"
    page = client.post("/admin/factory/basemodel/add/", {**form, "name": "llama-own", "chat_template": ""})
    assert page.status_code == 302
    own = BaseModel.objects.get(name="llama-own")
    assert own.chat_template_source == "tokenizer" and has_generation_markers(own.chat_template)


def test_an_instruction_datanet_fine_tunes_on_assistant_tokens_through_the_job(llama_dir, settings, tmp_path):
    settings.MODELS_DIR = tmp_path
    settings.FACTORY_PROGRESS_SECONDS = 0
    base = services.base_model_register(path=str(llama_dir), name="tiny-llama")
    version = chat_version()
    job = services.finetune_job_create(owner=developer(), datanet_version=version, base_model=base,
                                       task="generation", params=chat_params(packing=True))
    assert job.hyperparameters["packing"] is True
    job = services.finetune_job_run(job_id=job.id, hostname="w@test")
    assert job.status == "succeeded", job.error
    assert "conversations: loss on the assistant's tokens only" in job.log and "rows (packed)" in job.log
    model = FineTunedModel.objects.get(job=job)
    meta = json.loads((Path(model.adapter_dir) / "factory.json").read_text())
    assert meta["chat"] is True and meta["config"]["packing"] is True
    assert meta["config"]["chat_template"] == base.chat_template
    assert isinstance(services.finetuned_model_predict(model=model, text="What follows 3?")["text"], str)


def test_conversations_need_a_base_with_a_chat_template_and_packing_a_language_model(tiny_gpt2_dir, llama_dir):
    gpt = services.base_model_register(path=str(tiny_gpt2_dir), name="tiny-gpt2")
    version = chat_version(n=8)
    with pytest.raises(ApplicationError) as err:
        services.finetune_job_create(owner=developer(), datanet_version=version, base_model=gpt, task="generation",
                                     params=chat_params(target_modules=["c_attn"]))
    assert "tiny-gpt2 has no chat template" in err.value.extra["errors"]["base_model"]
    llama = services.base_model_register(path=str(llama_dir), name="tiny-llama")
    with pytest.raises(ApplicationError) as err:
        services.finetune_params_validate(datanet_version=version, base_model=llama, task="classification",
                                          params=chat_params(packing="on"))
    assert err.value.extra["errors"]["packing"] == services.ERR_PACKING_CLASSIFICATION


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_the_demo_chat_base_is_pre_trained_by_a_gpu_worker_and_joins_the_catalog(start_worker, client, settings, tmp_path):
    settings.MODELS_DIR = tmp_path
    base = services.base_model_build_enqueue(steps=4)
    assert base.status == "queued" and not base.is_active
    assert not services.base_model_build_stale(base)
    page = client.get("/factory/base-models/").content.decode()
    assert "Being built on this machine" in page and "step 0 of 4" in page
    assert base not in services.BaseModel.objects.filter(is_active=True)

    worker = start_worker(queues="gpu", MODELS_DIR=tmp_path, FACTORY_PROGRESS_SECONDS=0, FACTORY_CPU_THREADS=1)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        base.refresh_from_db()
        if base.status in ("ready", "failed"):
            break
        time.sleep(0.2)
    assert base.status == "ready", f"{base.status} {base.build}\n{worker.log()}"
    assert base.is_active and base.architecture == "llama" and base.tasks == ["generation"]
    assert base.build["step"] == 4 and base.build["last_loss"] > 0 and base.build["first_loss"] > 0
    assert 4_000_000 < base.parameter_count < 7_000_000 and base.vocab_size == 8000
    assert base.chat_template_source == "tokenizer" and has_generation_markers(base.chat_template)
    page = client.get("/factory/base-models/").content.decode()
    assert "Being built on this machine" not in page and services.DEMO_CHAT_BASE in page
    # a message of an older build (another token) is a no-op
    assert services.base_model_build_run(base_model_id=base.id, token="old") is None
