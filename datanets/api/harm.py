"""API of harm flags (datanets/harm.py): the flags naming a contribution (its contributor and the Datanet's
curators), a Datanet's open flags (curators), and a curator's slash or dismiss."""
from django.http import Http404
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from datanets import harm, services
from datanets.api.views import _contribution_for
from datanets.models import Datanet, HarmFlag

TAGS = ["datanets"]
ERROR = OpenApiResponse(description="`error.message` says why")


class HarmFlagSerializer(serializers.ModelSerializer):
    contributor = serializers.CharField(source="contributor.username", read_only=True)
    contribution_ids = serializers.SerializerMethodField()

    class Meta:
        model = HarmFlag
        fields = ["id", "datanet", "contributor", "contributor_id", "contribution_ids", "model_id", "model_name",
                  "statistic", "null_bound", "harm_threshold", "evidence", "status", "reason", "decided_at", "created_at"]

    def get_contribution_ids(self, flag) -> list[int]:
        return sorted(c.pk for c in flag.contributions.all())


class HarmFlagDecideSerializer(serializers.Serializer):
    action = serializers.ChoiceField(choices=["slash", "dismiss"])
    reason = serializers.CharField(required=False, allow_blank=True, default="")


class ContributionHarmFlagsApi(APIView):
    """The harm flags naming a contribution, with their evidence (its contributor or a curator; else 404)."""

    @extend_schema(tags=TAGS, responses={200: HarmFlagSerializer(many=True), 404: ERROR})
    def get(self, request, contribution_id: int):
        c = _contribution_for(request, contribution_id)
        return Response(HarmFlagSerializer(harm.harm_flags_visible_to(user=request.user, contribution=c), many=True).data)


class DatanetHarmFlagsApi(APIView):
    """A Datanet's open harm flags (curators of the Datanet only: 404 for others)."""

    @extend_schema(tags=TAGS, responses={200: HarmFlagSerializer(many=True), 404: ERROR})
    def get(self, request, slug: str):
        datanet = get_object_or_404(Datanet, slug=slug)
        if not services.user_can_curate(user=request.user, datanet=datanet):
            raise Http404("No such Datanet.")
        return Response(HarmFlagSerializer(harm.harm_flags_for_datanet(datanet=datanet, user=request.user), many=True).data)


class HarmFlagDecideApi(APIView):
    """A curator slashes the flag's bonded contributions (reason required) or dismisses it."""

    @extend_schema(tags=TAGS, request=HarmFlagDecideSerializer, responses={200: HarmFlagSerializer, 400: ERROR, 403: ERROR, 404: ERROR})
    def post(self, request, flag_id: int):
        flag = get_object_or_404(HarmFlag.objects.select_related("datanet"), pk=flag_id)
        if not services.user_can_curate(user=request.user, datanet=flag.datanet) and flag.contributor_id != request.user.pk:
            raise Http404("No such flag.")
        data = HarmFlagDecideSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        if data.validated_data["action"] == "slash":
            harm.harm_flag_slash(flag=flag, curator=request.user, reason=data.validated_data["reason"])
        else:
            harm.harm_flag_dismiss(flag=flag, curator=request.user, reason=data.validated_data["reason"])
        flag.refresh_from_db()
        return Response(HarmFlagSerializer(flag).data)
