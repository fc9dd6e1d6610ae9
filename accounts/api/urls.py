from django.urls import path
from rest_framework.authtoken.views import obtain_auth_token

from accounts.api.views import MeApi

urlpatterns = [
    path("auth/token/", obtain_auth_token, name="api-token"),
    path("me/", MeApi.as_view(), name="api-me"),
]
