"""/metrics for Prometheus, and the admin's "Realtime" page for staff.

/metrics answers staff sessions and ``Authorization: Bearer $METRICS_TOKEN``
(401 otherwise, 403 for a signed-in non-staff user). The Realtime page is an
admin view (the admin's own login and staff check); its JSON, which the page
fetches every 2 s, answers 401/403 in JSON instead of redirecting.
"""

from __future__ import annotations

import hmac

from django.conf import settings
from django.contrib import admin
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from observability import multiproc, record, status
from observability.collectors import ScrapeCollector


def _bearer_ok(request: HttpRequest) -> bool:
    expected = settings.METRICS_TOKEN
    scheme, _, credential = request.headers.get("Authorization", "").partition(" ")
    return bool(expected) and scheme.lower() == "bearer" and hmac.compare_digest(credential.strip(), expected)


def _refusal(request: HttpRequest) -> JsonResponse | None:
    """None when the request may read operational data; else the JSON 401/403 to answer."""
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated:
        if user.is_active and user.is_staff:
            return None
        return JsonResponse({"error": "forbidden", "message": "staff only"}, status=403)
    response = JsonResponse({"error": "unauthorized", "message": "sign in as staff"}, status=401)
    return response


def scrape_registry() -> CollectorRegistry:
    """This scrape's registry: every process's files (multiprocess) or this process's own metrics."""
    if multiproc.enabled():
        multiproc.forget_dead_processes()
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
    else:
        from observability import metrics  # noqa: F401 - registers the metrics on REGISTRY

        registry = CollectorRegistry()
        registry.register(_Everything())
    registry.register(ScrapeCollector())
    return registry


class _Everything:
    """The default registry's metrics, inside a registry of this scrape's own."""

    def collect(self):
        return REGISTRY.collect()


@never_cache
@require_safe
def metrics_view(request: HttpRequest) -> HttpResponse:
    if not _bearer_ok(request):
        refusal = _refusal(request)
        if refusal is not None:
            if refusal.status_code == 401:
                refusal["WWW-Authenticate"] = 'Bearer realm="metrics"'
            return refusal
    record.flush()  # this process's latest frames (the others flush on their reporter's beat)
    return HttpResponse(generate_latest(scrape_registry()), content_type=CONTENT_TYPE_LATEST)


@never_cache
def realtime_page(request: HttpRequest) -> HttpResponse:
    """The page (wrapped in admin.site.admin_view by the URLconf: staff only)."""
    context = {
        **admin.site.each_context(request),
        "title": "Realtime",
        "interval_ms": 2000,
        "embedded": settings.RUNS_EXECUTOR == "inline",
    }
    return render(request, "observability/realtime.html", context)


@never_cache
@require_safe
def realtime_status(request: HttpRequest) -> JsonResponse:
    refusal = _refusal(request)
    if refusal is not None:
        return refusal
    return JsonResponse(status.page_data())
