from rest_framework import serializers

from accounts.models import wallet_validator
from core.roles import ROLES, user_has_role


class MeSerializer(serializers.Serializer):
    id = serializers.IntegerField(read_only=True)
    username = serializers.CharField(read_only=True)
    email = serializers.EmailField(required=False, allow_blank=True)
    wallet_address = serializers.CharField(required=False, allow_blank=True, max_length=42, validators=[wallet_validator])
    roles = serializers.SerializerMethodField()
    is_staff = serializers.BooleanField(read_only=True)

    def get_roles(self, user) -> list[str]:
        return [r for r in ROLES if user_has_role(user, r)]

    def to_representation(self, user):
        data = super().to_representation(user)
        data["wallet_address"] = getattr(getattr(user, "profile", None), "wallet_address", "")
        return data


class ApiKeySerializer(serializers.Serializer):
    id = serializers.IntegerField(read_only=True)
    name = serializers.CharField(max_length=80)
    prefix = serializers.CharField(read_only=True)
    rate_limit_per_minute = serializers.IntegerField(min_value=1, max_value=10_000, default=60)
    created_at = serializers.DateTimeField(read_only=True)
    last_used_at = serializers.DateTimeField(read_only=True)
    revoked_at = serializers.DateTimeField(read_only=True)


class ApiKeyCreatedSerializer(ApiKeySerializer):
    key = serializers.CharField(read_only=True, help_text="Shown once; store it now.")
