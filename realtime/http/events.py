"""GET /api/runs/<id>/events/?since=S — the event log over HTTP."""

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.exceptions import NotFound
from rest_framework.response import Response
from rest_framework.views import APIView

from realtime.protocol import frames
from realtime.protocol.params import ParamError, parse_whole_number
from realtime.reads import selectors
from runs import selectors as run_selectors

MAX_LIMIT = 1000


class WholeNumberField(serializers.IntegerField):
    """A query parameter judged as the WebSocket judges ``?since=`` (realtime.protocol.params),
    not by int()."""

    def to_internal_value(self, data):
        try:
            return parse_whole_number(
                str(data), name=self.field_name, minimum=self.min_value, maximum=self.max_value
            )
        except ParamError as error:
            raise serializers.ValidationError(error.message) from None


class EventQuerySerializer(serializers.Serializer):
    since = WholeNumberField(min_value=0, default=0)
    limit = WholeNumberField(min_value=1, max_value=MAX_LIMIT, default=MAX_LIMIT)


class RunEventsView(APIView):
    @extend_schema(
        parameters=[
            OpenApiParameter("since", int, description="Return events with seq above this."),
            OpenApiParameter("limit", int, description=f"At most this many (≤ {MAX_LIMIT})."),
        ],
        responses={200: OpenApiTypes.OBJECT},
    )
    def get(self, request, run_id):
        """The run's events after ``since``, as the WebSocket sends them."""
        query = EventQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        # One light read for access and the high-water mark: events up to it
        # are committed (a seq and its event commit together).
        seq = run_selectors.run_seq_for_user(user=request.user, run_id=run_id)
        if seq is None:
            raise NotFound("no such run")
        since, limit = query.validated_data["since"], query.validated_data["limit"]
        found = selectors.events_between(run_id=run_id, after=since, upto=seq, limit=limit)
        # As on the socket: since > seq is a client from another history (a
        # restored database?), not one that is up to date.
        complete = since == seq or (bool(found) and found[0].seq == since + 1)
        return Response(
            {
                "run_id": str(run_id),
                "since": since,
                "seq": seq,
                "recovered": complete,
                "has_more": bool(found) and found[-1].seq < seq,
                "events": [frames.event_frame(event) for event in found] if complete else [],
            }
        )
