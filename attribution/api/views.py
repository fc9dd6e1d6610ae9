from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from attribution.api.serializers import ExplainRequestSerializer, ExplainResponseSerializer, ModelAttributionSerializer
from attribution.publication import publication_get, weights_file_name
from attribution.selectors import model_attribution_overview
from attribution.services import prediction_explain
from factory.models import FineTunedModel

MODEL_ID = OpenApiParameter("model_id", int, OpenApiParameter.PATH, description="Fine-tuned model id")


def _model(model_id: int):
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


class ModelAttributionWeightsApi(APIView):
    """The published weights file of a model: the Merkle tree (OpenZeppelin StandardMerkleTree dump over
    (account, weight in 1e-18 units)) whose root is on-chain, plus who each account is. Public, so anyone
    can recompute the root; 404 until the model's index is built.
    """

    permission_classes = [AllowAny]

    @extend_schema(parameters=[MODEL_ID], responses=OpenApiTypes.OBJECT, tags=["attribution"])
    def get(self, request, model_id: int):
        model = _model(model_id)
        response = Response(publication_get(model=model).document)
        response["Content-Disposition"] = f'inline; filename="{weights_file_name(model)}"'
        return response
