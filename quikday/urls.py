from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from observability.health import healthz
from realtime.http.events import RunEventsView
from realtime.http.summaries import RunSummaryListView
from realtime.http.tickets import WsTicketView

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("", include("observability.urls")),
    path("admin/", admin.site.urls),
    path("api/", include("runs.api.urls")),
    path("api/runs/<uuid:run_id>/events/", RunEventsView.as_view(), name="run-events"),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    # The split view serves Swagger UI's start-up script as a file (?script), which the
    # site's Content-Security-Policy lets run; an inline one it would refuse.
    path(
        "api/docs/",
        SpectacularSwaggerSplitView.as_view(url_name="schema", template_name="web/swagger_ui.html"),
        name="api-docs",
    ),
    path("api/ws-tickets/", WsTicketView.as_view(), name="ws-tickets"),
    path("api/run-summaries/", RunSummaryListView.as_view(), name="run-summaries"),
    path("", include("web.urls")),
]

handler400 = "runs.api.errors.json_bad_request"
handler404 = "runs.api.errors.json_not_found"
handler500 = "runs.api.errors.json_server_error"
