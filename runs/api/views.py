"""REST endpoints for runs and tools. Reads via selectors, writes via services."""

from django.urls import reverse
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.exceptions import NotFound
from rest_framework.generics import GenericAPIView
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from runs import selectors, services
from runs.api.parsers import LimitedJSONParser
from runs.models import RunStatus
from runs.serializers import (
    EXAMPLE_PLAN,
    RunCreateSerializer,
    RunSerializer,
    RunStatusFilterSerializer,
    RunSummarySerializer,
    ToolSerializer,
)
from runs.tools import list_tools

# What GET /api/ lists: a URL name per entry, so that a moved route moves its link.
INDEX = {
    "docs": "api-docs",
    "schema": "schema",
    "runs": "run-list",
    "tools": "tool-list",
    "run_summaries": "run-summaries",
    "ws_tickets": "ws-tickets",
}


class ApiIndexView(APIView):
    """GET /api/: where everything is, for a person (or client) who starts at the root."""

    permission_classes = [AllowAny]

    @extend_schema(exclude=True)
    def get(self, request):
        links = {key: request.build_absolute_uri(reverse(name)) for key, name in INDEX.items()}
        return Response(
            {
                **links,
                "websocket": "/ws/runs/<id>/ (one run), /ws/runs/ (the run list)",
                "authentication": "Authorization: Token <key> (your key: /account/token/) or the session",
            }
        )


def get_visible_run_or_404(request, run_id):
    run = selectors.run_get_for_user(user=request.user, run_id=run_id)
    if run is None:
        raise NotFound("no such run")
    return run


class RunListCreateView(GenericAPIView):
    parser_classes = [LimitedJSONParser]
    serializer_class = RunSummarySerializer

    @extend_schema(
        parameters=[OpenApiParameter("status", str, enum=RunStatus.values)],
        responses=RunSummarySerializer(many=True),
    )
    def get(self, request):
        """The caller's runs, newest first (staff: everyone's)."""
        filters = RunStatusFilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        runs = selectors.run_list_for_user(user=request.user, status=filters.validated_data.get("status"))
        page = self.paginate_queryset(runs)
        return self.get_paginated_response(RunSummarySerializer(page, many=True).data)

    @extend_schema(
        request=RunCreateSerializer,
        responses={201: RunSerializer},
        examples=[
            OpenApiExample(
                "Three steps", value={"prompt": "say hello", "steps": EXAMPLE_PLAN}, request_only=True
            )
        ],
    )
    def post(self, request):
        """Create a run; it is queued and executed once committed."""
        body = RunCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        run = services.run_create(
            owner=request.user, steps=body.validated_data["steps"], prompt=body.validated_data["prompt"]
        )
        run = selectors.run_get_for_user(user=request.user, run_id=run.id)
        return Response(RunSerializer(run).data, status=status.HTTP_201_CREATED)


class RunDetailView(APIView):
    @extend_schema(responses=RunSerializer)
    def get(self, request, run_id):
        """One run with its steps."""
        return Response(RunSerializer(get_visible_run_or_404(request, run_id)).data)


class RunCancelView(APIView):
    parser_classes = [LimitedJSONParser]

    @extend_schema(request=None, responses={200: RunSerializer, 409: None})
    def post(self, request, run_id):
        """Cancel: a queued run at once, a processing one before its next step."""
        get_visible_run_or_404(request, run_id)
        services.run_cancel(run_id=run_id)
        return Response(RunSerializer(get_visible_run_or_404(request, run_id)).data)


class ToolListView(APIView):
    @extend_schema(responses=ToolSerializer(many=True))
    def get(self, request):
        """The registered tools and their arguments."""
        return Response([t.describe() for t in list_tools()])
