from django.contrib.auth import views as auth_views
from django.urls import path

from accounts import views

app_name = "accounts"
urlpatterns = [
    path("signup/", views.signup, name="signup"),
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("profile/", views.profile, name="profile"),
    path("profile/api-keys/", views.api_key_new, name="api-key-new"),
    path("profile/api-keys/<int:key_id>/revoke/", views.api_key_delete, name="api-key-revoke"),
]
