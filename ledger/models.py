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
    """A proposal to OPEN holders' Governor: one governed parameter change (fee split, a Datanet's terms, the
    epoch length), voted with ERC20Votes, queued in the timelock when it passes, executed after its delay.

    `status` mirrors the Governor's `state()` (refreshed by `governance.proposal_sync`); PROPOSING and FAILED
    are ours: the proposal is in the outbox, or the chain refused it. `targets`/`values`/`calldatas` and
    `description` are exactly what was proposed, so anyone can recompute `proposal_id` (Governor.hashProposal).
    """

    class Action(models.TextChoices):
        FEE_SPLIT = "fee_split", "Reward fee split"
        DATANET_TERMS = "datanet_terms", "Datanet minimum stake and slash rate"
        EPOCH_SECONDS = "epoch_seconds", "Reward epoch length"

    class Status(models.TextChoices):
        PROPOSING = "proposing", "Being proposed"
        PENDING = "pending", "Pending (voting opens soon)"
        ACTIVE = "active", "Voting"
        CANCELED = "canceled", "Canceled"
        DEFEATED = "defeated", "Defeated"
        SUCCEEDED = "succeeded", "Passed (queue it)"
        QUEUED = "queued", "Queued in the timelock"
        EXPIRED = "expired", "Expired"
        EXECUTED = "executed", "Executed"
        FAILED = "failed", "Refused by the chain"

    action = models.CharField(max_length=32, choices=Action.choices, default=Action.FEE_SPLIT)
    params = models.JSONField(default=dict)
    description = models.TextField(blank=True)
    proposer_address = models.CharField(max_length=42, blank=True)
    targets = models.JSONField(default=list, blank=True)
    values = models.JSONField(default=list, blank=True, help_text="wei, as decimal strings")
    calldatas = models.JSONField(default=list, blank=True, help_text="0x-hex")
    proposal_id = models.CharField(max_length=80, blank=True, db_index=True, help_text="Governor proposal id (uint256)")
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.PROPOSING)
    proposed_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                    related_name="governance_proposals")
    vote_start = models.BigIntegerField(null=True, blank=True, help_text="Snapshot block: votes counted as of it")
    vote_end = models.BigIntegerField(null=True, blank=True, help_text="Last block of voting")
    tally = models.JSONField(default=dict, blank=True, help_text="against / for / abstain votes in wei (strings)")
    quorum_wei = models.CharField(max_length=80, blank=True)
    eta = models.DateTimeField(null=True, blank=True, help_text="When the timelock releases it (chain time)")
    created_at = models.DateTimeField(auto_now_add=True)
    synced_at = models.DateTimeField(null=True, blank=True)
    executed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"{self.action} {self.params} [{self.status}]"


class GovernanceVote(models.Model):
    """One account's ballot on a proposal, relayed by the operator with `castVoteBySig` (signed by the server
    for a custodial wallet, or by the holder's own wallet). The weight is read from the chain once cast."""

    class Support(models.IntegerChoices):  # GovernorCountingSimple's order
        AGAINST = 0, "Against"
        FOR = 1, "For"
        ABSTAIN = 2, "Abstain"

    proposal = models.ForeignKey(GovernanceProposal, on_delete=models.CASCADE, related_name="votes")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="governance_votes")
    voter = models.CharField(max_length=42)
    support = models.PositiveSmallIntegerField(choices=Support.choices)
    signature = models.CharField(max_length=200, blank=True, help_text="The holder's own EIP-712 ballot signature")
    cast = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]
        constraints = [models.UniqueConstraint(fields=["proposal", "voter"], name="one_vote_per_voter")]

    def __str__(self) -> str:
        return f"{self.voter} {self.get_support_display()} on proposal {self.proposal_id}"
