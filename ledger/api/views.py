"""REST API of the ledger: a user's balances, accruals and claims (and a claim request), reward epochs,
the contracts, and for staff the outbox (with retry); governance is in ledger/api/governance.py. Thin over selectors/services."""
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.permissions import IsAdminUser, IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from core.api import PaginatedApi, query_choice
from ledger import selectors, services
from ledger.api.serializers import (
    AccrualSerializer,
    BalancesSerializer,
    ChainSerializer,
    ClaimSerializer,
    EpochSerializer,
    TransactionSerializer,
)
from ledger.models import LedgerTransaction, RewardClaim, RewardEpoch

TAGS = ["ledger"]
ERROR = OpenApiResponse(description="`error.message` says why")


class BalancesApi(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(tags=TAGS, responses=BalancesSerializer, summary="My wallet address and OPEN balances")
    def get(self, request):
        return Response(BalancesSerializer(selectors.balances_for(user=request.user)).data)


class AccrualListApi(PaginatedApi):
    permission_classes = [IsAuthenticated]

    @extend_schema(tags=TAGS, responses=AccrualSerializer(many=True), summary="My reward accruals")
    def get(self, request):
        return self.paginate(selectors.accrual_list(user=request.user), AccrualSerializer)


class ClaimListApi(PaginatedApi):
    permission_classes = [IsAuthenticated]

    @extend_schema(tags=TAGS, responses=ClaimSerializer(many=True),
                   summary="My claims, with the Merkle proof for claiming from my own wallet")
    def get(self, request):
        return self.paginate(selectors.claim_list(user=request.user), ClaimSerializer)


class ClaimRequestApi(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(tags=TAGS, request=None, responses={202: ClaimSerializer, 400: ERROR, 404: ERROR},
                   summary="Claim a reward (custodial wallets: the server claims; own wallets: 400 with the proof)")
    def post(self, request, claim_id: int):
        claim = get_object_or_404(RewardClaim.objects.select_related("epoch"), pk=claim_id, user=request.user)
        claim = services.reward_claim_request(claim=claim, user=request.user)
        return Response(ClaimSerializer(claim).data, status=status.HTTP_202_ACCEPTED)


class EpochListApi(PaginatedApi):
    permission_classes = [IsAuthenticated]

    @extend_schema(tags=TAGS, responses=EpochSerializer(many=True), summary="Reward epochs")
    def get(self, request):
        return self.paginate(selectors.epoch_list(), EpochSerializer)


class EpochTreeApi(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(tags=TAGS, responses={200: OpenApiResponse(description=(
        "OpenZeppelin StandardMerkleTree dump (format standard-v1: leafEncoding, tree, values with treeIndex; amounts "
        "as decimal strings) plus root, epoch, generation, status and proofs[i] for values[i]")), 404: ERROR},
        summary="An epoch's full reward tree: (account, cumulative wei) leaves and every proof")
    def get(self, request, epoch_id: int):
        return Response(services.epoch_tree_download(epoch=get_object_or_404(RewardEpoch, pk=epoch_id)))


class ChainApi(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(tags=TAGS, responses=ChainSerializer, summary="Chain status, contract addresses, fee split")
    def get(self, request):
        overview = selectors.chain_overview()
        data = {**overview["status"], "contracts": overview["contracts"], "fee_split": services.fee_split_get()}
        return Response(ChainSerializer(data).data)


class TransactionListApi(PaginatedApi):
    permission_classes = [IsAdminUser]

    @extend_schema(tags=TAGS, responses=TransactionSerializer(many=True), summary="The outbox (staff)",
                   parameters=[OpenApiParameter("status", str, enum=LedgerTransaction.Status.values),
                               OpenApiParameter("kind", str)])
    def get(self, request):
        qs = selectors.transaction_list(status=query_choice(request, "status", LedgerTransaction.Status.values),
                                        kind=request.query_params.get("kind", ""))
        return self.paginate(qs, TransactionSerializer)


class TransactionRetryApi(APIView):
    permission_classes = [IsAdminUser]

    @extend_schema(tags=TAGS, request=None, responses={202: TransactionSerializer,
                                                      409: OpenApiResponse(description="The row has not failed")},
                   summary="Queue a failed outbox row again (staff)")
    def post(self, request, transaction_id: int):
        row = services.ledger_transaction_retry(row=get_object_or_404(LedgerTransaction, pk=transaction_id))
        return Response(TransactionSerializer(row).data, status=status.HTTP_202_ACCEPTED)
