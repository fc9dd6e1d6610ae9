"""Deploy the ledger contracts to WEB3_PROVIDER_URI and record their addresses in the database."""
from django.core.management.base import BaseCommand, CommandError

from ledger import client
from ledger.deploy import contracts_deploy


class Command(BaseCommand):
    help = "Deploy OpenToken, Governance, DatanetRegistry, ModelRegistry and RewardDistributor."

    def add_arguments(self, parser):
        parser.add_argument("--if-needed", action="store_true", dest="if_needed",
                            help="Only deploy when the recorded contracts have no code on this chain.")
        parser.add_argument("--no-replay", action="store_false", dest="replay",
                            help="After a redeploy, do not queue the outbox history again.")

    def handle(self, *args, if_needed=False, replay=True, **options):
        try:
            signer = client.get_signer()
            addresses = contracts_deploy(signer=signer, if_needed=if_needed, replay=replay)
        except client.ChainConfigError as exc:
            if if_needed:  # bootstrap on a machine without a chain: say so, do not stop the app
                self.stderr.write(f"deploy_contracts skipped: {exc}")
                return
            raise CommandError(str(exc)) from exc
        except client.ChainError as exc:
            if if_needed:
                self.stderr.write(f"deploy_contracts skipped: {exc}")
                return
            raise CommandError(str(exc)) from exc
        for name, address in addresses.items():
            self.stdout.write(f"{name}: {address} (chain {signer.chain_id})")
