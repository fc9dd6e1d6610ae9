"""`Authorization: Api-Key <prefix>.<secret>` for integrators, with a per-key rate limit; and the same
keys (or a user's token) as `Authorization: Bearer ...`, which OpenAI-style clients send."""
from datetime import timedelta

from django.utils import timezone
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions
from rest_framework.throttling import SimpleRateThrottle

from accounts.models import ApiKey
from accounts.services import api_key_authenticate

KEYWORD = "Api-Key"
LAST_USED_RESOLUTION = timedelta(minutes=1)


def _touch(key: ApiKey) -> None:
    """Record the key's last use, at most once a minute: every write waits for SQLite's one write lock."""
    now = timezone.now()
    if key.last_used_at is None or now - key.last_used_at > LAST_USED_RESOLUTION:
        ApiKey.objects.filter(pk=key.pk).update(last_used_at=now)


class ApiKeyAuthentication(authentication.BaseAuthentication):
    def authenticate(self, request):
        header = authentication.get_authorization_header(request).decode(errors="replace")
        if not header.startswith(KEYWORD + " "):
            return None
        key = api_key_authenticate(raw=header[len(KEYWORD) + 1:].strip())
        if key is None:
            raise exceptions.AuthenticationFailed("Invalid or revoked API key.")
        _touch(key)
        return key.user, key

    def authenticate_header(self, request):
        return KEYWORD


class BearerAuthentication(authentication.BaseAuthentication):
    """`Authorization: Bearer <prefix>.<secret>` (an API key, rate-limited as under `Api-Key`) or
    `Bearer <token>` (a user's REST token): what the OpenAI clients send as their `api_key`."""

    keyword = "Bearer"

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).decode(errors="replace")
        if not header.startswith(self.keyword + " "):
            return None
        raw = header[len(self.keyword) + 1:].strip()
        if "." in raw:
            key = api_key_authenticate(raw=raw)
            if key is None:
                raise exceptions.AuthenticationFailed("Invalid or revoked API key.")
            _touch(key)
            return key.user, key
        return authentication.TokenAuthentication().authenticate_credentials(raw)

    def authenticate_header(self, request):
        return self.keyword


class ApiKeyRateThrottle(SimpleRateThrottle):
    """Requests per minute by API key (its own limit); users without a key fall back to USER_RATE."""

    scope = "api_key"
    USER_RATE = "600/min"

    def get_rate(self):
        return self.USER_RATE

    def allow_request(self, request, view):
        key = request.auth if isinstance(request.auth, ApiKey) else None
        if key is not None:
            self.rate = f"{key.rate_limit_per_minute}/min"
        else:
            self.rate = self.USER_RATE
        self.num_requests, self.duration = self.parse_rate(self.rate)
        return super().allow_request(request, view)

    def get_cache_key(self, request, view):
        key = request.auth if isinstance(request.auth, ApiKey) else None
        if key is not None:
            return f"throttle_{self.scope}_{key.prefix}"
        if request.user and request.user.is_authenticated:
            return f"throttle_{self.scope}_user_{request.user.pk}"
        return f"throttle_{self.scope}_ip_{self.get_ident(request)}"


class ApiKeyScheme(OpenApiAuthenticationExtension):
    """Describes the Api-Key header in the OpenAPI schema (drf-spectacular finds it by import)."""

    target_class = "accounts.authentication.ApiKeyAuthentication"
    name = "ApiKeyAuth"

    def get_security_definition(self, auto_schema):
        return {"type": "apiKey", "in": "header", "name": "Authorization",
                "description": f"`{KEYWORD} <prefix>.<secret>`, created on the profile page or at /api/v1/api-keys/"}
