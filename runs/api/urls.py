from django.urls import path

from runs.api import views

urlpatterns = [
    path("", views.ApiIndexView.as_view(), name="api-index"),
    path("runs/", views.RunListCreateView.as_view(), name="run-list"),
    path("runs/<uuid:run_id>/", views.RunDetailView.as_view(), name="run-detail"),
    path("runs/<uuid:run_id>/cancel/", views.RunCancelView.as_view(), name="run-cancel"),
    path("tools/", views.ToolListView.as_view(), name="tool-list"),
]
