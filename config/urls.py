from django.conf import settings
from django.conf.urls.static import static
from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from config.api import api_root
from core import views as core_views

api_v1 = [
    path("", api_root, name="api-root"),
    path("", include("accounts.api.urls")),
    path("", include("datanets.api.urls")),
    path("", include("factory.api.urls")),
    path("", include("attribution.api.urls")),
    path("", include("serving.api.urls")),
    path("", include("ledger.api.urls")),
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
]

urlpatterns = [
    path("", core_views.home, name="home"),
    path("healthz", core_views.healthz, name="healthz"),
    path("accounts/", include("accounts.urls")),
    path("datanets/", include("datanets.urls")),
    path("factory/", include("factory.urls")),
    path("factory/", include("serving.urls")),  # the playground keeps its path under the model page
    path("attribution/", include("attribution.urls")),
    path("ledger/", include("ledger.urls")),
    path("admin/", admin.site.urls),
    path("api/v1/", include(api_v1)),
    # OpenAI-compatible endpoints: clients are given a base URL ending in /v1 (docs/openai_api.md).
    path("v1/", include("serving.openai_api.urls")),
]
if settings.DEBUG:
    urlpatterns += static(settings.MEDIA_URL, document_root=settings.MEDIA_ROOT)

# Styled pages for people, the API's error shape under /api/ (core/views.py).
handler403 = "core.views.permission_denied"
handler404 = "core.views.page_not_found"
handler500 = "core.views.server_error"

admin.site.site_header = "Model Factory console"
admin.site.site_title = "Model Factory"
