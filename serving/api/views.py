"""Paid inference API (OpenLoRA serving): POST /api/v1/models/<id>/infer, GET /api/v1/inferences/.

Authenticated by session, token or `Api-Key` (per-key rate limit: accounts.authentication). The view is
thin: serving.services validates, runs, attributes and charges; its ApplicationError becomes the 4xx.
"""
from django.db import transaction
from django.utils.decorators import method_decorator
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import generics, status
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.models import ApiKey
from serving.api.serializers import InferenceSerializer, InferRequestSerializer
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
