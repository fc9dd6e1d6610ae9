from django.urls import path, re_path

from datanets.api import harm, views

urlpatterns = [
    path("datanets/", views.DatanetListCreateApi.as_view(), name="api-datanets"),
    path("datanets/<slug:slug>/", views.DatanetDetailApi.as_view(), name="api-datanet"),
    path("datanets/<slug:slug>/contributions/", views.ContributionListUploadApi.as_view(), name="api-datanet-contributions"),
    path("datanets/<slug:slug>/records/", views.RecordListApi.as_view(), name="api-datanet-records"),
    path("datanets/<slug:slug>/versions/", views.VersionListCreateApi.as_view(), name="api-versions"),
    path("datanets/<slug:slug>/versions/<int:number>/", views.VersionDetailApi.as_view(), name="api-version"),
    path("datanets/<slug:slug>/versions/<int:number>/download/<str:fmt>/", views.VersionDownloadApi.as_view(),
         name="api-version-download"),
    # The trailing slash is optional: the proof URL is often typed or built by hand.
    re_path(r"^datanets/(?P<slug>[-a-zA-Z0-9_]+)/versions/(?P<number>[0-9]+)/proof/(?P<record_id>[0-9]+)/?$",
            views.VersionProofApi.as_view(), name="api-version-proof"),
    path("contributions/", views.MyContributionListApi.as_view(), name="api-contributions"),
    path("contributions/<int:contribution_id>/", views.ContributionDetailApi.as_view(), name="api-contribution"),
    path("contributions/<int:contribution_id>/accept/", views.ContributionAcceptApi.as_view(),
         name="api-contribution-accept"),
    path("contributions/<int:contribution_id>/reject/", views.ContributionRejectApi.as_view(),
         name="api-contribution-reject"),
    path("datanets/<slug:slug>/contributions/decide/", views.ContributionBulkDecideApi.as_view(),
         name="api-datanet-contributions-decide"),
    path("contributions/<int:contribution_id>/start/", views.ContributionStartApi.as_view(), name="api-contribution-start"),
    path("contributions/<int:contribution_id>/retry/", views.ContributionRetryApi.as_view(), name="api-contribution-retry"),
    path("contributions/<int:contribution_id>/harm-flags/", harm.ContributionHarmFlagsApi.as_view(),
         name="api-contribution-harm-flags"),
    path("datanets/<slug:slug>/harm-flags/", harm.DatanetHarmFlagsApi.as_view(), name="api-datanet-harm-flags"),
    path("harm-flags/<int:flag_id>/", harm.HarmFlagDecideApi.as_view(), name="api-harm-flag-decide"),
]
