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
