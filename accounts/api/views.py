from drf_spectacular.utils import extend_schema
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.api.serializers import MeSerializer
from accounts.services import profile_get, profile_update


class MeApi(APIView):
    """The authenticated user: roles and wallet. PATCH changes email and wallet."""

    @extend_schema(responses=MeSerializer)
    def get(self, request):
        profile_get(user=request.user)
        return Response(MeSerializer(request.user).data)

    @extend_schema(request=MeSerializer, responses=MeSerializer)
    def patch(self, request):
        serializer = MeSerializer(data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        prof = profile_get(user=request.user)
        profile_update(
            user=request.user,
            email=serializer.validated_data.get("email", request.user.email),
            wallet_address=serializer.validated_data.get("wallet_address", prof.wallet_address),
            bio=prof.bio,
        )
        request.user.refresh_from_db()
        return Response(MeSerializer(request.user).data)
