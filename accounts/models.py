from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models

wallet_validator = RegexValidator(
    r"^0x[0-9a-fA-F]{40}$", "Enter an EVM address: 0x followed by 40 hexadecimal characters."
)


class Profile(models.Model):
    """Per-user data beyond auth: the wallet that rewards are paid to."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="profile")
    wallet_address = models.CharField(max_length=42, blank=True, validators=[wallet_validator])
    bio = models.CharField(max_length=280, blank=True)

    def __str__(self) -> str:
        return f"profile of {self.user}"
