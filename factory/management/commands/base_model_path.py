"""Print a catalog base model's folder (what a vLLM server must be started on: `make vllm`)."""
from django.core.management.base import BaseCommand, CommandError
from django.db.models import Q

from core.errors import ApplicationError
from factory.models import BaseModel
from factory.services import base_model_check


class Command(BaseCommand):
    help = "Print the folder of the base model with this catalog name or id."

    def add_arguments(self, parser):
        parser.add_argument("name", help="catalog name or id")

    def handle(self, *args, name, **options):
        query = Q(name=name) | Q(pk=int(name)) if name.isdigit() else Q(name=name)
        model = BaseModel.objects.filter(query).first()
        if model is None:
            raise CommandError(f"No base model named {name!r} in the catalog.")
        try:
            self.stdout.write(base_model_check(model))
        except ApplicationError as exc:
            raise CommandError(exc.message) from None
