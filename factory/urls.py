from django.urls import path

from factory import views

app_name = "factory"
urlpatterns = [
    path("", views.factory_home, name="home"),
    path("models/", views.model_list, name="models"),
]
