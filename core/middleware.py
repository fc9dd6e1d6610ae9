"""Responses Django leaves bare: 405 from `require_POST`/`require_http_methods` (an empty body) and the login
redirect that `login_required` answers to a POST (302: the form's data would be lost on the way)."""
from django.conf import settings
from django.shortcuts import resolve_url

from core.views import error_page

SAFE_METHODS = ("GET", "HEAD", "OPTIONS", "TRACE")


class ErrorPageMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if response.status_code == 405 and not response.content and not getattr(response, "streaming", False):
            return error_page(request, 405, allow=response.get("Allow", ""))
        if (request.method not in SAFE_METHODS and response.status_code == 302
                and not request.user.is_authenticated
                and response.get("Location", "").startswith(resolve_url(settings.LOGIN_URL) + "?")):
            # A forbidden POST is a 403 (with a link to log in), not a redirect that drops what was posted.
            return error_page(request, 403, "Log in first: this needs a signed-in user.")
        return response
