from drf_spectacular.utils import extend_schema
from rest_framework.decorators import api_view, permission_classes
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.reverse import reverse


@extend_schema(exclude=True)
@api_view(["GET"])
@permission_classes([AllowAny])
def api_root(request, format=None):
    """Entry point of the REST API: links to the schema, its docs and authentication."""
    return Response({
        "schema": reverse("api-schema", request=request, format=format),
        "docs": reverse("api-docs", request=request, format=format),
        "token": reverse("api-token", request=request, format=format),
        "me": reverse("api-me", request=request, format=format),
    })
