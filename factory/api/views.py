"""REST API of the Model Factory: the base-model catalog, fine-tune jobs (create with the form's rules,
status with metrics, cancel, retry) and fine-tuned models (list, detail, adapter download).
Paid inference is the serving app's (serving/api/)."""
from django.http import FileResponse, HttpResponse
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from core.api import ID_QUERY, HasRole, PaginatedApi, query_bool, query_choice, query_int
from core.errors import ApplicationError
from core.roles import MODEL_DEVELOPER
from datanets.models import DatanetVersion
from factory import exports, services, ui_services
from factory.api.serializers import (
    PARAM_NAMES,
    BaseModelSerializer,
    FineTunedModelDetailSerializer,
    FineTunedModelSerializer,
    JobCreateSerializer,
    JobDetailSerializer,
    JobSerializer,
    MergedStateSerializer,
)
from factory.models import BaseModel, FineTunedModel, FineTuneJob


class BaseModelListApi(PaginatedApi):
    """The base-model catalog (active entries)."""

    @extend_schema(responses=BaseModelSerializer(many=True), tags=["factory"])
    def get(self, request):
        return self.paginate(ui_services.base_model_list(), BaseModelSerializer)


JOB_FILTERS = [
    OpenApiParameter("status", str, enum=FineTuneJob.Status.values, required=False),
    OpenApiParameter("base_model", ID_QUERY, required=False, description="BaseModel id"),
    OpenApiParameter("datanet", ID_QUERY, required=False, description="Datanet id"),
    OpenApiParameter("mine", bool, required=False, description="Only the caller's jobs"),
]


class JobListCreateApi(PaginatedApi):
    """GET: jobs, newest first, with filters. POST (model developers): validate like the form, queue the
    job on the gpu queue; 400 with one message per field when the request does not fit."""

    def get_permissions(self):
        if self.request.method == "POST":
            return [IsAuthenticated(), HasRole(MODEL_DEVELOPER)()]
        return [IsAuthenticated()]

    @extend_schema(parameters=JOB_FILTERS, responses=JobSerializer(many=True), tags=["factory"])
    def get(self, request):
        jobs = ui_services.job_list(user=request.user, status=query_choice(request, "status", FineTuneJob.Status.values),
                                    base_model_id=query_int(request, "base_model"),
                                    datanet_id=query_int(request, "datanet"), mine=bool(query_bool(request, "mine")))
        return self.paginate(jobs.select_related("model"), JobSerializer)

    @extend_schema(request=JobCreateSerializer, responses={
        201: JobDetailSerializer,
        400: OpenApiResponse(description="Field errors: {field: [message]}"),
        403: OpenApiResponse(description="Not a model developer"),
    }, tags=["factory"])
    def post(self, request):
        serializer = JobCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        version = DatanetVersion.objects.select_related("datanet").filter(pk=data["datanet_version"]).first()
        base_model = BaseModel.objects.filter(pk=data["base_model"]).first()
        params = {k: data[k] for k in PARAM_NAMES if k in data}
        preset = data.get("preset") or ""
        try:
            if preset:
                params = {**services.preset_params(preset=preset, base_model=base_model, datanet_version=version,
                                                   task=data["task"]), **params}
            job = services.finetune_job_create(owner=request.user, datanet_version=version, base_model=base_model,
                                               task=data["task"], params=params, preset=preset,
                                               name=data.get("name", ""))
        except ApplicationError as exc:
            errors = exc.extra.get("errors")
            if errors:  # the same messages the form shows, in DRF's field-error shape
                raise serializers.ValidationError({k: [v] for k, v in errors.items()}) from exc
            raise
        return Response(JobDetailSerializer(job).data, status=status.HTTP_201_CREATED)


def _job(pk: int) -> FineTuneJob:
    return get_object_or_404(FineTuneJob.objects.select_related("owner"), pk=pk)


class JobDetailApi(APIView):
    """A job's status, progress, hyperparameters, log and every metric point (training and evaluation)."""

    @extend_schema(responses=JobDetailSerializer, tags=["factory"])
    def get(self, request, job_id: int):
        job = get_object_or_404(FineTuneJob.objects.select_related("owner").prefetch_related("metric_rows"),
                                pk=job_id)
        return Response(JobDetailSerializer(job).data)


class _JobActionApi(APIView):
    permission_classes = [IsAuthenticated, HasRole(MODEL_DEVELOPER)]
    job_action = staticmethod(services.finetune_job_cancel)

    def post(self, request, job_id: int):
        job = self.job_action(job=_job(job_id), user=request.user)  # 403 not the owner, 409 wrong state
        job.refresh_from_db()
        return Response(JobSerializer(job).data)


ACTION_RESPONSES = {200: JobSerializer, 403: OpenApiResponse(description="Not the job's owner or not a developer"),
                    409: OpenApiResponse(description="The job's state does not allow it")}


