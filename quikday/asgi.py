"""ASGI entry point: HTTP through Django, WebSockets through Channels."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "quikday.settings")
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from realtime.access.auth import OriginCheckMiddleware, RealtimeAuthMiddleware  # noqa: E402
from realtime.protocol.close_codes import CLOSE_TOO_BIG  # noqa: E402
from realtime.routing import websocket_urlpatterns  # noqa: E402
from server import daphne_tuning  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": OriginCheckMiddleware(RealtimeAuthMiddleware(URLRouter(websocket_urlpatterns))),
    }
)

from django.conf import settings  # noqa: E402

from observability.health import log_mode  # noqa: E402

if settings.RUNS_EXECUTOR == "inline":
    # Embedded runs execute as tasks of the server loop (see runs.inline).
    from runs.inline import ServerLoopMiddleware

    application = ServerLoopMiddleware(application)

from server import memory_trace  # noqa: E402

memory_trace.install_from_env()  # debug only (QUIKDAY_TRACEMALLOC_DIR): the soak's allocation snapshots
log_mode()

from observability import reporter  # noqa: E402
from server import access_log  # noqa: E402


class StartsReporter:
    """Starts this process's reporter (its 📊 line, RSS and the staff page's snapshot) when the
    server first calls the application: at the lifespan scope of a server that sends one, at the
    first connection under Daphne (which sends none). Not on import: a test, a shell or a bench
    that imports this module serves nothing and has no thread to stop."""

    def __init__(self, app) -> None:
        self.app = app
        self.started = False

    async def __call__(self, scope, receive, send):
        if not self.started:
            self.started = True
            reporter.start("web")
        return await self.app(scope, receive, send)


application = StartsReporter(application)
access_log.route_through_logging()
daphne_tuning.apply(too_big_close_code=CLOSE_TOO_BIG)  # last: freezes the heap the imports above built
