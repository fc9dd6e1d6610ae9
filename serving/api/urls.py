from django.urls import re_path

from serving.api import views

urlpatterns = [
    # With or without the trailing slash: integrators POST to the documented path as written.
    re_path(r"^models/(?P<model_id>[^/]+)/infer/?$", views.ModelInferApi.as_view(), name="api-model-infer"),
    re_path(r"^inferences/?$", views.InferenceListApi.as_view(), name="api-inference-list"),
    re_path(r"^models/(?P<model_id>[^/]+)/batches/?$", views.ModelBatchCreateApi.as_view(), name="api-model-batches"),
    re_path(r"^batches/(?P<batch_id>[0-9]+)/?$", views.BatchDetailApi.as_view(), name="api-batch"),
    re_path(r"^batches/(?P<batch_id>[0-9]+)/output/?$", views.BatchOutputApi.as_view(), name="api-batch-output"),
]
