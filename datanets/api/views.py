"""REST API for Datanets: thin views over datanets.services and datanets.selectors.

Every endpoint needs an authenticated caller (the project default); creating a Datanet needs the curator
role, uploading the contributor role, and creating a version being a curator of that Datanet (403).
"""
from pathlib import Path

from django.http import FileResponse, Http404
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.exceptions import NotFound, PermissionDenied, ValidationError
from rest_framework.pagination import CursorPagination
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from core.api import ID_QUERY, HasRole, PaginatedApi, query_bool, query_choice, query_int
from core.roles import CONTRIBUTOR, CURATOR
from datanets import selectors, services
from datanets.api.serializers import (
    BulkDecisionResultSerializer,
    BulkDecisionSerializer,
    ContributionDetailSerializer,
    ContributionSerializer,
    ContributionStartSerializer,
    DatanetCreateSerializer,
    DatanetDetailSerializer,
    DatanetSerializer,
    DecisionSerializer,
    ProofSerializer,
    RecordSerializer,
    RejectSerializer,
    UploadSerializer,
    VersionSerializer,
)
from datanets.models import Contribution, Datanet, DatanetVersion
from datanets.views import DOWNLOADS

TAGS = ["datanets"]
ERROR = OpenApiResponse(description="`error.message` says why")


def _datanet(slug: str) -> Datanet:
    return get_object_or_404(Datanet, slug=slug)


def _contribution_for(request, contribution_id: int) -> Contribution:
    """The contribution if the caller uploaded it or curates its Datanet; 404 otherwise (no existence leak)."""
    c = get_object_or_404(Contribution.objects.select_related("datanet", "contributor", "curator"), pk=contribution_id)
    if c.contributor_id != request.user.pk and not services.user_can_curate(user=request.user, datanet=c.datanet):
        raise Http404("No such contribution.")
    return c


def _version(slug: str, number: int) -> DatanetVersion:
    return get_object_or_404(DatanetVersion.objects.select_related("datanet", "created_by"),
                             datanet__slug=slug, number=number)


class DatanetListCreateApi(PaginatedApi):
    """Datanets, searchable and filterable by domain. POST (curators) creates one; the caller curates it."""

    def get_permissions(self):
        return [IsAuthenticated(), HasRole(CURATOR)()] if self.request.method == "POST" else [IsAuthenticated()]

    @extend_schema(tags=TAGS, responses=DatanetSerializer(many=True), parameters=[
        OpenApiParameter("search", str, description="Words in the name, slug or description"),
        OpenApiParameter("domain", str, enum=Datanet.Domain.values)])
    def get(self, request):
        qs = selectors.datanet_list(search=request.query_params.get("search", ""),
                                    domain=query_choice(request, "domain", Datanet.Domain.values)).prefetch_related("curators")
        return self.paginate(qs.select_related("owner"), DatanetSerializer)

    @extend_schema(tags=TAGS, request=DatanetCreateSerializer, responses={201: DatanetDetailSerializer, 400: ERROR, 403: ERROR})
    def post(self, request):
        serializer = DatanetCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        datanet = services.datanet_create(owner=request.user, curators=[request.user], **serializer.validated_data)
        return Response(_detail_data(datanet), status=status.HTTP_201_CREATED)


def _detail_data(datanet: Datanet) -> dict:
    datanet.counts = selectors.datanet_counts(datanet=datanet)
    datanet.accepted_records = datanet.counts["records"]["accepted"]
    datanet.label_distribution = [{"label": lab, "records": n}
                                  for lab, n in selectors.datanet_label_distribution(datanet=datanet)]
    datanet.contributors = selectors.datanet_contributors_ranked(datanet=datanet)
    return DatanetDetailSerializer(datanet).data


class DatanetDetailApi(APIView):
    """One Datanet with its counts, label distribution of accepted records and contributors ranked."""

    @extend_schema(tags=TAGS, responses={200: DatanetDetailSerializer, 404: ERROR})
    def get(self, request, slug: str):
        return Response(_detail_data(_datanet(slug)))


