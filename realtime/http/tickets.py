"""POST /api/ws-tickets/: a single-use ticket for a page on another origin to open a WebSocket with."""

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.authtoken.models import Token
from rest_framework.response import Response
from rest_framework.views import APIView

from realtime.access import tickets


class WsTicketView(APIView):
    @extend_schema(
        request=None,
        responses={
            201: inline_serializer(
                "WsTicket", {"ticket": serializers.CharField(), "expires_at": serializers.DateTimeField()}
            )
        },
    )
    def post(self, request):
        """A single-use ticket for one WebSocket handshake: connect with ``?ticket=<ticket>``.

        For pages on another origin, which cannot send a token header on a
        WebSocket. Valid for about a minute (REALTIME_TICKET_SECONDS) and used up
        by the first handshake that presents it. Asked for with a token, it stands for that
        token: deleting or rotating the token closes the socket it opened (4401).
        """
        token = request.auth if isinstance(request.auth, Token) else None  # None: a browser session
        ticket, expires_at = tickets.issue_ticket(
            user=request.user, token_key=token.key if token is not None else None
        )
        return Response(
            {"ticket": ticket, "expires_at": serializers.DateTimeField().to_representation(expires_at)},
            status=status.HTTP_201_CREATED,
        )
