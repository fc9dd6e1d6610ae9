from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models

from core.addresses import address_problem


def wallet_validator(value: str) -> None:
    """A wallet that can receive tokens: the format, not the zero address or a precompile, a valid checksum."""
    problem = address_problem(value)
    if problem:
        raise ValidationError(problem, code="invalid_wallet")


class Profile(models.Model):
    """Per-user data beyond auth: the wallet that rewards are paid to."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="profile")
    wallet_address = models.CharField(max_length=42, blank=True, validators=[wallet_validator])
    bio = models.CharField(max_length=280, blank=True)

    def __str__(self) -> str:
        return f"profile of {self.user}"


class ApiKey(models.Model):
    """An integrator's key for the REST API. Only a sha256 of the secret is stored; it is shown once.

    Sent as `Authorization: Api-Key <prefix>.<secret>`. Each key has its own rate limit.
    """

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=80)
    prefix = models.CharField(max_length=12, unique=True)
    key_hash = models.CharField(max_length=64)
    rate_limit_per_minute = models.PositiveIntegerField(default=60)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix})"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None
