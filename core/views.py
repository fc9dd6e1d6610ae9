from django.conf import settings
from django.db import transaction
from django.http import JsonResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

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
