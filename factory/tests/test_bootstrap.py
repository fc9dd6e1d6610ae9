"""`bootstrap` (run by `make run` every start): roles, and the demo chat base's pre-training queued once
(a gpu worker runs it after the app is up: factory/tests/test_chat_finetune.py)."""
from django.contrib.auth.models import Group
from django.core.management import call_command

from factory.models import BaseModel
from factory.services import DEMO_CHAT_BASE


def test_bootstrap_queues_the_demo_chat_base_once(db, settings, tmp_path, capsys):
    settings.MODELS_DIR = tmp_path / "models"
    settings.WEB3_PROVIDER_URI = "http://127.0.0.1:9"  # no chain: deploy is skipped, the rest still runs
    settings.SHARED_DATA_DIR = tmp_path / "no-data"  # seed_demo skips without data
    settings.DEMO_BASE_PRETRAIN_STEPS = 30
    call_command("bootstrap")
    assert {"contributor", "model developer", "curator"} <= set(Group.objects.values_list("name", flat=True))
    base = BaseModel.objects.get(name=DEMO_CHAT_BASE)
    # queued for the worker, not built here: `make run` serves pages at once, the base joins when ready
    assert base.status == "queued" and not base.is_active and base.build["total_steps"] == 30
    assert not (tmp_path / "models" / "base" / "shakespeare-chat").exists()
    assert "pre-training of the demo chat base" in capsys.readouterr().out
    token = base.build["token"]
    call_command("bootstrap")  # a second start while it is fresh changes nothing
    base.refresh_from_db()
    assert base.build["token"] == token and "pre-training" not in capsys.readouterr().out
    BaseModel.objects.filter(pk=base.pk).update(status="failed")
    call_command("bootstrap")  # a failed build is queued again, under a new token
    base.refresh_from_db()
    assert base.status == "queued" and base.build["token"] != token
