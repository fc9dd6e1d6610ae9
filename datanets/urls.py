from django.urls import path

from datanets import views

app_name = "datanets"
urlpatterns = [
    path("", views.datanet_list, name="list"),
    path("new/", views.datanet_create, name="create"),
    path("mine/", views.my_contributions, name="mine"),
    path("review/", views.review_home, name="review-home"),
    path("contributions/<int:pk>/withdraw/", views.contribution_withdraw, name="contribution-withdraw"),
    path("contributions/<int:pk>/", views.contribution_detail, name="contribution"),
    path("contributions/<int:pk>/retry/", views.contribution_retry, name="contribution-retry"),
    path("contributions/<int:pk>/chain-retry/", views.contribution_chain_retry, name="contribution-chain-retry"),
    path("contributions/<int:pk>/status/", views.contribution_status, name="contribution-status"),
    path("versions/<int:pk>/download/<str:fmt>/", views.version_download, name="version-download"),
    path("versions/<int:pk>/export/", views.version_export_status, name="version-export-status"),
    path("harm-flags/<int:pk>/<str:action>/", views.harm_flag_decide, name="harm-flag-decide"),
    path("<slug:slug>/", views.datanet_detail, name="detail"),
    path("<slug:slug>/upload/", views.upload, name="upload"),
    path("<slug:slug>/versions/new/", views.version_create, name="version-create"),
    path("<slug:slug>/review/", views.review_queue, name="review"),
    path("<slug:slug>/review/decide/", views.review_decide, name="review-decide"),
]