class JobCancelApi(_JobActionApi):
    """Cancel a queued job at once, or ask a running one to stop after its current step."""

    job_action = staticmethod(services.finetune_job_cancel)

    @extend_schema(request=None, responses=ACTION_RESPONSES, tags=["factory"])
    def post(self, request, job_id: int):
        return super().post(request, job_id)


class JobRetryApi(_JobActionApi):
    """Queue a failed or cancelled job again; it resumes from its last checkpoint."""

    job_action = staticmethod(services.finetune_job_retry)

    @extend_schema(request=None, responses=ACTION_RESPONSES, tags=["factory"])
    def post(self, request, job_id: int):
        return super().post(request, job_id)


class ModelListApi(PaginatedApi):
    """Fine-tuned models, newest first."""

    @extend_schema(parameters=[OpenApiParameter("base_model", ID_QUERY, required=False),
                               OpenApiParameter("task", str, enum=FineTuneJob.Task.values, required=False)],
                   responses=FineTunedModelSerializer(many=True), tags=["factory"])
    def get(self, request):
        models = ui_services.model_list(base_model_id=query_int(request, "base_model"),
                                        task=query_choice(request, "task", FineTuneJob.Task.values))
        return self.paginate(models, FineTunedModelSerializer)


def _model(pk: int) -> FineTunedModel:
    return get_object_or_404(FineTunedModel.objects.select_related("base_model", "developer"), pk=pk)


class ModelDetailApi(APIView):
    """A model with its card (markdown), metrics, Datanet version and Merkle root."""

    @extend_schema(responses=FineTunedModelDetailSerializer, tags=["factory"])
    def get(self, request, model_id: int):
        return Response(FineTunedModelDetailSerializer(_model(model_id)).data)


class ModelAdapterApi(APIView):
    """The adapter as a zip (adapter_model.safetensors, adapter_config.json, tokenizer, model card); the
    X-Adapter-SHA256 header carries the hash registered on-chain."""

    @extend_schema(responses={(200, "application/zip"): OpenApiTypes.BINARY,
                              404: OpenApiResponse(description="No such model, or its files are gone")},
                   tags=["factory"])
    def get(self, request, model_id: int):
        model = _model(model_id)
        data = services.adapter_archive(model=model)
        response = HttpResponse(data, content_type="application/zip")
        response["Content-Disposition"] = f'attachment; filename="model-{model.id}-adapter.zip"'
        response["X-Adapter-SHA256"] = model.adapter_sha256
        return response



MERGED_RESPONSES = {
    (200, "application/zip"): OpenApiTypes.BINARY,
    202: OpenApiResponse(MergedStateSerializer, description="Not ready yet: queued (now, if it was not) or "
                                                            "running; poll again"),
    404: OpenApiResponse(description="No such model"),
    409: OpenApiResponse(description="The merge failed (POST retries it), or the base model is gone"),
}


def merged_zip_response(model: FineTunedModel, path) -> FileResponse:
    return FileResponse(open(path, "rb"), as_attachment=True, content_type="application/zip",  # noqa: SIM115
                        filename=f"{exports.merged_folder_name(model=model)}.zip")


class ModelMergedApi(APIView):
    """The merged model (the base with the adapter folded in by PEFT merge_and_unload; safetensors, config and
    tokenizer in one folder, zipped), loadable by plain transformers' from_pretrained. Written by a `cpu`
    task on the first request and kept: GET answers 202 with the state until it is done, then the zip."""

    @extend_schema(responses=MERGED_RESPONSES, tags=["factory"])
    def get(self, request, model_id: int):
        model = _model(model_id)
        path = exports.finetuned_model_merged_file(model=model)
        if path is not None:
            return merged_zip_response(model, path)
        if model.merged_state == FineTunedModel.MergedState.FAILED:
            raise ApplicationError(exports.ERR_MERGE_FAILED.format(error=model.merged_error), status_code=409,
                                   extra={"state": model.merged_state})
        model = exports.finetuned_model_merged_request(model=model)
        return Response(MergedStateSerializer(model, context={"request": request}).data,
                        status=status.HTTP_202_ACCEPTED)

    @extend_schema(request=None, responses={200: MergedStateSerializer, 202: MergedStateSerializer,
                                            404: OpenApiResponse(description="No such model"),
                                            409: OpenApiResponse(description="The base model is gone")},
                   tags=["factory"])
    def post(self, request, model_id: int):
        """Request the merge (again, when it failed); 200 when it is already done."""
        model = exports.finetuned_model_merged_request(model=_model(model_id), retry=True)
        done = model.merged_state == FineTunedModel.MergedState.DONE
        return Response(MergedStateSerializer(model, context={"request": request}).data,
                        status=status.HTTP_200_OK if done else status.HTTP_202_ACCEPTED)
