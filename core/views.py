from django.http import JsonResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from core.services import health_report


@require_GET
def home(request):
    return render(request, "home.html")


@never_cache
@require_GET
def healthz(request):
    """Public liveness/readiness: 200 only when every configured dependency answers, else 503."""
    healthy, body = health_report(deep=request.GET.get("deep") == "1")
    return JsonResponse(body, status=200 if healthy else 503)
