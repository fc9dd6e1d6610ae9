from decimal import Decimal

from django.conf import settings
from django.db import models

from core.fields import ExactDecimalField

TOKEN_DIGITS = dict(max_digits=38, decimal_places=18)
WEI_DIGITS = dict(max_digits=78, decimal_places=0)


class LedgerTransaction(models.Model):
    """The outbox: one chain write, recorded in the same database transaction as the change it records.

    The ledger worker sends rows in id order; the idempotency key makes a retried enqueue a no-op.
    """

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        SENT = "sent", "Sent"
        CONFIRMED = "confirmed", "Confirmed"
        FAILED = "failed", "Failed"

    kind = models.CharField(max_length=64, db_index=True)
    payload = models.JSONField(default=dict)
    idempotency_key = models.CharField(max_length=200, unique=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED, db_index=True)
    tx_hash = models.CharField(max_length=66, blank=True)
    nonce = models.BigIntegerField(null=True, blank=True)
    block_number = models.BigIntegerField(null=True, blank=True)
    block_hash = models.CharField(max_length=66, blank=True,
                                  help_text="The block of the confirming receipt; re-checked until finality (reorgs).")
    raw_tx = models.TextField(blank=True, help_text="The signed transaction, kept for a rebroadcast after a crash.")
    broadcasts = models.JSONField(default=list, blank=True, help_text=(
        "Every signed transaction and event of this row, oldest first: tx hash, nonce, fees and the head block "
        "when sent (a replacement adds one with the same nonce), and reorgs that dropped it."))
    from_address = models.CharField(max_length=42, blank=True)
    steps = models.PositiveIntegerField(default=0, help_text="Transactions confirmed for this row.")
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    confirmed_at = models.DateTimeField(null=True, blank=True)
    finalized_at = models.DateTimeField(null=True, blank=True,
                                        help_text="When LEDGER_FINALITY_DEPTH blocks were on the confirmation.")

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.kind} [{self.status}] {self.idempotency_key}"



class ContractDeployment(models.Model):
    """Where our contracts live on a chain; `deploy_contracts` writes these rows."""

    chain_id = models.BigIntegerField()
    name = models.CharField(max_length=64)
    address = models.CharField(max_length=42)
    tx_hash = models.CharField(max_length=66, blank=True)
    block_number = models.BigIntegerField(null=True, blank=True)
    deployed_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["chain_id", "name"]
        constraints = [models.UniqueConstraint(fields=["chain_id", "name"], name="unique_contract_per_chain")]

    def __str__(self) -> str:
        return f"{self.name}@{self.address} (chain {self.chain_id})"


class ChainParameter(models.Model):
    """A value read from the chain and cached (e.g. the governance fee split)."""

    chain_id = models.BigIntegerField()
    name = models.CharField(max_length=64)
    value = models.JSONField(default=dict)
    fetched_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["chain_id", "name"], name="unique_parameter_per_chain")]

    def __str__(self) -> str:
        return f"{self.name} on chain {self.chain_id}"


class RewardEpoch(models.Model):
    """One settlement: the Merkle root of every account's cumulative total in its generation, published and
    funded on-chain up to the sum of those totals; its pk is the epoch id. `tree` is the full tree in
    OpenZeppelin's `StandardMerkleTree.dump()` format (amounts as exact decimal strings), downloadable by anyone.
    """

    class Status(models.TextChoices):
        PUBLISHING = "publishing", "Publishing"
        PUBLISHED = "published", "Published"
        SWEEPING = "sweeping", "Sweeping unclaimed"
        SWEPT = "swept", "Closed (unclaimed swept)"

    root = models.CharField(max_length=66)
    total_wei = ExactDecimalField(**WEI_DIGITS)
    deadline = models.DateTimeField()
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.PUBLISHING)
    generation = models.PositiveIntegerField(default=0, help_text="Bumped by each sweep; totals restart from zero.")
    tree = models.JSONField(default=dict, blank=True, help_text="StandardMerkleTree dump of (account, cumulative wei).")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"epoch {self.pk}"

    @property
    def funded_wei(self) -> int:
        """What the contract holds funded once this epoch is published: the sum of its cumulative totals."""
        return sum(int(v["value"][1]) for v in (self.tree or {}).get("values", []))

    @property
    def total(self) -> Decimal:
        return self.total_wei / Decimal(10**18)


class RewardClaim(models.Model):
    """What one account earned in an epoch (`amount_wei`), with its cumulative total in that epoch's tree and the
    proof of it. Claims are cumulative on-chain: one claim collects this and every earlier row of the generation."""

    class Status(models.TextChoices):
        UNCLAIMED = "unclaimed", "Unclaimed"
        QUEUED = "queued", "Claim queued"
        CLAIMED = "claimed", "Claimed"
        EXPIRED = "expired", "Expired (swept)"

    epoch = models.ForeignKey(RewardEpoch, on_delete=models.CASCADE, related_name="claims")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="reward_claims")
    account = models.CharField(max_length=42)
    custodial = models.BooleanField(default=True)
    amount_wei = ExactDecimalField(**WEI_DIGITS)
    cumulative_wei = ExactDecimalField(**WEI_DIGITS, default=0,
                                       help_text="The account's leaf in this epoch's tree: its total earned so far.")
    proof = models.JSONField(default=list)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.UNCLAIMED)
    claimed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-epoch_id", "id"]
        constraints = [models.UniqueConstraint(fields=["epoch", "account"], name="unique_claim_per_account")]

    def __str__(self) -> str:
        return f"claim {self.account} in epoch {self.epoch_id}"

    @property
    def amount(self) -> Decimal:
        return self.amount_wei / Decimal(10**18)


class RewardAccrual(models.Model):
    """OPEN owed to a user for one source event (an inference fee, a bonus); settled in an epoch."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="reward_accruals")
    amount = ExactDecimalField(**TOKEN_DIGITS)
    source = models.CharField(max_length=64)
    reference = models.CharField(max_length=200)
    model_id = models.BigIntegerField(null=True, blank=True, db_index=True)
    epoch = models.ForeignKey(RewardEpoch, null=True, blank=True, on_delete=models.PROTECT, related_name="accruals")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(fields=["source", "reference", "user"], name="unique_accrual_per_event"),
        ]

    def __str__(self) -> str:
        return f"{self.amount} OPEN to user {self.user_id} for {self.source}:{self.reference}"


class GovernanceProposal(models.Model):
    """A parameter change sent through the governance timelock (today: the reward fee split).

    Scheduled through the outbox; executable by anyone in the executor set once the timelock's delay passed.
    """

    class Status(models.TextChoices):
        SCHEDULING = "scheduling", "Scheduling"
        SCHEDULED = "scheduled", "Scheduled (waiting for the timelock)"
        EXECUTING = "executing", "Executing"
        EXECUTED = "executed", "Executed"

    action = models.CharField(max_length=32, default="fee_split")
    params = models.JSONField(default=dict)
    salt = models.CharField(max_length=66, unique=True)
    operation_id = models.CharField(max_length=66, blank=True)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.SCHEDULING)
    proposed_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                    related_name="governance_proposals")
    ready_at = models.DateTimeField(null=True, blank=True, help_text="When the timelock releases it (chain time).")
    created_at = models.DateTimeField(auto_now_add=True)
    executed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"{self.action} {self.params} [{self.status}]"