class ContributionListUploadApi(PaginatedApi):
    """A Datanet's contributions (curators: all; others: their own). POST uploads a file (multipart).

    The upload answers 201 with a new contribution whose ingest is queued (poll its `url`), or 200 with
    the first contribution when the same file was uploaded before. When the columns cannot be guessed,
    `ingest_state` is `mapping`: choose them with POST `.../start/`.
    """

    parser_classes = [MultiPartParser, FormParser]

    def get_permissions(self):
        return [IsAuthenticated(), HasRole(CONTRIBUTOR)()] if self.request.method == "POST" else [IsAuthenticated()]

    @extend_schema(tags=TAGS, responses=ContributionSerializer(many=True), parameters=[
        OpenApiParameter("status", str, enum=Contribution.Status.values)])
    def get(self, request, slug: str):
        qs = selectors.contributions_visible_to(user=request.user, datanet=_datanet(slug))
        status_ = query_choice(request, "status", Contribution.Status.values)
        if status_:
            qs = qs.filter(status=status_)
        return self.paginate(qs, ContributionSerializer)

    @extend_schema(tags=TAGS, request={"multipart/form-data": UploadSerializer},
                   responses={201: ContributionSerializer, 200: ContributionSerializer, 400: ERROR, 403: ERROR,
                              413: OpenApiResponse(description="The file is over DATANET_UPLOAD_MAX_BYTES")})
    def post(self, request, slug: str):
        datanet = _datanet(slug)
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        services.upload_size_check(size=length, request_body=True)  # before the body is read
        serializer = UploadSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        result = services.contribution_upload(
            datanet=datanet, contributor=request.user, file=data["file"], file_name=data["file"].name,
            text_column=data["text_column"], label_column=data["label_column"], text_mode=data["text_mode"],
            drop_bad_rows=data["drop_bad_rows"], is_evaluation=data["is_evaluation"])
        return Response(ContributionSerializer(result.contribution, context={"request": request}).data,
                        status=status.HTTP_201_CREATED if result.created else status.HTTP_200_OK)


class MyContributionListApi(PaginatedApi):
    """The caller's contributions to every Datanet, newest first, with their ingest and review state."""

    @extend_schema(tags=TAGS, responses=ContributionSerializer(many=True))
    def get(self, request):
        return self.paginate(selectors.contributions_of(user=request.user).select_related("contributor", "curator"),
                         ContributionSerializer)


