"""`manage.py ledger_audit`: every outbox row against the chain's events; exit 1 on any mismatch."""
from django.core.management.base import BaseCommand, CommandError

from ledger.audit import ledger_audit


class Command(BaseCommand):
    help = "Check every confirmed or failed outbox row against the chain's events; exit 1 on any mismatch."

    def handle(self, *args, **options):
        audit = ledger_audit()
        if audit.error:
            raise CommandError(f"could not read the chain: {audit.error}")
        for c in audit.mismatches:
            self.stdout.write(f"MISMATCH {c.kind} #{c.row_id} {c.subject}: database {c.database} | chain {c.chain}")
        for k in audit.by_kind():
            self.stdout.write(f"{k['kind']:<22} {k['checked']:>6} checked  {k['mismatches']:>4} mismatched")
        if audit.pending:
            self.stdout.write(f"{audit.pending} rows still on their way (queued or sent), not judged")
        if audit.mismatches:
            raise CommandError(f"{len(audit.mismatches)} mismatches between the database and the chain")
        self.stdout.write(self.style.SUCCESS(f"ledger audit: {len(audit.checks)} rows agree with the chain"))
