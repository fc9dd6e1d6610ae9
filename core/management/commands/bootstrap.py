"""First-run set-up that `make run` calls every time: each step runs once and then is skipped."""
from pathlib import Path

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand

from accounts.services import roles_ensure

# Steps that later parts of the product add: (command name, marker of completion).
STEPS = ("deploy_contracts", "seed_demo")
DEMO_GENERATOR = "tiny-gpt2 (Shakespeare)"


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
        """No weights can be downloaded here, so the demo's generation fine-tunes need a base built on this
        machine: a small GPT-2 whose tokenizer and weights are trained on Tiny Shakespeare (a random one only
        emits noise). Built once, when the catalog has no generator."""
        from factory.models import BaseModel
        from factory.services import base_model_register
        from factory.training.tiny import SAMPLE_TEXT, build_demo_generator

        if any("generation" in (m.tasks or []) for m in BaseModel.objects.all()):
            return
        self.stdout.write(f"bootstrap: building the demo generation base {DEMO_GENERATOR!r} "
                          f"({settings.DEMO_BASE_PRETRAIN_STEPS} pre-training steps)")
        corpus = Path(settings.SHARED_DATA_DIR) / "tinyshakespeare.txt"
        texts = corpus.read_text(encoding="utf-8").splitlines() if corpus.is_file() else list(SAMPLE_TEXT) * 50
        path = Path(settings.MODELS_DIR) / "base" / "tiny-gpt2-shakespeare"
        result = build_demo_generator(path, texts=texts, steps=settings.DEMO_BASE_PRETRAIN_STEPS, log=self.stdout.write)
        if result is not None:
            self.stdout.write(f"  loss {result['first_loss']:.2f} -> {result['last_loss']:.2f} "
                              f"in {result['seconds']:.0f}s")
        base_model_register(path=str(path), name=DEMO_GENERATOR, tasks=["generation"],
                            description="A small GPT-2 (2 layers, 128 wide) built and pre-trained on this machine "
                                        "on Tiny Shakespeare, for trying generation fine-tunes and span attribution.")
