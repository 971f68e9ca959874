"""Settings, read from the environment (twelve-factor).

Two shapes of the same code:
- embedded (no REDIS_URL): SQLite unless DATABASE_URL says otherwise, an
  in-process channel layer, runs executed inside the web process;
- full stack (REDIS_URL set): PostgreSQL from DATABASE_URL, channels-redis,
  Celery workers on Redis.
"""

import os
import sys
import warnings
from datetime import timedelta
from pathlib import Path

import dj_database_url
from csp.constants import NONCE, NONE, SELF
from django.core.exceptions import ImproperlyConfigured

from quikday import dotenv
from quikday.env import env_bool, env_choice, env_float, env_int, env_list, env_origins, env_str

BASE_DIR = Path(__file__).resolve().parent.parent
# `make run`'s .env (DEBUG, SECRET_KEY), if this checkout has one; the environment wins.
dotenv.load()

DEBUG = env_bool("DEBUG", False)
SECRET_KEY = env_str("SECRET_KEY")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY is not set. Set SECRET_KEY in the environment (required when DEBUG is off); "
            "on a laptop, `make run` writes one to .env for every manage.py command of the checkout."
        )
    SECRET_KEY = "insecure-development-key-only-used-with-DEBUG"

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "daphne",
    # Before the admin: its admin/index.html adds the "Realtime" page's link.
    "observability",
    # Before the admin too: its admin/base_site.html adds the site's favicon to every admin page.
    "web",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "corsheaders",
    "rest_framework",
    "rest_framework.authtoken",
    "axes",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "channels",
    "runs",
    "realtime",
    "csp",
]

