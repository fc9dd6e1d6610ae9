"""First-run set-up that `make run` calls every time: each step runs once and then is skipped.

In the factory (not core): it queues a base model's build, and core imports no app above it. The later steps
are called by command name, so the apps that provide them are not imported."""
from django.core.management import call_command, get_commands
from django.core.management.base import BaseCommand

from accounts.services import roles_ensure
from factory.models import BaseModel
from factory.services import DEMO_CHAT_BASE, base_model_build_enqueue, base_model_build_stale

# Steps that later parts of the product add: (command name, marker of completion).
STEPS = ("deploy_contracts", "seed_demo")


class Command(BaseCommand):
    help = ("Ensure roles, deploy contracts and seed the demo once; queue the demo chat base's pre-training. "
            "Later runs skip what is done.")

    def handle(self, *args, **options):
        roles_ensure()
        available = get_commands()
        for step in STEPS:
            if step in available:
                self.stdout.write(f"bootstrap: {step}")
                call_command(step, if_needed=True)
        self._chat_base_ensure()

    def _chat_base_ensure(self):
        """No weights can be downloaded here, so the demo's generation base is built on this machine: a
        small Llama chat model whose tokenizer and weights are trained on Tiny Shakespeare. Its pre-training
        takes minutes, so it runs as a gpu-queue job once the worker is up (progress on the catalog page)
        and the base joins the catalog when ready; `make run` serves pages meanwhile."""
        model = BaseModel.objects.filter(name=DEMO_CHAT_BASE).first()
        if model is not None and not base_model_build_stale(model):
            return
        model = base_model_build_enqueue(name=DEMO_CHAT_BASE)
        self.stdout.write(f"bootstrap: pre-training of the demo chat base {model.name!r} queued "
                          f"({model.build['total_steps']} steps; it joins the catalog when done)")
