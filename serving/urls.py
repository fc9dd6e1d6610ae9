from django.urls import path

from serving import views

# Mounted under /factory/ (config/urls.py): the playground keeps the path it had beside the model page.
app_name = "serving"
urlpatterns = [
    path("models/<int:pk>/try/", views.model_playground, name="model-playground"),
]