# --- Login throttling (django-axes): the site's login and the admin's ------------
# Failed logins are counted per user name *and* client address, in the database
# (every web process, and the embedded mode, sees the same counts): after
# LOGIN_FAILURE_LIMIT in a row, that pair is refused — right password or not —
# until LOGIN_COOLOFF_SECONDS have passed since the last failure, or staff unlock
# it (admin: Axes > Access attempts, or manage.py axes_reset_username <name>).
# Other users, and the same user from elsewhere, are unaffected. The API's token
# and session authentication never call authenticate(), so they are untouched.
AUTHENTICATION_BACKENDS = [
    "web.login_throttle.LoginThrottleBackend",  # first: a locked pair is refused before any password check
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env_int("LOGIN_FAILURE_LIMIT", 5, minimum=1)
AXES_COOLOFF_TIME = timedelta(seconds=env_int("LOGIN_COOLOFF_SECONDS", 900, minimum=1))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_DISABLE_ACCESS_LOG = True  # failures only: no row per successful login
AXES_VERBOSE = False  # no start-up banner on every process and manage.py command
AXES_CLIENT_IP_CALLABLE = "web.login_throttle.client_ip"
# Proxies in front of the web processes that append to X-Forwarded-For (the Procfile's
# platform router: 1); the client is the address the outermost one saw (web/login_throttle.py).
LOGIN_PROXY_COUNT = env_int("LOGIN_PROXY_COUNT", 0 if DEBUG else 1)
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
AXES_HTTP_RESPONSE_CODE = 429

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

MIDDLEWARE = [
    # First: every /api/ answer carries the CORS headers, errors and the answers other
    # middleware make (CommonMiddleware's 308) included, so a page on an allowed
    # origin can read why a request failed, or follow it.
    "corsheaders.middleware.CorsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",
    "quikday.middleware.DatabaseUnavailableMiddleware",
    "quikday.middleware.chunked_body_middleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "quikday.middleware.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes requires: it turns a refused (locked-out) login into the lockout page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "quikday.urls"
ASGI_APPLICATION = "quikday.asgi.application"
WSGI_APPLICATION = None

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -----------------------------------------------------------------
# PostgreSQL in a web process: psycopg 3's connection pool (Django 5.1+), at
# most DATABASE_POOL_MAX_SIZE connections per process whatever the load — the
# bound docs/operations.md adds up against the server's max_connections.
# Persistent per-thread connections are not bounded under ASGI: Django runs each
# request's sync code on a thread of its own, and every such thread opened a
# connection that outlived the request.
# A Celery worker's pool process runs one task at a time on one thread: one
# persistent connection (DATABASE_CONN_MAX_AGE seconds, health-checked) is its
# bound already, and Celery closes a prefork process's pool after every task
# (two new connections per task, measured). So workers keep plain connections by
# default, and CELERY_DB_REUSE_MAX (below) keeps Celery from closing those too.
# SQLite (embedded mode) keeps its per-thread connections.
_COMMAND = Path(sys.argv[0])
CELERY_WORKER_PROCESS = "celery" in (_COMMAND.name, _COMMAND.parent.name) and "worker" in sys.argv[1:]
DATABASES = {"default": dj_database_url.config(default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}")}
DATABASE_POOL = env_bool("DATABASE_POOL", not CELERY_WORKER_PROCESS) and DATABASES["default"][
    "ENGINE"
].endswith("postgresql")
DATABASE_POOL_MAX_SIZE = env_int("DATABASE_POOL_MAX_SIZE", 10, minimum=1)
DATABASES["default"].update(
    {
        "CONN_MAX_AGE": 0 if DATABASE_POOL else env_int("DATABASE_CONN_MAX_AGE", 60),
        # Pool: the pool checks a connection as it hands it out (one round trip),
        # so a server restart or a terminated backend costs no request a 503.
        "CONN_HEALTH_CHECKS": True,
    }
)
if DATABASE_POOL:
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": env_int("DATABASE_POOL_MIN_SIZE", 1),
        "max_size": DATABASE_POOL_MAX_SIZE,
        # A burst queues for a connection as long as a platform's router waits for
        # an answer (Heroku: 30 s), rather than answering 503 after a few seconds.
        "timeout": env_float("DATABASE_POOL_TIMEOUT", 30.0, minimum=0.1),
    }
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql" and env_bool(
    "DATABASE_SERVER_SIDE_BINDING", True
):
    # Parameters sent apart from the statement (psycopg's server-side binding)
    # instead of quoted into its text in Python: less client CPU on every query
    # (docs/benchmarks.md, finding 16). Statements are not prepared (Django's
    # default, which keeps connection poolers working).
    DATABASES["default"].setdefault("OPTIONS", {})["server_side_binding"] = True
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Embedded mode: the web process and its run threads share one file.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"timeout": 20, "transaction_mode": "IMMEDIATE", "init_command": "PRAGMA journal_mode=WAL;"}
    )
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(env_str("STATIC_ROOT") or BASE_DIR / "staticfiles")
# Production (DEBUG off): `collectstatic` (the Procfile's web command runs it)
# writes hashed, compressed copies to STATIC_ROOT and WhiteNoise serves them
# with far-future caching. make run and the tests (STATIC_MANIFEST=0) collect
# nothing: WhiteNoise serves the apps' own static folders under plain names.
STATIC_MANIFEST = env_bool("STATIC_MANIFEST", not DEBUG)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "whitenoise.storage.CompressedManifestStaticFilesStorage"
            if STATIC_MANIFEST
            else "django.contrib.staticfiles.storage.StaticFilesStorage"
        )
    },
}
WHITENOISE_USE_FINDERS = not STATIC_MANIFEST
WHITENOISE_AUTOREFRESH = DEBUG
if not STATIC_MANIFEST:
    # Nothing is collected in this shape, so an absent STATIC_ROOT is expected, not news.
    warnings.filterwarnings("ignore", message=r"No directory at: ", category=UserWarning)

# Request bodies: the API refuses larger ones with a JSON 400.
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("API_MAX_BODY_BYTES", 256 * 1024, minimum=1024)

# --- Security (manage.py check --deploy is clean when DEBUG is off) -------------
if not DEBUG:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
    SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 60 * 60 * 24 * 30)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SECURE_CONTENT_TYPE_NOSNIFF = True

