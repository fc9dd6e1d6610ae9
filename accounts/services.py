from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import transaction
from eth_utils import to_checksum_address

from accounts.models import Profile
from core.roles import ROLES

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


def user_roles_set(*, user, roles: list[str]) -> None:
    roles_ensure()
    user.groups.set(Group.objects.filter(name__in=roles))
    user._role_cache = None
