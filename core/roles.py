"""Roles are Django groups. Staff are admins and pass every role check."""
from functools import wraps

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied

CONTRIBUTOR = "contributor"
MODEL_DEVELOPER = "model developer"
CURATOR = "curator"
ROLES = (CONTRIBUTOR, MODEL_DEVELOPER, CURATOR)
# Roles a person may pick at sign-up; curators are appointed by an admin.
SELF_SERVICE_ROLES = (CONTRIBUTOR, MODEL_DEVELOPER)


def user_roles(user) -> set[str]:
    if not user.is_authenticated:
        return set()
    cached = getattr(user, "_role_cache", None)
    if cached is None:
        cached = set(user.groups.filter(name__in=ROLES).values_list("name", flat=True))
        user._role_cache = cached
    return cached


def user_has_role(user, role: str) -> bool:
    return bool(user.is_authenticated and (user.is_staff or role in user_roles(user)))


def role_required(role: str):
    """View decorator: log in first, then 403 unless the user has `role`."""

    def decorator(view):
        @wraps(view)
        @login_required
        def wrapped(request, *args, **kwargs):
            if not user_has_role(request.user, role):
                raise PermissionDenied(f"This page needs the '{role}' role.")
            return view(request, *args, **kwargs)

        return wrapped

    return decorator


def staff_required(view):
    """View decorator for staff-only product pages: log in first (the product's login, not the admin's), then
    403 for anyone who is not staff."""

    @wraps(view)
    @login_required
    def wrapped(request, *args, **kwargs):
        if not request.user.is_staff:
            raise PermissionDenied("This page is for staff.")
        return view(request, *args, **kwargs)

    return wrapped