# --- REST framework -------------------------------------------------------------
REST_FRAMEWORK = {
    # Token first: an unauthenticated request then gets a proper 401 with
    # "WWW-Authenticate: Token" (DRF takes the header from the first class).
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "runs.api.auth.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 20,
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "runs.api.errors.exception_handler",
    # Every timestamp is UTC with microseconds, as the realtime protocol's `ts` (realtime.protocol.frames'
    # TS_FORMAT, held equal by tests/realtime/protocol/test_frames.py; configuration imports no app).
    "DATETIME_FORMAT": "%Y-%m-%dT%H:%M:%S.%fZ",
}
if DEBUG:
    REST_FRAMEWORK["DEFAULT_RENDERER_CLASSES"].append("rest_framework.renderers.BrowsableAPIRenderer")

SPECTACULAR_SETTINGS = {
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "runs.api.schema.add_error_responses",
    ],
    "TITLE": "Quik.day Realtime API",
    # Markdown: in a code span, "<id>" is text (outside one it would be taken for an HTML tag and dropped).
    "DESCRIPTION": (
        "Create multi-step runs and follow them live over the WebSocket `/ws/runs/<id>/` "
        "(docs/protocol.md). Authenticate with `Authorization: Token <key>` (your key: the "
        "API token page, `/account/token/`) or the site's session."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # /api/docs/ serves Swagger UI from drf-spectacular-sidecar's static files: no CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Runs and steps both have a "status"; name their enums instead of hashing them.
    "ENUM_NAME_OVERRIDES": {
        "RunStatusEnum": "runs.models.RunStatus",
        "StepStatusEnum": "runs.models.StepStatus",
    },
}

# --- Content-Security-Policy (django-csp) ------------------------------------------
# Every page runs only this site's own script files, and inline scripts and styles
# that carry the response's nonce (`nonce="{{ request.csp_nonce }}"`): an injected
# <script> or on* attribute does not run. No 'unsafe-inline' and no 'unsafe-eval'.
# Style attributes are refused too: scripts set styles through element.style.
# connect-src 'self' covers this origin's WebSockets (ws:/wss:) as well.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF, NONCE],
        "style-src": [SELF, NONCE],
        # Swagger UI and the admin draw some icons from data: URLs.
        "img-src": [SELF, "data:"],
        "connect-src": [SELF],
        "object-src": [NONE],
        "base-uri": [NONE],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    }
}

# --- CORS: the API from pages on other origins (docs/protocol.md, "CORS") ---------
# Empty (the default): no CORS headers, so browsers keep pages on other origins
# out of the API, as without the library. Each origin listed may call /api/ with
# a token in the Authorization header; nothing else is opened to it:
# - only /api/ (the pages, the admin, /metrics and /healthz are this site's own);
# - no credentials: a browser never lets such a page read an answer to a request
#   that carried this site's cookies, so a session (and its CSRF token) stays
#   usable from this origin only. Another port of the same host is another
#   origin but the same site, whose cookies a browser does send along;
# - the WebSocket Origin check is not widened to these origins (realtime/access/auth.py):
#   a page there connects with a ticket, which needs no Origin check.
CORS_ALLOWED_ORIGINS = env_origins("CORS_ALLOWED_ORIGINS")
CORS_URLS_REGEX = r"^/api/"
CORS_ALLOW_CREDENTIALS = False
# A token in a header and a JSON body; Accept is safelisted, listed for clarity.
CORS_ALLOW_HEADERS = ("accept", "authorization", "content-type")
# How long a browser may reuse a preflight's answer (browsers cap it: docs/protocol.md).
CORS_PREFLIGHT_MAX_AGE = env_int("CORS_PREFLIGHT_MAX_AGE", 7200)
# A 503's Retry-After (the database is briefly away) is readable by such a page too.
CORS_EXPOSE_HEADERS = ("retry-after",)

