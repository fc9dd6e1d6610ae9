"""Recompute a model's attribution (weights) root from its weights file and check it against the chain."""
import json
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from attribution.publication import attribution_file_verify, publication_get
from core.errors import ApplicationError
from factory.models import FineTunedModel

EXIT_MISMATCH = 1  # the file does not make the root on-chain (or is inconsistent in itself)
EXIT_UNCHECKED = 2  # no model, no file, or the chain could not be read: nothing was compared


class Command(BaseCommand):
    help = ("Recompute the Merkle root of a model's contributor weights from the weights file (the one the model "
            "page and GET /api/v1/models/<id>/attribution-weights serve, or --file) and compare it with the root "
            "ModelRegistry holds on-chain. Exit 0 when they match, 1 when they do not, 2 when nothing could be compared.")

    def add_arguments(self, parser):
        parser.add_argument("model_id", type=int)
        parser.add_argument("--file", default="", help="a downloaded weights file (default: the published one)")

    def handle(self, *args, model_id: int, file: str = "", **options):
        model = FineTunedModel.objects.filter(pk=model_id).first()
        if model is None:
            raise CommandError(f"no model {model_id}", returncode=EXIT_UNCHECKED)
        if file:
            try:
                document = json.loads(Path(file).read_text())
            except (OSError, ValueError) as exc:
                raise CommandError(f"cannot read {file}: {exc}", returncode=EXIT_UNCHECKED) from None
            if not isinstance(document, dict):
                raise CommandError(f"{file} is not a weights file (a JSON object)", returncode=EXIT_MISMATCH)
        else:
            try:
                document = publication_get(model=model).document
            except ApplicationError as exc:
                raise CommandError(exc.message, returncode=EXIT_UNCHECKED) from None
        result = attribution_file_verify(model=model, document=document)
        self.stdout.write(f"model {model.pk} adapter 0x{model.adapter_sha256}")
        self.stdout.write(f"root from file:  {result['file_root'] or '(none: the file is unreadable)'}")
        self.stdout.write(f"root on-chain:   {result['chain_root'] or '(unread)'}")
        if result["ok"]:
            self.stdout.write(self.style.SUCCESS("OK: the weights file makes the root registered on-chain"))
            return
        for problem in result["problems"]:
            self.stderr.write(f"- {problem}")
        code = EXIT_UNCHECKED if result["chain_error"] else EXIT_MISMATCH
        raise CommandError("MISMATCH" if code == EXIT_MISMATCH else "NOT CHECKED", returncode=code)
