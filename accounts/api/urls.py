from django.urls import path
from rest_framework.authtoken.views import obtain_auth_token

from accounts.api.views import ApiKeyListCreateApi, ApiKeyRevokeApi, MeApi, SignUpApi

urlpatterns = [
    path("auth/token/", obtain_auth_token, name="api-token"),
    path("auth/signup/", SignUpApi.as_view(), name="api-signup"),
    path("me/", MeApi.as_view(), name="api-me"),
    path("api-keys/", ApiKeyListCreateApi.as_view(), name="api-keys"),
    path("api-keys/<int:key_id>/", ApiKeyRevokeApi.as_view(), name="api-key-revoke"),
]