# --- Redis, channel layer and Celery -------------------------------------------
# Managed Redis over TLS (rediss://) may present a certificate no CA signed
# (Heroku Key-Value Store does): REDIS_SSL_CERT_REQS=none accepts it, the
# traffic still encrypted. Added to every rediss:// URL below that does not say
# already; redis-py, kombu and channels-redis all read it from the URL.
REDIS_SSL_CERT_REQS = env_choice("REDIS_SSL_CERT_REQS", "", ("", "required", "optional", "none"))


def _redis_tls(url: str) -> str:
    if not REDIS_SSL_CERT_REQS or not url.startswith("rediss://") or "ssl_cert_reqs=" in url:
        return url
    return f"{url}{'&' if '?' in url else '?'}ssl_cert_reqs={REDIS_SSL_CERT_REQS}"


REDIS_URL = _redis_tls(env_str("REDIS_URL"))
CELERY_BROKER_URL = _redis_tls(env_str("CELERY_BROKER_URL")) or REDIS_URL
EMBEDDED = not REDIS_URL

REALTIME_MODE = env_choice("REALTIME_MODE", "push", ("push", "poll", "hybrid"))
REALTIME_POLL_INTERVAL = env_float("REALTIME_POLL_INTERVAL", 2.0, minimum=0.05)
REALTIME_FALLBACK_INTERVAL = env_float("REALTIME_FALLBACK_INTERVAL", 10.0, minimum=0.05)
REALTIME_CHANNEL_LAYER = env_choice("REALTIME_CHANNEL_LAYER", "pubsub", ("pubsub", "redis"))
# A crashed process's group memberships expire after this long (channels-redis'
# default is a day); live consumers refresh theirs well before.
REALTIME_GROUP_EXPIRY = env_int("REALTIME_GROUP_EXPIRY", 900, minimum=60)
# Threads (each with its own database connection) that run a web process's
# realtime reads — connect snapshots, gap fills, poller ticks — side by side.
REALTIME_DB_THREADS = env_int("REALTIME_DB_THREADS", 4, minimum=1)
if DATABASE_POOL and DATABASE_POOL_MAX_SIZE <= REALTIME_DB_THREADS:
    # Each read thread keeps one of the pool's connections: requests need at least one more.
    raise ImproperlyConfigured(
        f"DATABASE_POOL_MAX_SIZE ({DATABASE_POOL_MAX_SIZE}) must be greater than REALTIME_DB_THREADS"
        f" ({REALTIME_DB_THREADS}): each read thread holds one of the pool's connections"
    )
