"""Admin for the ledger: the outbox (retry failed rows), deployments, epochs and claims, governance."""
from django.contrib import admin, messages

from core.errors import ApplicationError
from ledger import governance, services
from ledger.models import (
    ChainParameter,
    ContractDeployment,
    GovernanceProposal,
    LedgerTransaction,
    RewardAccrual,
    RewardClaim,
    RewardEpoch,
)


@admin.register(LedgerTransaction)
class LedgerTransactionAdmin(admin.ModelAdmin):
    list_display = ("id", "kind", "status", "tx_hash", "nonce", "attempts", "short_error", "created_at")
    list_filter = ("status", "kind")
    search_fields = ("idempotency_key", "tx_hash")
    actions = ["retry_failed"]
    # The outbox is written by services and the sender only: editing a row by hand could double a write.
    readonly_fields = [f.name for f in LedgerTransaction._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description="last error")
    def short_error(self, obj):
        return obj.last_error[:120]

    @admin.action(description="Queue the selected failed transactions again")
    def retry_failed(self, request, queryset):
        done, skipped = 0, 0
        for row in queryset:
            try:
                services.ledger_transaction_retry(row=row)
                done += 1
            except ApplicationError:
                skipped += 1
        self.message_user(request, f"{done} queued again; {skipped} skipped (not failed).",
                          messages.SUCCESS if done else messages.WARNING)


@admin.register(ContractDeployment)
class ContractDeploymentAdmin(admin.ModelAdmin):
    list_display = ("name", "chain_id", "address", "block_number", "deployed_at")
    list_filter = ("chain_id",)
    readonly_fields = ("chain_id", "name", "address", "tx_hash", "block_number", "deployed_at")


@admin.register(ChainParameter)
class ChainParameterAdmin(admin.ModelAdmin):
    list_display = ("name", "chain_id", "value", "fetched_at")


class RewardClaimInline(admin.TabularInline):
    model = RewardClaim
    extra = 0
    fields = ("user", "account", "amount_wei", "custodial", "status", "claimed_at")
    readonly_fields = fields
    can_delete = False


@admin.register(RewardEpoch)
class RewardEpochAdmin(admin.ModelAdmin):
    list_display = ("id", "status", "total_wei", "deadline", "created_at")
    list_filter = ("status",)
    readonly_fields = ("root", "total_wei", "deadline", "status", "created_at")
    inlines = [RewardClaimInline]
    actions = ["sweep_due"]

    def has_add_permission(self, request):
        return False  # epochs are closed by the beat task (rewards_epoch_close)

    @admin.action(description="Queue the sweep of epochs past their claim deadline")
    def sweep_due(self, request, queryset):
        swept = services.rewards_epochs_sweep()
        self.message_user(request, f"{len(swept)} epoch(s) queued for sweeping.")


@admin.register(RewardClaim)
class RewardClaimAdmin(admin.ModelAdmin):
    list_display = ("id", "epoch", "user", "account", "amount_wei", "status", "claimed_at")
    list_filter = ("status", "custodial")
    search_fields = ("account", "user__username")
    readonly_fields = ("epoch", "user", "account", "custodial", "amount_wei", "proof", "status", "claimed_at")


@admin.register(RewardAccrual)
class RewardAccrualAdmin(admin.ModelAdmin):
    list_display = ("id", "user", "amount", "source", "reference", "model_id", "epoch", "created_at")
    list_filter = ("source",)
    search_fields = ("reference", "user__username")
    readonly_fields = ("user", "amount", "source", "reference", "model_id", "epoch", "created_at")


@admin.register(GovernanceProposal)
class GovernanceProposalAdmin(admin.ModelAdmin):
    list_display = ("id", "action", "params", "status", "proposer_address", "vote_end", "eta", "executed_at")
    list_filter = ("action", "status")
    readonly_fields = ("action", "params", "description", "proposer_address", "targets", "values", "calldatas",
                       "proposal_id", "status", "proposed_by", "vote_start", "vote_end", "tally", "quorum_wei", "eta",
                       "created_at", "synced_at", "executed_at")
    actions = ["execute"]

    def has_add_permission(self, request):
        return False  # holders propose from the governance pages or the API (ledger.governance)

    @admin.action(description="Execute the selected proposals (once queued and released by the timelock)")
    def execute(self, request, queryset):
        for proposal in queryset:
            try:
                governance.governance_execute(user=request.user, proposal=proposal)
                self.message_user(request, f"Proposal {proposal.pk} queued for execution.")
            except ApplicationError as exc:
                self.message_user(request, f"Proposal {proposal.pk}: {exc.message}", messages.ERROR)
