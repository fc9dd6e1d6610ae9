"""The API root: every resource of /api/v1/, found from the URL configuration so that none is left out."""
import re

from django.urls import URLPattern, URLResolver, get_resolver
from drf_spectacular.utils import extend_schema
from rest_framework.decorators import api_view, permission_classes
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.reverse import reverse

API_ROOT = "api/v1/"
_CONVERTER = re.compile(r"<(?:\w+:)?(\w+)>")
_GROUP = re.compile(r"\(\?P<(\w+)>[^)]*\)")


def _route(pattern) -> str:
    """`datanets/<slug:slug>/` or the regex `^models/(?P<model_id>[0-9]+)/infer/?$` as `datanets/{slug}/`."""
    raw = str(pattern.pattern)
    if raw.startswith("^"):
        raw = _GROUP.sub(r"{\1}", raw.lstrip("^").rstrip("$")).replace("/?", "/")
    return _CONVERTER.sub(r"{\1}", raw)


def api_resources() -> dict[str, str]:
    """{url name: path template} of every named route under /api/v1/ (the root itself excepted)."""
    out: dict[str, str] = {}

    def walk(patterns, prefix: str):
        for p in patterns:
            if isinstance(p, URLResolver):
                walk(p.url_patterns, prefix + _route(p))
            elif isinstance(p, URLPattern) and p.name and p.name != "api-root":
                out[p.name] = prefix + _route(p)

    for p in get_resolver().url_patterns:
        if isinstance(p, URLResolver) and str(p.pattern) == API_ROOT:
            walk(p.url_patterns, "/" + API_ROOT)
    return dict(sorted(out.items()))


@extend_schema(exclude=True)
@api_view(["GET"])
@permission_classes([AllowAny])
def api_root(request, format=None):
    """Entry point of the REST API: the schema, its docs, authentication and every resource (absolute URLs;
    `{name}` marks a path parameter)."""
    base = request.build_absolute_uri("/").rstrip("/")
    return Response({
        "schema": reverse("api-schema", request=request, format=format),
        "docs": reverse("api-docs", request=request, format=format),
        "token": reverse("api-token", request=request, format=format),
        "me": reverse("api-me", request=request, format=format),
        "resources": {name.removeprefix("api-"): base + path for name, path in api_resources().items()},
    })
