from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView

from realtime.api import RunEventsView
from runs.health import healthz

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("admin/", admin.site.urls),
    path("api/", include("runs.api.urls")),
    path("api/runs/<uuid:run_id>/events/", RunEventsView.as_view(), name="run-events"),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
]

handler400 = "runs.api.errors.json_bad_request"
handler404 = "runs.api.errors.json_not_found"
handler500 = "runs.api.errors.json_server_error"