REALTIME_EVENT_RETENTION_DAYS = env_float("REALTIME_EVENT_RETENTION_DAYS", 7.0, minimum=0.0)
REALTIME_MAX_CLIENT_FRAME = 64 * 1024
# Each WebSocket connection may send this many frames a second (bursts of _BURST);
# frames over it are dropped with one `rate_limited` error a second, and a client
# whose dropped frames outrun the budget by _CLOSE_AFTER is closed with 4429.
REALTIME_CLIENT_FRAMES_PER_SECOND = env_float("REALTIME_CLIENT_FRAMES_PER_SECOND", 20.0, minimum=0.1)
REALTIME_CLIENT_FRAMES_BURST = env_int("REALTIME_CLIENT_FRAMES_BURST", 40, minimum=1)
REALTIME_CLIENT_FRAMES_CLOSE_AFTER = env_int("REALTIME_CLIENT_FRAMES_CLOSE_AFTER", 200, minimum=1)
# How long a WebSocket connection ticket (POST /api/ws-tickets/) stays usable.
REALTIME_TICKET_SECONDS = env_float("REALTIME_TICKET_SECONDS", 60.0, minimum=1.0)
# The user-level stream (/ws/runs/) re-reads its page of summaries this often in
# push and hybrid modes: a summary lost in transit (pub/sub is at most once) shows up by then.
REALTIME_LIST_REFRESH_INTERVAL = env_float("REALTIME_LIST_REFRESH_INTERVAL", 10.0, minimum=0.5)
# Bytes a WebSocket client may leave unread (under Daphne) before the server stops
# sending it events and pongs; once it has read most of them it gets a fresh
# `connected` snapshot (a resync) instead of what it missed.
REALTIME_MAX_CLIENT_BUFFER = env_int("REALTIME_MAX_CLIENT_BUFFER", 1024 * 1024, minimum=16 * 1024)
# An open socket's credentials (token, user, session) are checked again this often:
# a revoked one closes the socket with 4401 within this long.
REALTIME_ACCESS_RECHECK_SECONDS = env_float("REALTIME_ACCESS_RECHECK_SECONDS", 60.0, minimum=0.05)
REALTIME_PUBLISH_TIMEOUT = env_float("REALTIME_PUBLISH_TIMEOUT", 2.0, minimum=0.01)
# A publish that fails is retried in the background for this long (0 = never).
REALTIME_PUBLISH_RETRY_SECONDS = env_float("REALTIME_PUBLISH_RETRY_SECONDS", 300.0)
REALTIME_PUBLISH_RETRY_DELAY = env_float("REALTIME_PUBLISH_RETRY_DELAY", 0.5, minimum=0.01)
# The channel layer's Redis servers: channels-redis hashes each run's group over
# them (realtime/events/shards.py), so adding servers adds publish and fan-out capacity.
# The broker (Celery) stays on REDIS_URL.
REALTIME_REDIS_URLS = [
    _redis_tls(url) for url in env_list("REALTIME_REDIS_URLS", [REDIS_URL] if REDIS_URL else [])
]

if REDIS_URL:
    if REALTIME_CHANNEL_LAYER == "pubsub":
        CHANNEL_LAYERS = {
            "default": {
                "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
                "CONFIG": {"hosts": REALTIME_REDIS_URLS},
            }
        }
    else:
        CHANNEL_LAYERS = {
            "default": {
                "BACKEND": "channels_redis.core.RedisChannelLayer",
                # capacity: each server process receives every run's events on one
                # channel (realtime/delivery/hub.py), so its queue is shared by all of them.
                "CONFIG": {
                    "hosts": REALTIME_REDIS_URLS,
                    "group_expiry": REALTIME_GROUP_EXPIRY,
                    "capacity": 10_000,
                },
            }
        }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

# Runs execute on Celery workers when a broker is configured, otherwise in
# threads of the web process (embedded mode).
RUNS_EXECUTOR = env_choice("RUNS_EXECUTOR", "celery" if CELERY_BROKER_URL else "inline", ("celery", "inline"))
CELERY_TASK_DEFAULT_QUEUE = env_str("CELERY_QUEUE", "celery")
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Celery's Django fixup closes every database connection before and after each task unless
# told to reuse them (celery/fixups/django.py): each run then opened a PostgreSQL session of
# its own, a backend forked and authenticated per task. Reused, they follow Django's own rule
# at each task's start and end instead (realtime.signals.task_boundary). 0: Celery's closing.
CELERY_DB_REUSE_MAX = env_int("CELERY_DB_REUSE_MAX", 1_000_000_000)
CELERY_TASK_IGNORE_RESULT = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# SIGTERM (a deploy: the platform sends SIGKILL 30 s later) is a cold shutdown
# (the Procfile's REMAP_SIGTERM=SIGQUIT) that first lets running tasks go on for
# this long; a run still executing then is cancelled and its message requeued,
# and another worker resumes it (docs/reliability.md, "Deploys").
CELERY_WORKER_SOFT_SHUTDOWN_TIMEOUT = env_float("WORKER_SOFT_SHUTDOWN_TIMEOUT", 20.0)
CELERY_BROKER_TRANSPORT_OPTIONS = {
    # A message whose worker died unacknowledged comes back after this long.
    "visibility_timeout": env_int("CELERY_VISIBILITY_TIMEOUT", 3600, minimum=10),
}
# A run whose worker was lost is taken over within this long (runs/takeover.py).
RUNS_TAKEOVER_INTERVAL_SECONDS = env_float("RUNS_TAKEOVER_INTERVAL_SECONDS", 10.0, minimum=1.0)
# A take-over message not started by then is dropped (the next sweep sends another).
RUNS_TAKEOVER_MESSAGE_EXPIRES = 3 * RUNS_TAKEOVER_INTERVAL_SECONDS
CELERY_BEAT_SCHEDULE = {
    "take-over-runs": {
        "task": "runs.tasks.take_over_runs",
        "schedule": RUNS_TAKEOVER_INTERVAL_SECONDS,
        "options": {"expires": RUNS_TAKEOVER_INTERVAL_SECONDS},
    },
    "reap-stuck-runs": {"task": "runs.tasks.reap_stuck_runs", "schedule": 60.0},
    "prune-run-events": {"task": "realtime.tasks.prune_run_events", "schedule": 3600.0},
}

