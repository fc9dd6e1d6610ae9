from django.urls import re_path

from serving.api import views

urlpatterns = [
    # With or without the trailing slash: integrators POST to the documented path as written.
    re_path(r"^models/(?P<model_id>[^/]+)/infer/?$", views.ModelInferApi.as_view(), name="api-model-infer"),
    re_path(r"^inferences/?$", views.InferenceListApi.as_view(), name="api-inference-list"),
]
