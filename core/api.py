"""API-layer glue shared by every app: the one error shape, the schema that documents it, pagination and role
permissions.

Every error of `/api/v1/` answers `{"error": {"code", "message", "fields"}}` (plus `extra` when a service gave
structured detail): DRF's own exceptions, Django's Http404/PermissionDenied/ValidationError, the services'
ApplicationError, unknown URLs and unexpected exceptions (500, logged). The OpenAI-compatible routes under
`/v1/` keep OpenAI's error shape and are left alone here.
"""
import logging

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.validators import validate_email
from django.http import Http404, JsonResponse
from drf_spectacular.openapi import AutoSchema as SpectacularAutoSchema
from drf_spectacular.utils import extend_schema_field
from rest_framework import exceptions, serializers
from rest_framework.permissions import AllowAny, BasePermission
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import APIView, set_rollback
from rest_framework.views import exception_handler as drf_exception_handler

from core.errors import ApplicationError
from core.pagination import INT as _INT
from core.pagination import Pagination
from core.roles import user_has_role

logger = logging.getLogger(__name__)

API_PREFIX = "/api/"
OPENAI_PREFIX = "/v1/"  # OpenAI-compatible routes answer OpenAI's error shape, not ours
# Codes for ApplicationError by status (a service may name its own with `code=`).
STATUS_CODES = {400: "invalid", 401: "not_authenticated", 403: "permission_denied", 404: "not_found",
                405: "method_not_allowed", 409: "conflict", 413: "too_large", 415: "unsupported_media_type",
                428: "signature_required", 429: "throttled", 500: "server_error", 503: "unavailable"}
MSG_INVALID = "The request is not valid: see `fields`."
MSG_SERVER = "Something went wrong on our side; it has been logged."


def error_body(*, status: int, message: str, code: str = "", fields: dict | None = None, extra: dict | None = None) -> dict:
    error = {"code": code or STATUS_CODES.get(status, "error"), "message": message, "fields": fields or {}}
    if extra:
        error["extra"] = extra
    return {"error": error}


def _flatten(detail, prefix: str = "") -> dict[str, list[str]]:
    """DRF's nested validation detail as {"field" or "parent.child": [messages]}."""
    if isinstance(detail, dict):
        out: dict[str, list[str]] = {}
        for key, value in detail.items():
            out.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    if isinstance(detail, list) and any(isinstance(v, (dict, list)) for v in detail):
        out = {}
        for i, value in enumerate(detail):
            out.update(_flatten(value, f"{prefix}.{i}" if prefix else str(i)))
        return out
    return {prefix: [str(v) for v in (detail if isinstance(detail, list) else [detail])]}


def _validation_body(exc: exceptions.ValidationError) -> dict:
    detail = exc.detail
    if not isinstance(detail, dict):
        messages = [str(m) for m in (detail if isinstance(detail, list) else [detail])]
        return error_body(status=400, code="invalid", message=" ".join(messages) or MSG_INVALID)
    fields = _flatten(detail)
    general = fields.pop(api_settings.NON_FIELD_ERRORS_KEY, [])
    if general:
        message = " ".join(general)
    elif len(fields) == 1:
        name, msgs = next(iter(fields.items()))
        message = f"{name}: {' '.join(msgs)}"
    else:
        message = MSG_INVALID
    return error_body(status=400, code="invalid", message=message, fields=fields)


def exception_handler(exc, context):
    """Every API error as `{"error": {code, message, fields}}`; unexpected exceptions become a logged 500.
    Views under /v1/ (OpenAI-compatible) keep DRF's default here and their own shape."""
    request = context.get("request")
    if request is not None and request.path.startswith(OPENAI_PREFIX):
        return drf_exception_handler(exc, context)
    if isinstance(exc, ApplicationError):
        set_rollback()
        return Response(error_body(status=exc.status_code, code=exc.code, message=exc.message, extra=exc.extra),
                        status=exc.status_code)
    if isinstance(exc, DjangoValidationError):
        exc = exceptions.ValidationError(exc.message_dict if hasattr(exc, "error_dict") else exc.messages)
    elif isinstance(exc, Http404):
        exc = exceptions.NotFound(*exc.args)
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied(*exc.args)
    set_rollback()
    if not isinstance(exc, exceptions.APIException):
        logger.exception("API error on %s %s", getattr(request, "method", "?"), getattr(request, "path", "?"),
                         exc_info=exc)
        return Response(error_body(status=500, message=MSG_SERVER), status=500)
    headers = {}
    if getattr(exc, "auth_header", None):
        headers["WWW-Authenticate"] = exc.auth_header
    if getattr(exc, "wait", None):
        headers["Retry-After"] = str(int(exc.wait))
    if isinstance(exc, exceptions.ValidationError):
        body = _validation_body(exc)
    else:
        detail = exc.detail
        code = exc.get_codes() if isinstance(exc.get_codes(), str) else exc.default_code
        body = error_body(status=exc.status_code, code=code, message=str(detail))
    return Response(body, status=exc.status_code, headers=headers)


