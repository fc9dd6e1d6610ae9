from django.urls import path

from factory import views

app_name = "factory"
urlpatterns = [
    path("", views.factory_home, name="home"),
    path("base-models/", views.base_model_list, name="base-models"),
    path("jobs/", views.job_list, name="jobs"),
    path("jobs/new/", views.finetune_new, name="finetune-new"),
    path("jobs/new/estimate/", views.finetune_estimate, name="finetune-estimate"),
    path("jobs/compare/", views.job_compare, name="compare"),
    path("jobs/<int:pk>/", views.job_detail, name="job"),
    path("jobs/<int:pk>/live/", views.job_live, name="job-live"),
    path("jobs/<int:pk>/cancel/", views.job_cancel, name="job-cancel"),
    path("jobs/<int:pk>/retry/", views.job_retry, name="job-retry"),
    path("models/", views.model_list, name="models"),
    path("models/<int:pk>/", views.model_detail, name="model"),
    path("models/<int:pk>/adapter.zip", views.model_download, name="model-download"),
    path("models/<int:pk>/merged/", views.model_merge, name="model-merge"),
    path("models/<int:pk>/merged/status/", views.model_merged_status, name="model-merged-status"),
    path("models/<int:pk>/merged.zip", views.model_merged_download, name="model-merged-download"),
]
