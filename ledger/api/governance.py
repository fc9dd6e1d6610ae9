"""REST API of governance by OPEN holders: the caller's voting account, delegation, proposals, votes, queue and
execute. Every endpoint needs a signed-in user; the chain decides the rest (votes at the snapshot, the
proposal threshold, the Governor's states). A holder with an own wallet gets 428 with the EIP-712 typed data
(and the calldata to send instead) and posts the signature back. Thin over ledger.governance."""
from decimal import Decimal

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from core.api import PaginatedApi
from ledger import governance
from ledger.models import GovernanceProposal, GovernanceVote
from ledger.services import fee_split_get

TAGS = ["governance"]
ERROR = OpenApiResponse(description="`error.message` says why; 428 carries `error.extra.typed_data` to sign with your wallet")


class ProposalSerializer(serializers.ModelSerializer):
    my_vote = serializers.SerializerMethodField()

    class Meta:
        model = GovernanceProposal
        fields = ("id", "action", "params", "status", "description", "proposer_address", "proposal_id", "targets",
                  "values", "calldatas", "vote_start", "vote_end", "tally", "quorum_wei", "eta", "created_at",
                  "executed_at", "my_vote")

    def get_my_vote(self, obj) -> str | None:
        request = self.context.get("request")
        vote = obj.votes.filter(user=request.user).first() if request else None
        return vote.get_support_display().lower() if vote else None


class ProposeSerializer(serializers.Serializer):
    action = serializers.ChoiceField(choices=GovernanceProposal.Action.choices)
    params = serializers.DictField(help_text=(
        "fee_split: contributors_bps, developer_bps, protocol_bps (sum 10000); datanet_terms: datanet_id, "
        "min_stake (OPEN), slash_bps; epoch_seconds: seconds"))
    reason = serializers.CharField(required=False, allow_blank=True, max_length=2000)
    signature = serializers.CharField(required=False, allow_blank=True, max_length=200)


class DelegateSerializer(serializers.Serializer):
    delegatee = serializers.RegexField(r"^(0x[0-9a-fA-F]{40})?\Z", required=False, allow_blank=True, max_length=42,
                                       help_text="An address; default: yourself")
    signature = serializers.CharField(required=False, allow_blank=True, max_length=200)
    nonce = serializers.IntegerField(required=False, min_value=0)
    expiry = serializers.IntegerField(required=False, min_value=0)


class VoteSerializer(serializers.Serializer):
    support = serializers.ChoiceField(choices=["for", "against", "abstain"])
    signature = serializers.CharField(required=False, allow_blank=True, max_length=200)


class VoteOutSerializer(serializers.ModelSerializer):
    class Meta:
        model = GovernanceVote
        fields = ("id", "proposal", "voter", "support", "cast", "created_at")


class GovernanceAccountApi(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(tags=TAGS, responses=OpenApiResponse(description=(
        "account, custodial, balance, votes, delegate, nonces; the governed values (fee split, epoch seconds)")),
        summary="Your voting account and the governed parameters")
    def get(self, request):
        exact = {k: f"{v.normalize():f}" if isinstance(v, Decimal) else v  # money as exact strings, never floats
                 for k, v in governance.governance_account(user=request.user).items()}
        split = {k: f"{v:f}" for k, v in fee_split_get().items()}
        return Response({**exact, "fee_split": split, "epoch_seconds": governance.epoch_seconds_get()})


class DelegateApi(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(tags=TAGS, request=DelegateSerializer, responses={202: OpenApiResponse(), 400: ERROR, 428: ERROR},
                   summary="Delegate your OPEN votes (to yourself by default)")
    def post(self, request):
        s = DelegateSerializer(data=request.data)
        s.is_valid(raise_exception=True)
        row = governance.governance_delegate(user=request.user, **{k: v for k, v in s.validated_data.items() if v})
        return Response({"transaction": row.pk, "status": row.status}, status=status.HTTP_202_ACCEPTED)


class ProposalListApi(PaginatedApi):
    permission_classes = [IsAuthenticated]

    @extend_schema(tags=TAGS, responses=ProposalSerializer(many=True), summary="Proposals, newest first")
    def get(self, request):
        governance.proposals_sync_open()
        return self.paginate(GovernanceProposal.objects.all(), ProposalSerializer)

    @extend_schema(tags=TAGS, request=ProposeSerializer, responses={202: ProposalSerializer, 400: ERROR, 428: ERROR},
                   summary="Propose a parameter change to OPEN holders")
    def post(self, request):
        s = ProposeSerializer(data=request.data)
        s.is_valid(raise_exception=True)
        proposal = governance.governance_propose(user=request.user, **s.validated_data)
        return Response(ProposalSerializer(proposal, context={"request": request}).data, status=status.HTTP_202_ACCEPTED)


class ProposalDetailApi(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(tags=TAGS, responses=ProposalSerializer, summary="One proposal, refreshed from the Governor")
    def get(self, request, proposal_id: int):
        proposal = governance.proposal_sync(proposal=get_object_or_404(GovernanceProposal, pk=proposal_id))
        return Response(ProposalSerializer(proposal, context={"request": request}).data)


class VoteApi(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(tags=TAGS, request=VoteSerializer, responses={202: VoteOutSerializer, 400: ERROR, 403: ERROR, 428: ERROR},
                   summary="Vote for, against or abstain with your votes at the proposal's snapshot")
    def post(self, request, proposal_id: int):
        s = VoteSerializer(data=request.data)
        s.is_valid(raise_exception=True)
        vote = governance.governance_vote(user=request.user, proposal=get_object_or_404(GovernanceProposal, pk=proposal_id),
                                          **s.validated_data)
        return Response(VoteOutSerializer(vote).data, status=status.HTTP_202_ACCEPTED)


class QueueApi(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(tags=TAGS, request=None, responses={202: ProposalSerializer, 400: ERROR},
                   summary="Queue a passed proposal in the timelock")
    def post(self, request, proposal_id: int):
        proposal = governance.governance_queue(user=request.user,
                                               proposal=get_object_or_404(GovernanceProposal, pk=proposal_id))
        return Response(ProposalSerializer(proposal, context={"request": request}).data, status=status.HTTP_202_ACCEPTED)


class ExecuteApi(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(tags=TAGS, request=None, responses={202: ProposalSerializer, 400: ERROR},
                   summary="Execute a queued proposal once the timelock released it")
    def post(self, request, proposal_id: int):
        proposal = governance.governance_execute(user=request.user,
                                                 proposal=get_object_or_404(GovernanceProposal, pk=proposal_id))
        return Response(ProposalSerializer(proposal, context={"request": request}).data, status=status.HTTP_202_ACCEPTED)
