from django.urls import path

from serving import views

# Mounted under /factory/ (config/urls.py): the playground keeps the path it had beside the model page; the
# chat playground sits beside it.
app_name = "serving"
urlpatterns = [
    path("models/<int:pk>/try/", views.model_playground, name="model-playground"),
    path("models/<int:pk>/chat/", views.model_chat, name="model-chat"),
    path("models/<int:pk>/chat/stream/", views.model_chat_stream, name="model-chat-stream"),
    path("inferences/<int:pk>/answer/", views.inference_answer, name="inference-answer"),
    path("models/<int:pk>/batches/", views.model_batches, name="model-batches"),
    path("batches/<int:pk>/output.csv", views.batch_output, name="batch-output"),
]
