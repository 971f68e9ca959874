"""GET /api/run-summaries/: the newest runs' summaries, the run list's polling fallback."""

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework.response import Response
from rest_framework.views import APIView

from realtime.reads import summaries


class RunSummaryListView(APIView):
    @extend_schema(responses={200: OpenApiTypes.OBJECT})
    def get(self, request):
        """The newest runs' summaries, as /ws/runs/ sends them (its polling fallback)."""
        return Response({"runs": summaries.run_summaries_for_user(user=request.user)})
