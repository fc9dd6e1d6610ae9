from django.urls import path

from factory.api import views

urlpatterns: list = [
    path("factory/base-models/", views.BaseModelListApi.as_view(), name="api-factory-base-models"),
    path("factory/jobs/", views.JobListCreateApi.as_view(), name="api-factory-jobs"),
    path("factory/jobs/<int:job_id>/", views.JobDetailApi.as_view(), name="api-factory-job"),
    path("factory/jobs/<int:job_id>/cancel/", views.JobCancelApi.as_view(), name="api-factory-job-cancel"),
    path("factory/jobs/<int:job_id>/retry/", views.JobRetryApi.as_view(), name="api-factory-job-retry"),
    path("factory/models/", views.ModelListApi.as_view(), name="api-factory-models"),
    path("factory/models/<int:model_id>/", views.ModelDetailApi.as_view(), name="api-factory-model"),
    path("factory/models/<int:model_id>/adapter/", views.ModelAdapterApi.as_view(), name="api-factory-model-adapter"),
    path("factory/models/<int:model_id>/merged/", views.ModelMergedApi.as_view(), name="api-factory-model-merged"),
]