# --- Runs -------------------------------------------------------------------------
RUNS_MAX_STEPS = env_int("RUNS_MAX_STEPS", 50, minimum=1)
RUNS_WAIT_MAX_SECONDS = env_float("RUNS_WAIT_MAX_SECONDS", 60.0)
# Per-user quotas (staff are exempt; 0 turns a limit off): runs queued or
# processing at once, and runs created in any 60 seconds. Over either, a create
# is refused (the API: 429 with Retry-After).
RUNS_MAX_ACTIVE_PER_USER = env_int("RUNS_MAX_ACTIVE_PER_USER", 10, minimum=0)
RUNS_MAX_CREATES_PER_MINUTE = env_int("RUNS_MAX_CREATES_PER_MINUTE", 30, minimum=0)
# Fair execution: a user's runs handed to the executor at once (queued in the
# broker or processing); the rest wait, queued, and each run that ends hands
# over its owner's next. Keep it below the workers' total concurrency so that
# other users' runs find a free slot. 0: no limit (plain FIFO).
RUNS_MAX_INFLIGHT_PER_USER = env_int("RUNS_MAX_INFLIGHT_PER_USER", 1, minimum=0)
# What a refusal for too many active runs says to wait (their end is not known in advance).
RUNS_ACTIVE_RETRY_AFTER_SECONDS = env_int("RUNS_ACTIVE_RETRY_AFTER_SECONDS", 5, minimum=1)
# How deeply a step's arguments may nest (objects and arrays); deeper plans are refused with a 400.
RUNS_MAX_ARGS_DEPTH = env_int("RUNS_MAX_ARGS_DEPTH", 32, minimum=1)
RUNS_STALE_AFTER_SECONDS = env_float("RUNS_STALE_AFTER_SECONDS", 600.0, minimum=1.0)
# A run whose enqueue failed is sent again by the same process after this long,
# doubling up to _MAX_DELAY, until it is taken (or RUNS_STALE_AFTER_SECONDS pass).
RUNS_DISPATCH_RETRY_DELAY = env_float("RUNS_DISPATCH_RETRY_DELAY", 1.0, minimum=0.01)
RUNS_DISPATCH_RETRY_MAX_DELAY = env_float("RUNS_DISPATCH_RETRY_MAX_DELAY", 30.0, minimum=0.01)
# A step whose executor was lost this many times fails instead of being tried again.
RUNS_MAX_STEP_ATTEMPTS = env_int("RUNS_MAX_STEP_ATTEMPTS", 3, minimum=1)
RUNS_TOOL_MODULES = ["runs.tools.builtin", *env_list("RUNS_TOOL_MODULES", [])]
# Embedded mode (RUNS_EXECUTOR=inline): how many runs execute at once in the
# web process, and how often its in-process reaper looks for stuck runs.
RUNS_INLINE_WORKERS = env_int("RUNS_INLINE_WORKERS", 4, minimum=1)
RUNS_REAP_INTERVAL_SECONDS = env_float("RUNS_REAP_INTERVAL_SECONDS", 60.0, minimum=1.0)

