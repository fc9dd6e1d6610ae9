from django.urls import path
from rest_framework.authtoken.views import obtain_auth_token

from accounts.api.views import ApiKeyListCreateApi, ApiKeyRevokeApi, MeApi

urlpatterns = [
    path("auth/token/", obtain_auth_token, name="api-token"),
    path("me/", MeApi.as_view(), name="api-me"),
    path("api-keys/", ApiKeyListCreateApi.as_view(), name="api-keys"),
    path("api-keys/<int:key_id>/", ApiKeyRevokeApi.as_view(), name="api-key-revoke"),
]
