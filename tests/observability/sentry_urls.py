"""A URLconf with a view that fails, for the Sentry test only."""

from django.urls import path


def broken(request):
    raise RuntimeError("the view failed (Authorization: Token 0123456789abcdef0123)")


urlpatterns = [path("broken", broken)]
