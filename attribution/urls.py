from django.urls import path

from attribution import views

app_name = "attribution"
urlpatterns = [
    path("models/<int:model_id>/", views.model_attribution, name="model"),
    path("models/<int:model_id>/contributors/", views.model_contributors_partial, name="model-contributors"),
    path("models/<int:model_id>/explain/", views.model_explain, name="model-explain"),
    path("models/<int:model_id>/weights.json", views.model_weights_download, name="model-weights"),
    path("models/<int:model_id>/rebuild/", views.model_index_rebuild, name="model-rebuild"),
]
