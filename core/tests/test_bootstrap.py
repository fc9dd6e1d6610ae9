"""`bootstrap` (run by `make run` every start): roles, and a generation base model built once."""
from django.contrib.auth.models import Group
from django.core.management import call_command

from factory.models import BaseModel


def test_bootstrap_builds_a_generation_base_once(db, settings, tmp_path, capsys):
    settings.MODELS_DIR = tmp_path / "models"
    settings.WEB3_PROVIDER_URI = "http://127.0.0.1:9"  # no chain: deploy is skipped, the rest still runs
    settings.SHARED_DATA_DIR = tmp_path / "no-data"  # seed_demo skips without data; the GPT-2 uses a sample text
    settings.DEMO_BASE_PRETRAIN_STEPS = 30
    BaseModel.objects.filter(tasks__icontains="generation").delete()
    call_command("bootstrap")
    assert {"contributor", "model developer", "curator"} <= set(Group.objects.values_list("name", flat=True))
    generators = [m for m in BaseModel.objects.all() if "generation" in m.tasks]
    assert len(generators) == 1 and (tmp_path / "models" / "base" / "tiny-gpt2-shakespeare" / "config.json").is_file()
    assert generators[0].target_modules  # LoRA targets found by inspecting the built model
    out = capsys.readouterr().out
    first, last = (float(x) for x in out.split("  loss ")[1].split(" in ")[0].split(" -> "))
    assert last < first  # it was pre-trained, not left random
    call_command("bootstrap")  # a second start changes nothing
    assert sum("generation" in m.tasks for m in BaseModel.objects.all()) == 1
    assert "building the demo generation base" not in capsys.readouterr().out