def is_api_request(request) -> bool:
    return request.path.startswith(API_PREFIX)


def api_error_response(request, *, status: int, message: str) -> JsonResponse:
    """The error shape for what happens outside a DRF view (unknown URL, a crash before the view)."""
    return JsonResponse(error_body(status=status, message=message), status=status)


# --- schema --------------------------------------------------------------------------------------------

class ErrorDetailSerializer(serializers.Serializer):
    code = serializers.CharField(help_text="Machine-readable: invalid, not_authenticated, permission_denied, "
                                           "not_found, conflict, throttled, ...")
    message = serializers.CharField(help_text="For people: what went wrong and what to do")
    fields = serializers.DictField(child=serializers.ListField(child=serializers.CharField()),
                                   help_text="Per field (dotted for nested ones): its messages; {} when none")
    extra = serializers.DictField(required=False, help_text="Structured detail some errors carry (limits, the "
                                                            "typed data to sign, a claim's proof)")


class ErrorSerializer(serializers.Serializer):
    error = ErrorDetailSerializer()


ERROR_DESCRIPTIONS = {
    "400": "The request is not valid (`error.fields` per field)",
    "401": "Not authenticated: log in, or send `Authorization: Token <token>` or `Api-Key <key>`",
    "403": "Authenticated but not allowed (role, ownership, CSRF)",
    "404": "No such object (or not visible to you), or no such page",
    "405": "Method not allowed",
    "415": "Unsupported media type",
    "429": "Rate limit reached: see the Retry-After header",
}


class AutoSchema(SpectacularAutoSchema):
    """drf-spectacular's AutoSchema that documents every error the views can answer, in the one error shape.

    Errors a view declares with a description only get the error schema; the ones any view can answer (bad
    input, authentication, permission, missing object, rate limit) are added where they apply.
    """

    def _error_codes(self) -> set[str]:
        codes = {"404"}  # a missing object, an invalid page, or a path parameter out of range
        public = any(isinstance(p, AllowAny) for p in self.view.get_permissions())
        if not public:
            codes |= {"401", "403"}
        if self.method in ("POST", "PUT", "PATCH") or self._get_filter_parameters() or \
                self.get_override_parameters() or self._get_pagination_parameters():
            codes.add("400")
        if self.method in ("POST", "PUT", "PATCH"):
            codes.add("415")
        if api_settings.DEFAULT_THROTTLE_CLASSES or getattr(self.view, "throttle_classes", None):
            codes.add("429")
        return codes

    def _map_serializer_field(self, field, direction, bypass_extensions=False):
        schema = super()._map_serializer_field(field, direction, bypass_extensions)
        # DRF refuses "" unless allow_blank; say so, or a client (and a fuzzer) reads "" as valid.
        if (direction == "request" and isinstance(field, serializers.CharField) and not field.allow_blank
                and not field.read_only and schema.get("type") == "string" and "minLength" not in schema):
            schema["minLength"] = 1
        return schema

    def _get_response_bodies(self, direction="response"):
        responses = super()._get_response_bodies(direction)
        if direction != "response":
            return responses
        error = self._get_response_for_code(ErrorSerializer, "400")["content"]
        for code in self._error_codes():
            responses.setdefault(code, {"description": ERROR_DESCRIPTIONS[code]})
        for code, response in responses.items():
            if code >= "400" and not response.get("content"):
                response["content"] = error
            if code == "429":
                response.setdefault("headers", {})["Retry-After"] = {
                    "schema": {"type": "integer"}, "description": "Seconds to wait"}
        return responses


# --- pagination ----------------------------------------------------------------------------------------

class PaginatedApi(APIView):
    """An APIView whose GET answers a page (`count`, `next`, `previous`, `results`); the schema says so because
    `pagination_class` is set (drf-spectacular wraps a list response in the envelope)."""

    pagination_class = Pagination

    def paginate(self, queryset, serializer_class) -> Response:
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(queryset, self.request, view=self)
        return paginator.get_paginated_response(
            serializer_class(page, many=True, context={"request": self.request}).data)


def query_int(request, name: str, *, default: int | None = None) -> int | None:
    """An optional id query parameter (ID_QUERY); 400 (in the error shape) when it is not one."""
    value = request.query_params.get(name, "")
    if value == "":
        return default
    if not _INT.fullmatch(value) or not ID_QUERY["minimum"] <= int(value) <= ID_QUERY["maximum"]:
        raise serializers.ValidationError({name: ["Must be a whole number from 1 (an id)."]})
    return int(value)


