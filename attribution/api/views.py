from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from attribution.api.serializers import ExplainRequestSerializer, ExplainResponseSerializer, ModelAttributionSerializer
from attribution.selectors import model_attribution_overview
from attribution.services import prediction_explain

MODEL_ID = OpenApiParameter("model_id", int, OpenApiParameter.PATH, description="Fine-tuned model id")


def _model(model_id: int):
    from factory.models import FineTunedModel

    return get_object_or_404(FineTunedModel, pk=model_id)


class ModelAttributionApi(APIView):
    """A model's attribution index status and its contributors' weights (what the ledger pays by)."""

    permission_classes = [IsAuthenticated]

    @extend_schema(parameters=[MODEL_ID], responses=ModelAttributionSerializer, tags=["attribution"])
    def get(self, request, model_id: int):
        data = model_attribution_overview(model=_model(model_id), limit=None)
        return Response(ModelAttributionSerializer(data).data)


class ModelExplainApi(APIView):
    """Classify a text and return the training records and contributor shares behind the prediction.

    409 while the model's attribution index is not ready.
    """

    permission_classes = [IsAuthenticated]

    @extend_schema(parameters=[MODEL_ID], request=ExplainRequestSerializer, responses=ExplainResponseSerializer,
                   tags=["attribution"])
    def post(self, request, model_id: int):
        model = _model(model_id)
        serializer = ExplainRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        result = prediction_explain(model=model, **serializer.validated_data)
        return Response(ExplainResponseSerializer(result).data)
