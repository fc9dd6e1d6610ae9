from django.urls import re_path

from serving.openai_api import views

# Mounted at /v1/ (config/urls.py), beside /api/v1/: OpenAI clients take a base URL ending in /v1. With
# or without a trailing slash, as clients write it.
urlpatterns = [
    re_path(r"^models/?$", views.ModelListApi.as_view(), name="openai-models"),
    re_path(r"^models/(?P<name>[^/]+)/?$", views.ModelDetailApi.as_view(), name="openai-model"),
    re_path(r"^chat/completions/?$", views.ChatCompletionApi.as_view(), name="openai-chat-completions"),
    re_path(r"^completions/?$", views.CompletionApi.as_view(), name="openai-completions"),
]
