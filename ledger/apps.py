from django.apps import AppConfig


class LedgerConfig(AppConfig):
    name = "ledger"
    verbose_name = "Ledger"

    def ready(self):
        # The governance kinds join the outbox sender's tables (the sender itself knows no governance).
        # Imported here: an AppConfig module is loaded before the app registry is ready (Django's rule).
        from core.services import health_check_register
        from ledger import governance_outbox, stake_outbox
        from ledger.client import chain_health

        governance_outbox.register()
        stake_outbox.register()  # an accepted stake's bond: slash within it, release after it
        health_check_register("chain", chain_health)  # core's /healthz imports no app: the ledger adds it
