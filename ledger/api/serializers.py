from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from ledger.models import (
    ContractDeployment,
    LedgerTransaction,
    RewardAccrual,
    RewardClaim,
    RewardEpoch,
)


@extend_schema_field(OpenApiTypes.STR)
class WeiAsOpen(serializers.Field):
    """A wei amount as a decimal string of OPEN (exact; never a float)."""

    def to_representation(self, value):
        from ledger.templatetags.ledger_tags import open_from_wei

        return open_from_wei(value)


class BalancesSerializer(serializers.Serializer):
    address = serializers.CharField()
    custodial = serializers.BooleanField(help_text="True: a server-held demo wallet; the server claims for it.")
    on_chain = serializers.DecimalField(max_digits=38, decimal_places=18, allow_null=True,
                                        help_text="OPEN held by the address now; null when the chain is down.")
    pending = serializers.DecimalField(max_digits=38, decimal_places=18, help_text="Accrued, not in an epoch yet.")
    claimable = serializers.DecimalField(max_digits=38, decimal_places=18)
    claimed = serializers.DecimalField(max_digits=38, decimal_places=18)
    chain_error = serializers.CharField()


class AccrualSerializer(serializers.ModelSerializer):
    class Meta:
        model = RewardAccrual
        fields = ("id", "amount", "source", "reference", "model_id", "epoch", "created_at")


class ClaimSerializer(serializers.ModelSerializer):
    amount = WeiAsOpen(source="amount_wei")
    amount_wei = serializers.CharField(help_text="What the account earned in this epoch (wei)")
    cumulative_wei = serializers.CharField(help_text=(
        "The account's total so far in this epoch's tree: RewardDistributor.claim(account, cumulative_wei, proof) "
        "pays it minus what the account already claimed"))
    epoch_status = serializers.CharField(source="epoch.status")

    class Meta:
        model = RewardClaim
        fields = ("id", "epoch", "epoch_status", "account", "custodial", "amount", "amount_wei", "cumulative_wei",
                  "proof", "status", "claimed_at")


class EpochSerializer(serializers.ModelSerializer):
    total = WeiAsOpen(source="total_wei")
    accounts = serializers.IntegerField()
    claimed = WeiAsOpen(source="claimed_wei")

    class Meta:
        model = RewardEpoch
        fields = ("id", "status", "generation", "root", "total", "accounts", "claimed", "deadline", "created_at")


class TransactionSerializer(serializers.ModelSerializer):
    class Meta:
        model = LedgerTransaction
        fields = ("id", "kind", "payload", "idempotency_key", "status", "tx_hash", "nonce", "block_number", "steps",
                  "attempts", "last_error", "created_at", "updated_at", "confirmed_at")


class ContractSerializer(serializers.ModelSerializer):
    class Meta:
        model = ContractDeployment
        fields = ("name", "address", "chain_id", "block_number", "tx_hash")


class ChainSerializer(serializers.Serializer):
    ok = serializers.BooleanField()
    detail = serializers.CharField()
    chain_id = serializers.IntegerField(required=False)
    block = serializers.IntegerField(required=False)
    contracts = ContractSerializer(many=True)
    fee_split = serializers.DictField(child=serializers.DecimalField(max_digits=6, decimal_places=4))
