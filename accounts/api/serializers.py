from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import serializers

from accounts.models import wallet_validator
from core.api import BlankableEmailField
from core.roles import ROLES, SELF_SERVICE_ROLES, user_has_role

User = get_user_model()


class MeSerializer(serializers.Serializer):
    id = serializers.IntegerField(read_only=True)
    username = serializers.CharField(read_only=True)
    email = BlankableEmailField(required=False)
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
    last_used_at = serializers.DateTimeField(read_only=True, allow_null=True)
    revoked_at = serializers.DateTimeField(read_only=True, allow_null=True)


class ApiKeyCreatedSerializer(ApiKeySerializer):
    key = serializers.CharField(read_only=True, help_text="Shown once; store it now.")


class SignUpSerializer(serializers.Serializer):
    """The sign-up form's rules: a free username, a password Django's validators accept, self-service roles."""

    username = serializers.RegexField(r"^[\w.@+-]+\Z", max_length=150,
                                      help_text="Letters, digits and @ . + - _ only")
    password = serializers.CharField(write_only=True, min_length=8, max_length=128, style={"input_type": "password"},
                                     help_text="At least 8 characters, not too common, not only digits")
    email = BlankableEmailField(required=False, default="")
    roles = serializers.ListField(child=serializers.ChoiceField(choices=SELF_SERVICE_ROLES), min_length=1,
                                  max_length=len(SELF_SERVICE_ROLES),
                                  help_text="contributor and/or model developer; curators are appointed by an admin")
    wallet_address = serializers.CharField(required=False, allow_blank=True, default="", max_length=42,
                                           validators=[wallet_validator])

    def validate_username(self, value):
        if User.objects.filter(username__iexact=value).exists():
            raise serializers.ValidationError("A user with that username already exists.")
        return value

    def validate(self, attrs):
        try:
            validate_password(attrs["password"], user=User(username=attrs["username"], email=attrs.get("email", "")))
        except DjangoValidationError as exc:
            raise serializers.ValidationError({"password": list(exc.messages)}) from None
        attrs["roles"] = sorted(set(attrs["roles"]))
        return attrs


class SignUpResultSerializer(serializers.Serializer):
    user = MeSerializer()
    token = serializers.CharField(help_text="API token: send `Authorization: Token <token>`")
