from django.contrib import admin
from django.urls import path

from observability import views

urlpatterns = [
    path("metrics", views.metrics_view, name="metrics"),
    # Before admin.site.urls: the admin's catch-all would answer these paths itself.
    path("admin/realtime/", admin.site.admin_view(views.realtime_page), name="observability-realtime"),
    path("admin/realtime/status.json", views.realtime_status, name="observability-realtime-status"),
]
