from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.authtoken.models import Token
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.api.serializers import (
    ApiKeyCreatedSerializer,
    ApiKeySerializer,
    MeSerializer,
    SignUpResultSerializer,
    SignUpSerializer,
)
from accounts.services import api_key_create, api_key_revoke, profile_get, profile_update, user_create


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


class ApiKeyListCreateApi(APIView):
    """The caller's API keys. POST creates one and returns its secret once."""

    @extend_schema(responses=ApiKeySerializer(many=True))
    def get(self, request):
        return Response(ApiKeySerializer(request.user.api_keys.all(), many=True).data)

    @extend_schema(request=ApiKeySerializer, responses={
        201: ApiKeyCreatedSerializer, 409: OpenApiResponse(description="Too many active keys: revoke one first")})
    def post(self, request):
        serializer = ApiKeySerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        key, raw = api_key_create(user=request.user, **serializer.validated_data)
        data = ApiKeySerializer(key).data
        data["key"] = raw
        return Response(data, status=status.HTTP_201_CREATED)


class ApiKeyRevokeApi(APIView):
    @extend_schema(responses={204: None})
    def delete(self, request, key_id: int):
        api_key_revoke(user=request.user, key_id=key_id)
        return Response(status=status.HTTP_204_NO_CONTENT)


class SignUpApi(APIView):
    """Create an account (contributor and/or model developer) and get its API token, as the sign-up page does."""

    permission_classes = [AllowAny]
    authentication_classes: list = []  # no session: no CSRF for a client that has no account yet

    @extend_schema(request=SignUpSerializer, responses={201: SignUpResultSerializer}, tags=["accounts"])
    def post(self, request):
        data = SignUpSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        user = user_create(**data.validated_data)
        token, _ = Token.objects.get_or_create(user=user)
        return Response({"user": MeSerializer(user).data, "token": token.key}, status=status.HTTP_201_CREATED)
