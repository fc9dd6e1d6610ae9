"""Paid inference API (OpenLoRA serving): POST /api/v1/models/<id>/infer, GET /api/v1/inferences/.

Authenticated by session, token or `Api-Key` (per-key rate limit: accounts.authentication). The view is
thin: serving.services validates, runs, attributes and charges; its ApplicationError becomes the 4xx.
"""
from django.db import transaction
from django.http import FileResponse
from django.utils.decorators import method_decorator
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import generics, status
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.models import ApiKey
from serving import batch as batches
from serving.api.serializers import BatchCreateSerializer, BatchSerializer, InferenceSerializer, InferRequestSerializer
from serving.selectors import inference_list
from serving.services import inference_execute, model_get


# Not in the request transaction: the row must be committed before a `gpu` worker can run it, and the
# fee is written in its own transaction by the service.
@method_decorator(transaction.non_atomic_requests, name="dispatch")
class ModelInferApi(APIView):
    @extend_schema(
        request=InferRequestSerializer,
        responses={200: InferenceSerializer, 400: OpenApiResponse(description="empty input"),
                   404: OpenApiResponse(description="no such model"),
                   409: OpenApiResponse(description="the model cannot serve yet"),
                   413: OpenApiResponse(description="input over SERVING_MAX_INPUT_CHARS"),
                   429: OpenApiResponse(description="the API key's rate limit")},
        summary="Run a fine-tuned model on text: output, attribution, fee charged",
    )
    def post(self, request, model_id: str):
        data = InferRequestSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        model = model_get(model_id=model_id)
        key = request.auth if isinstance(request.auth, ApiKey) else None
        inference = inference_execute(model=model, user=request.user, text=data.validated_data["text"], api_key=key)
        return Response(InferenceSerializer(inference).data, status=status.HTTP_200_OK)


class InferenceListApi(generics.ListAPIView):
    """Your own paid calls, newest first (`?model=<id>` to filter)."""

    serializer_class = InferenceSerializer

    def get_queryset(self):
        model_id = self.request.query_params.get("model")
        return inference_list(user=self.request.user, model_id=int(model_id) if str(model_id).isdigit() else None)


class ModelBatchCreateApi(APIView):
    """Upload a CSV of inputs (a `text` column) to run through a model as a background job; each row is a paid
    call, charged as /infer. 202 with the batch; poll it, then download its output CSV."""

    parser_classes = [MultiPartParser, FormParser]

    @extend_schema(request={"multipart/form-data": BatchCreateSerializer},
                   responses={202: BatchSerializer, 400: OpenApiResponse(description="not a CSV with a text column"),
                              404: OpenApiResponse(description="no such model"),
                              409: OpenApiResponse(description="the model cannot serve yet"),
                              413: OpenApiResponse(description="over SERVING_BATCH_MAX_ROWS or _BYTES")},
                   summary="Batch inference: a CSV of inputs in, a CSV of outputs out (a job)")
    def post(self, request, model_id: str):
        data = BatchCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        upload = data.validated_data["file"]
        key = request.auth if isinstance(request.auth, ApiKey) else None
        batch = batches.batch_create(model=model_get(model_id=model_id), user=request.user, api_key=key,
                                     data=upload.read(), file_name=upload.name)
        return Response(BatchSerializer(batch, context={"request": request}).data, status=status.HTTP_202_ACCEPTED)


class BatchDetailApi(APIView):
    """One of your batches: status, rows done and failed, fee, and the output's URL once done."""

    @extend_schema(responses={200: BatchSerializer, 404: OpenApiResponse(description="no such batch of yours")})
    def get(self, request, batch_id: int):
        batch = batches.batch_get(batch_id=batch_id, user=request.user)
        return Response(BatchSerializer(batch, context={"request": request}).data)


class BatchOutputApi(APIView):
    """The output CSV: the input's columns, then output, probabilities, inference_id, error."""

    @extend_schema(responses={(200, "text/csv"): bytes, 404: OpenApiResponse(description="no such batch of yours"),
                              409: OpenApiResponse(description="not done yet")})
    def get(self, request, batch_id: int):
        batch = batches.batch_get(batch_id=batch_id, user=request.user)
        path = batches.batch_output_path(batch=batch)
        return FileResponse(open(path, "rb"), as_attachment=True, content_type="text/csv",  # noqa: SIM115
                            filename=f"batch-{batch.pk}-output.csv")
