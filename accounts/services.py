import hashlib
import hmac
import secrets

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import transaction
from eth_utils import to_checksum_address

from accounts.models import ApiKey, Profile
from core.errors import ApplicationError
from core.roles import ROLES

MAX_ACTIVE_KEYS = 20
ERR_TOO_MANY_KEYS = f"You already have {MAX_ACTIVE_KEYS} active API keys; revoke one first."

User = get_user_model()


def roles_ensure() -> None:
    """Create the role groups (idempotent)."""
    for name in ROLES:
        Group.objects.get_or_create(name=name)


@transaction.atomic
def user_create(*, username: str, password: str, email: str = "", roles: list[str] | tuple[str, ...] = (),
                wallet_address: str = "", is_staff: bool = False) -> User:
    user = User.objects.create_user(username=username, email=email, password=password, is_staff=is_staff)
    roles_ensure()
    user.groups.set(Group.objects.filter(name__in=roles))
    Profile.objects.create(user=user, wallet_address=to_checksum_address(wallet_address) if wallet_address else "")
    return user


def profile_get(*, user) -> Profile:
    profile, _ = Profile.objects.get_or_create(user=user)
    return profile


def profile_update(*, user, wallet_address: str, email: str, bio: str = "") -> Profile:
    profile = profile_get(user=user)
    profile.wallet_address = to_checksum_address(wallet_address) if wallet_address else ""
    profile.bio = bio
    profile.full_clean()
    profile.save()
    if email != user.email:
        user.email = email
        user.save(update_fields=["email"])
    return profile


def _hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def api_key_create(*, user, name: str, rate_limit_per_minute: int = 60) -> tuple[ApiKey, str]:
    """Create a key; returns the row and the full key, which is never retrievable again."""
    if ApiKey.objects.filter(user=user, revoked_at__isnull=True).count() >= MAX_ACTIVE_KEYS:
        raise ApplicationError(ERR_TOO_MANY_KEYS, status_code=409)  # the account's state, not the request
    prefix = secrets.token_hex(4)
    secret = secrets.token_urlsafe(32)
    key = ApiKey.objects.create(user=user, name=name or "key", prefix=prefix, key_hash=_hash_secret(secret),
                                rate_limit_per_minute=rate_limit_per_minute)
    return key, f"{prefix}.{secret}"


def api_key_authenticate(*, raw: str) -> ApiKey | None:
    """The active key matching `prefix.secret`, or None. Compared in constant time."""
    prefix, _, secret = raw.partition(".")
    if not prefix or not secret:
        return None
    key = ApiKey.objects.select_related("user").filter(prefix=prefix, revoked_at__isnull=True).first()
    if key is None or not hmac.compare_digest(key.key_hash, _hash_secret(secret)):
        return None
    if not key.user.is_active:
        return None
    return key


def api_key_revoke(*, user, key_id: int) -> ApiKey:
    from django.utils import timezone

    key = ApiKey.objects.filter(user=user, pk=key_id).first()
    if key is None:
        raise ApplicationError("No such API key.", status_code=404)
    if key.revoked_at is None:
        key.revoked_at = timezone.now()
        key.save(update_fields=["revoked_at"])
    return key
