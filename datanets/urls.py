from django.urls import path

from datanets import views

app_name = "datanets"
urlpatterns = [path("", views.datanet_list, name="list")]