# --- Observability: logs, metrics, error reports (docs/operations.md) ---------------
# LOG_FORMAT=json: one JSON object per line (a PaaS log drain); text: emoji-led lines.
LOG_FORMAT = env_choice("LOG_FORMAT", "text", ("text", "json"))
LOG_EMOJI = env_bool("LOG_EMOJI", True)
LOG_LEVEL = env_str("LOG_LEVEL", "INFO").upper()
# More levels per logger: "quikday.frames=DEBUG,celery=WARNING".
LOG_LEVELS = env_list("LOG_LEVELS", [])
LOG_STATS_INTERVAL = env_float("LOG_STATS_INTERVAL", 60.0, minimum=0.05)
# How often each process refreshes its RSS, its queries-avoided figure and the
# snapshot the admin's Realtime page reads.
OBSERVABILITY_REPORT_INTERVAL = env_float("OBSERVABILITY_REPORT_INTERVAL", 2.0, minimum=0.05)
METRICS_ENABLED = env_bool("METRICS_ENABLED", True)
METRICS_TOKEN = env_str("METRICS_TOKEN")
# prometheus-client's multiprocess mode sums the files every process of the host
# writes here. It reads the variable when it is first imported, and settings are
# the first thing every process (Daphne, Celery and its pool, manage.py) loads.
# Unset: a directory of this deployment's own under the temp dir in the full
# stack; single-process mode in embedded mode (one process serves everything).
METRICS_MULTIPROC_DIR = env_str("PROMETHEUS_MULTIPROC_DIR")
if not METRICS_MULTIPROC_DIR and not EMBEDDED and METRICS_ENABLED:
    from observability.multiproc import default_dir

    METRICS_MULTIPROC_DIR = str(default_dir(DATABASES["default"], REDIS_URL, CELERY_TASK_DEFAULT_QUEUE))
if METRICS_MULTIPROC_DIR:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = METRICS_MULTIPROC_DIR
SENTRY_DSN = env_str("SENTRY_DSN")
SENTRY_ENVIRONMENT = env_str("SENTRY_ENVIRONMENT", "development" if DEBUG else "production")
SENTRY_TRACES_SAMPLE_RATE = env_float("SENTRY_TRACES_SAMPLE_RATE", 0.0)
# Celery would replace these handlers with its own format; the LOGGING below
# is every process's, workers included.
CELERY_WORKER_HIJACK_ROOT_LOGGER = False

from observability.logs import logging_config  # noqa: E402 - a plain function, no Django models

LOGGING = logging_config(level=LOG_LEVEL, levels=LOG_LEVELS, log_format=LOG_FORMAT, emoji=LOG_EMOJI)
# One warning per Redis outage comes from realtime.delivery.failover instead.
LOGGING["filters"]["layer_connection_failures"] = {"()": "server.outage_logging.LayerConnectionFailureFilter"}
for _layer_logger in ("channels_redis.pubsub", "channels_redis.core"):
    LOGGING["loggers"].setdefault(_layer_logger, {})["filters"] = ["layer_connection_failures"]
# A worker's broker outage: one warning, one line when it is back (server/broker_outage_logging.py).
LOGGING["filters"]["broker_outage"] = {"()": "server.broker_outage_logging.BrokerOutageFilter"}
for _broker_logger in (
    "celery.worker.consumer.consumer",
    "celery.worker.consumer.connection",
    "celery.worker.request",
    "py.warnings",
):
    LOGGING["loggers"].setdefault(_broker_logger, {})["filters"] = ["broker_outage"]
# A few lines per start and stop, whatever LOG_LEVEL: "Listening on TCP address"
# is how the web command's runners (tests, bench) know a Daphne process serves.
LOGGING["loggers"].setdefault("daphne.server", {})["level"] = "INFO"
