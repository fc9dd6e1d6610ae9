"""API-layer glue shared by every app: the exception handler and role permissions."""
from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import exceptions
from rest_framework.permissions import BasePermission
from rest_framework.views import exception_handler as drf_exception_handler

from core.errors import ApplicationError
from core.roles import user_has_role


def exception_handler(exc, context):
    """Turn ApplicationError and Django's ValidationError into DRF 4xx responses with a `detail`."""
    if isinstance(exc, ApplicationError):
        response = drf_exception_handler(exceptions.APIException(exc.message), context)
        response.status_code = exc.status_code
        response.data = {"detail": exc.message, **({"extra": exc.extra} if exc.extra else {})}
        return response
    if isinstance(exc, DjangoValidationError):
        exc = exceptions.ValidationError(exc.message_dict if hasattr(exc, "error_dict") else exc.messages)
    return drf_exception_handler(exc, context)


def HasRole(role: str) -> type[BasePermission]:  # noqa: N802 - reads as a class in permission_classes
    """A DRF permission class granting access to users in `role` (staff always pass)."""

    class _HasRole(BasePermission):
        message = f"This needs the '{role}' role."

        def has_permission(self, request, view) -> bool:
            return bool(request.user and request.user.is_authenticated and user_has_role(request.user, role))

    _HasRole.__name__ = f"HasRole_{role.replace(' ', '_')}"
    return _HasRole
