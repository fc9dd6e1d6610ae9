"""Recompute a DatanetVersion's Merkle root from its records and from its Arrow export."""
from django.core.management.base import BaseCommand, CommandError

from datanets.models import DatanetVersion
from datanets.services import version_verify


class Command(BaseCommand):
    help = "Check a Datanet version: recompute every record hash and the Merkle root from the database and the export."

    def add_arguments(self, parser):
        parser.add_argument("version_id", type=int)

    def handle(self, *args, version_id: int, **options):
        version = DatanetVersion.objects.select_related("datanet").filter(pk=version_id).first()
        if version is None:
            raise CommandError(f"No Datanet version with id {version_id}.")
        check = version_verify(version=version)
        self.stdout.write(f"version      {version} ({version.record_count} records)")
        self.stdout.write(f"stored root  {check.stored_root}")
        self.stdout.write(f"records root {check.db_root}")
        self.stdout.write(f"export root  {check.export_root or '(no export found)'} ({check.export_rows} rows)")
        if check.bad_hashes:
            self.stdout.write(f"records whose stored hash does not match their text and label: {check.bad_hashes[:20]}")
        if not check.ok:
            raise CommandError("MISMATCH: the version does not verify.")
        self.stdout.write(self.style.SUCCESS("OK: the records and the export both give the stored root."))