class ContributionDetailApi(APIView):
    """One contribution: ingest state and progress, row errors, counts, stake and review (poll this).
    DELETE withdraws it (its contributor, while pending and before any stake was sent)."""

    @extend_schema(tags=TAGS, responses={200: ContributionDetailSerializer, 404: ERROR})
    def get(self, request, contribution_id: int):
        return Response(ContributionDetailSerializer(_contribution_for(request, contribution_id),
                                                     context={"request": request}).data)

    @extend_schema(tags=TAGS, responses={204: None, 403: ERROR, 404: ERROR,
                                         409: OpenApiResponse(description="Decided, ingesting, or staked on-chain")})
    def delete(self, request, contribution_id: int):
        services.contribution_withdraw(contribution=_contribution_for(request, contribution_id), user=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


DECIDE_RESPONSES = {200: ContributionSerializer, 400: ERROR, 403: ERROR, 404: ERROR,
                    409: OpenApiResponse(description="Already decided, or not ingested yet")}


class ContributionAcceptApi(APIView):
    """A curator of its Datanet accepts a pending, ingested contribution: its records join the Datanet and the
    stake is bonded, then released (never one's own upload)."""

    @extend_schema(tags=TAGS, request=DecisionSerializer, responses=DECIDE_RESPONSES)
    def post(self, request, contribution_id: int):
        data = DecisionSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        c = services.contribution_accept(contribution=_contribution_for(request, contribution_id),
                                         curator=request.user, reason=data.validated_data["reason"])
        return Response(ContributionSerializer(c, context={"request": request}).data)


class ContributionRejectApi(APIView):
    """A curator of its Datanet rejects a pending, ingested contribution with a reason: the Datanet's slash
    fraction of the stake is slashed."""

    @extend_schema(tags=TAGS, request=RejectSerializer, responses=DECIDE_RESPONSES)
    def post(self, request, contribution_id: int):
        data = RejectSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        c = services.contribution_reject(contribution=_contribution_for(request, contribution_id),
                                         curator=request.user, reason=data.validated_data["reason"])
        return Response(ContributionSerializer(c, context={"request": request}).data)


class ContributionBulkDecideApi(APIView):
    """A curator accepts or rejects several of the Datanet's contributions at once (a reason is required to
    reject); each is decided on its own, and the ones that cannot be are listed with why."""

    @extend_schema(tags=TAGS, request=BulkDecisionSerializer, responses={200: BulkDecisionResultSerializer,
                                                                         400: ERROR, 403: ERROR, 404: ERROR})
    def post(self, request, slug: str):
        datanet = _datanet(slug)
        if not services.user_can_curate(user=request.user, datanet=datanet):
            raise PermissionDenied(services.ERR_NOT_CURATOR.format(datanet=datanet.name))
        data = BulkDecisionSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        ids = data.validated_data["ids"]
        found = {c.pk: c for c in datanet.contributions.filter(pk__in=ids)}
        missing = [i for i in ids if i not in found]
        if missing:
            raise NotFound(f"No contribution {', '.join(map(str, missing))} in this Datanet.")
        decided, errors = services.contributions_decide(
            contributions=[found[i] for i in dict.fromkeys(ids)], curator=request.user,
            decision=data.validated_data["decision"], reason=data.validated_data["reason"])
        return Response({"decided": ContributionSerializer(decided, many=True, context={"request": request}).data,
                         "errors": errors})


class ContributionStartApi(APIView):
    """Choose the columns of a contribution waiting in `mapping` and queue its ingest."""

    @extend_schema(tags=TAGS, request=ContributionStartSerializer, responses={202: ContributionSerializer, 400: ERROR, 403: ERROR})
    def post(self, request, contribution_id: int):
        c = _contribution_for(request, contribution_id)
        serializer = ContributionStartSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        c = services.contribution_start(contribution=c, user=request.user, **serializer.validated_data)
        return Response(ContributionSerializer(c, context={"request": request}).data, status=status.HTTP_202_ACCEPTED)


class ContributionRetryApi(APIView):
    """After a failed ingest, queue it again from the stored file, dropping the rows that failed validation."""

    @extend_schema(tags=TAGS, request=None, responses={202: ContributionSerializer, 400: ERROR, 403: ERROR})
    def post(self, request, contribution_id: int):
        c = services.contribution_retry(contribution=_contribution_for(request, contribution_id), user=request.user,
                                        drop_bad_rows=True)
        return Response(ContributionSerializer(c, context={"request": request}).data, status=status.HTTP_202_ACCEPTED)


class RecordCursorPagination(CursorPagination):
    """Keyset pages in id order: `?cursor=` from `next`/`previous`; no COUNT, so a page costs the same at
    any depth of a million-record Datanet. `limit` sets the page size (at most 200)."""

    ordering = "id"
    page_size = 50
    page_size_query_param = "limit"
    max_page_size = 200

    def get_page_size(self, request):
        # A `limit` that is not a whole number in 1..200 is a 400, not silently the default page (the schema says
        # so, and the contract test sends `limit=null`).
        value = request.query_params.get(self.page_size_query_param, "")
        if value == "":
            return self.page_size
        if not value.isdigit() or not 1 <= int(value) <= self.max_page_size:
            raise ValidationError({self.page_size_query_param: [f"Must be a whole number from 1 to {self.max_page_size}."]})
        return int(value)


class RecordListApi(PaginatedApi):
    """A Datanet's records in id order, keyset-paginated: accepted ones and the caller's own (curators: all);
    full-text search (`q`: every word, whole words) and filters by label, contributor, review status.
    Keyset rather than the API's page numbers: `next`/`previous` carry a cursor and there is no `count`,
    so a page costs the same at any depth of a million-record Datanet (benchmarks/browse.py)."""

    pagination_class = RecordCursorPagination

    @extend_schema(tags=TAGS, responses=RecordSerializer(many=True), parameters=[
        OpenApiParameter("q", str, description="Full-text search: records holding every word"),
        OpenApiParameter("label", str), OpenApiParameter("contribution", ID_QUERY),
        OpenApiParameter("contributor", str, description="username"),
        OpenApiParameter("status", str, enum=selectors.RECORD_STATUSES, description="The contribution's review status"),
        OpenApiParameter("conflicts", bool, description="Only (true) or no (false) conflicting records"),
        OpenApiParameter("cursor", str, description="From `next`/`previous`"),
        OpenApiParameter("limit", {"type": "integer", "minimum": 1, "maximum": RecordCursorPagination.max_page_size},
                         description="Page size, at most 200 (default 50)")])
    def get(self, request, slug: str):
        p = request.query_params
        qs = selectors.records_visible_to(
            user=request.user, datanet=_datanet(slug), label=p.get("label", ""),
            contribution_id=query_int(request, "contribution"), contributor=p.get("contributor", ""),
            conflicts=query_bool(request, "conflicts"), search=p.get("q", "")[:200],
            status=query_choice(request, "status", selectors.RECORD_STATUSES))
        return self.paginate(qs, RecordSerializer)


class VersionListCreateApi(PaginatedApi):
    """A Datanet's versions, newest first. POST (its curators only) freezes the accepted records as a new one."""

    @extend_schema(tags=TAGS, responses=VersionSerializer(many=True))
    def get(self, request, slug: str):
        qs = _datanet(slug).versions.select_related("datanet", "created_by").order_by("-number")
        return self.paginate(qs, VersionSerializer)

    @extend_schema(tags=TAGS, request=None, responses={201: VersionSerializer, 400: ERROR, 403: ERROR})
    def post(self, request, slug: str):
        version = services.datanet_version_create(datanet=_datanet(slug), user=request.user)
        return Response(VersionSerializer(version, context={"request": request}).data, status=status.HTTP_201_CREATED)


class VersionDetailApi(APIView):
    """One version: Merkle root, counts and download links."""

    @extend_schema(tags=TAGS, responses={200: VersionSerializer, 404: ERROR})
    def get(self, request, slug: str, number: int):
        return Response(VersionSerializer(_version(slug, number), context={"request": request}).data)


class VersionDownloadApi(APIView):
    """The version's export as a file: Parquet or JSONL (columns text, label, record_id, contributor)."""

    @extend_schema(tags=TAGS, responses={(200, "application/octet-stream"): OpenApiTypes.BINARY, 404: ERROR})
    def get(self, request, slug: str, number: int, fmt: str):
        version = _version(slug, number)
        if fmt not in DOWNLOADS or not version.export_path:
            raise Http404("No such export.")
        name, content_type = DOWNLOADS[fmt]
        path = Path(version.export_path) / name
        if not path.is_file():
            raise Http404("The export file is missing.")
        return FileResponse(open(path, "rb"), as_attachment=True, content_type=content_type,  # noqa: SIM115 - FileResponse closes it
                            filename=f"{slug}-v{number}.{fmt}")


class VersionProofApi(APIView):
    """Merkle inclusion proof of one record in a version: anyone can check it against the published root."""

    @extend_schema(tags=TAGS, responses={200: ProofSerializer, 404: ERROR})
    def get(self, request, slug: str, number: int, record_id: int):
        proof = services.version_record_proof(version=_version(slug, number), record_id=record_id)
        return Response(ProofSerializer(proof).data)
