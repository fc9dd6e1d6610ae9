from django.conf import settings
from django.db import transaction
from django.http import HttpResponseServerError, JsonResponse
from django.shortcuts import render
from django.template import loader
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from core.api import MSG_SERVER, api_error_response, is_api_request
from core.services import health_report


@require_GET
def home(request):
    return render(request, "home.html")


# Outside the request transaction: on SQLite a transaction reads one snapshot and would never see
# the worker's probe row appear.
@transaction.non_atomic_requests
@never_cache
@require_GET
def healthz(request):
    """Public liveness/readiness: 200 only when every configured dependency answers, else 503.

    `?deep=1` (staff, or DEBUG) also sends a task through the broker and waits for a worker to run it.
    """
    deep = request.GET.get("deep") == "1" and (settings.DEBUG or request.user.is_staff)
    healthy, body = health_report(deep=deep)
    return JsonResponse(body, status=200 if healthy else 503)


# --- error pages: styled HTML for people, the API's error shape under /api/ -----------------------------

ERROR_PAGES = {
    403: ("Not allowed", "You do not have permission to do this. If you think you should, ask a curator or an admin."),
    404: ("Not found", "There is nothing here. The link may be old, or the page is not visible to you."),
    405: ("Not this way", "This address does not accept that kind of request: use the page's buttons and forms."),
    500: ("Something went wrong", "The error has been logged. Try again in a moment."),
}


def error_page(request, status: int, message: str = "", allow: str = ""):
    if is_api_request(request):
        return api_error_response(request, status=status, message=message or ERROR_PAGES[status][0])
    title, text = ERROR_PAGES[status]
    response = render(request, f"{status}.html", {"status": status, "title": title, "text": text,
                                                   "message": message, "allow": allow}, status=status)
    if allow:
        response["Allow"] = allow
    return response


def _reason(exception) -> str:
    # Only messages we raise ourselves (PermissionDenied("..."), Http404("...")); Django's resolver detail is a dict.
    return str(exception.args[0]) if exception and exception.args and isinstance(exception.args[0], str) else ""


def permission_denied(request, exception=None):
    return error_page(request, 403, _reason(exception))


def page_not_found(request, exception=None):
    return error_page(request, 404, _reason(exception))


def server_error(request):
    # No template context processors (they read the database, which may be what failed).
    if is_api_request(request):
        return api_error_response(request, status=500, message=MSG_SERVER)
    title, text = ERROR_PAGES[500]
    return HttpResponseServerError(loader.get_template("500.html").render({"status": 500, "title": title, "text": text}))
