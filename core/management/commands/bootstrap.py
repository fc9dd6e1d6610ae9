"""First-run set-up that `make run` calls every time: each step runs once and then is skipped."""
from django.core.management import call_command
from django.core.management.base import BaseCommand

from accounts.services import roles_ensure

# Steps that later parts of the product add: (command name, marker of completion).
STEPS = ("deploy_contracts", "seed_demo")


class Command(BaseCommand):
    help = "Ensure roles, deploy contracts and seed the demo once; later runs skip what is done."

    def handle(self, *args, **options):
        from django.core.management import get_commands

        roles_ensure()
        available = get_commands()
        for step in STEPS:
            if step in available:
                self.stdout.write(f"bootstrap: {step}")
                call_command(step, if_needed=True)
        self._generation_base_ensure()

    def _generation_base_ensure(self):
        """No weights can be downloaded here, so the demo's generation fine-tunes need a locally built base:
        a tiny GPT-2 (tokenizer from Tiny Shakespeare), built once when the catalog has no generator."""
        from factory.models import BaseModel

        if any("generation" in (m.tasks or []) for m in BaseModel.objects.all()):
            return
        self.stdout.write("bootstrap: register_base_model --tiny-gpt2")
        call_command("register_base_model", tiny_gpt2=True)
