from django.urls import re_path

from attribution.api.views import ModelAttributionApi, ModelAttributionWeightsApi, ModelExplainApi

# Trailing slash optional: the paths are documented without one, and POST cannot follow APPEND_SLASH.
urlpatterns = [
    re_path(r"^models/(?P<model_id>[0-9]+)/attribution/?$", ModelAttributionApi.as_view(), name="api-model-attribution"),
    re_path(r"^models/(?P<model_id>[0-9]+)/attribution-weights/?$", ModelAttributionWeightsApi.as_view(),
            name="api-model-attribution-weights"),
    re_path(r"^models/(?P<model_id>[0-9]+)/explain/?$", ModelExplainApi.as_view(), name="api-model-explain"),
]