def query_choice(request, name: str, choices, *, default: str = "") -> str:
    """An optional query parameter out of `choices`; 400 when it is another value."""
    value = request.query_params.get(name, "")
    if value == "":
        return default
    if value not in choices:
        raise serializers.ValidationError({name: [f"Choose from {', '.join(choices)}."]})
    return value


def query_bool(request, name: str) -> bool | None:
    value = request.query_params.get(name, "")
    if value == "":
        return None
    if value.lower() not in ("true", "false"):
        raise serializers.ValidationError({name: ["Must be true or false."]})
    return value.lower() == "true"


def HasRole(role: str) -> type[BasePermission]:  # noqa: N802 - reads as a class in permission_classes
    """A DRF permission class granting access to users in `role` (staff always pass)."""

    class _HasRole(BasePermission):
        message = f"This needs the '{role}' role."

        def has_permission(self, request, view) -> bool:
            return bool(request.user and request.user.is_authenticated and user_has_role(request.user, role))

    _HasRole.__name__ = f"HasRole_{role.replace(' ', '_')}"
    return _HasRole


@extend_schema_field({"type": "string", "anyOf": [{"format": "email"}, {"maxLength": 0}]})
class BlankableEmailField(serializers.CharField):
    """An email address or "". Not DRF's EmailField: its validator would make the schema say only "email"."""

    def __init__(self, **kwargs):
        kwargs.setdefault("allow_blank", True)
        kwargs.setdefault("max_length", 254)
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        if value:
            try:
                validate_email(value)
            except DjangoValidationError:
                self.fail("invalid_email")
        return value

    default_error_messages = {"invalid_email": "Enter a valid email address."}


# Ids in query filters: positive 64-bit integers (a larger number could not be stored, so the schema says so).
ID_QUERY = {"type": "integer", "minimum": 1, "maximum": 2**63 - 1}


def strict_strings() -> None:
    """DRF's CharField turns a JSON number into a string ("signature": 0 becomes "0"); the schema says string,
    so the API refuses anything else (400). Called once from CoreConfig.ready()."""
    original = serializers.CharField.to_internal_value
    if getattr(original, "strict", False):
        return

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return original(self, data)

    to_internal_value.strict = True
    serializers.CharField.to_internal_value = to_internal_value


# --- stateful links: which response feeds which operation (OpenAPI `links`, followed by schemathesis) -----

_V1 = "/api/v1"
# (source path, method, status, target path, method, {parameter: runtime expression})
LINKS = [
    ("/datanets/", "post", "201", "/datanets/{slug}/", "get", {"slug": "$response.body#/slug"}),
    ("/datanets/", "post", "201", "/datanets/{slug}/contributions/", "post", {"slug": "$response.body#/slug"}),
    *[("/datanets/{slug}/contributions/", "post", "201", target, method, {"contribution_id": "$response.body#/id"})
      for target, method in (("/contributions/{contribution_id}/", "get"), ("/contributions/{contribution_id}/", "delete"),
                             ("/contributions/{contribution_id}/start/", "post"),
                             ("/contributions/{contribution_id}/accept/", "post"),
                             ("/contributions/{contribution_id}/reject/", "post"))],
    ("/datanets/{slug}/versions/", "post", "201", "/datanets/{slug}/versions/{number}/", "get",
     {"slug": "$request.path.slug", "number": "$response.body#/number"}),
    ("/api-keys/", "post", "201", "/api-keys/{key_id}/", "delete", {"key_id": "$response.body#/id"}),
    *[("/factory/jobs/", "post", "201", target, method, {"job_id": "$response.body#/id"})
      for target, method in (("/factory/jobs/{job_id}/", "get"), ("/factory/jobs/{job_id}/cancel/", "post"),
                             ("/factory/jobs/{job_id}/retry/", "post"))],
    *[("/ledger/governance/proposals/", "post", "202", target, method, {"proposal_id": "$response.body#/id"})
      for target, method in (("/ledger/governance/proposals/{proposal_id}/", "get"),
                             ("/ledger/governance/proposals/{proposal_id}/vote/", "post"))],
]


def schema_links(result, generator, request, public):
    """drf-spectacular postprocessing hook: add LINKS to the responses they start from. A link whose
    operations are gone fails loudly (the table must follow the URLs)."""
    paths = result["paths"]
    for source, method, status, target, target_method, parameters in LINKS:
        response = paths[_V1 + source][method]["responses"][status]
        op_id = paths[_V1 + target][target_method]["operationId"]
        name = f"{target_method.upper()} {target}"
        response.setdefault("links", {})[name] = {"operationId": op_id, "parameters": parameters}
    return result
