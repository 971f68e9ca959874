from django.contrib.auth import views as auth_views
from django.urls import path

from web import views

urlpatterns = [
    path("", views.home, name="home"),
    path("login/", auth_views.LoginView.as_view(redirect_authenticated_user=True), name="login"),
    path("logout/", views.LogoutView.as_view(), name="logout"),
    path("account/token/", views.api_token, name="api-token-page"),
    path("runs/", views.run_list, name="run-list-page"),
    path("runs/new/", views.run_new, name="run-new-page"),
    path("runs/<uuid:run_id>/", views.run_detail, name="run-page"),
    path("runs/<uuid:run_id>/cancel/", views.run_cancel, name="run-cancel-page"),
    path("runs/<uuid:run_id>/rerun/", views.run_rerun, name="run-rerun-page"),
]
