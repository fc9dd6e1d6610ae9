from django.apps import AppConfig


class LedgerConfig(AppConfig):
    name = "ledger"
    verbose_name = "Ledger"

    def ready(self):
        # The governance kinds join the outbox sender's tables (the sender itself knows no governance).
        from ledger import governance_outbox, stake_outbox

        governance_outbox.register()
        stake_outbox.register()  # an accepted stake's bond: slash within it, release after it
