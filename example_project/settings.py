"""Settings of the channels-tuning demo site.

With no environment it runs on the in-memory channel layer (one process, no
Redis). ``REDIS_URL=redis://127.0.0.1:6379/0`` switches to channels-redis so
several daphne processes share groups (several URLs, comma-separated: groups and
channels sharded over those Redis servers); ``REDIS_CLUSTER`` (startup nodes' URLs)
uses a Redis Cluster. ``CHANNELS_TUNING_JSON`` (a JSON object)
overrides ``CHANNELS_TUNING`` keys, e.g. '{"HEARTBEAT_INTERVAL": 5}'.
"""

import json
import os
import secrets
import sys
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent

# No fixed secret: one is generated for this run unless DJANGO_SECRET_KEY is set
# (sessions and signed values then do not survive a restart, which a demo can afford).
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY") or secrets.token_urlsafe(50)
if "DJANGO_SECRET_KEY" not in os.environ:
    sys.stderr.write("example_project: DJANGO_SECRET_KEY not set; using a random one\n")
# Off unless asked for (DJANGO_DEBUG=1): DEBUG pages show settings and code.
DEBUG = os.environ.get("DJANGO_DEBUG") == "1"
ALLOWED_HOSTS = os.environ.get("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost,[::1]").split(",")
# Who may read /metrics: these client addresses (a Prometheus server's), nobody else.

INSTALLED_APPS = [
    # Before daphne, so manage.py runserver uses the flow-controlled server.
    "channels_tuning",
    "daphne",
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.sessions",
    "django.contrib.staticfiles",
    "channels",
    "django_prometheus",
    "example_project.chat",
]

ROOT_URLCONF = "example_project.urls"
ASGI_APPLICATION = "example_project.asgi.application"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {},
    }
]
# No database: the demo runs without one. DJANGO_DB_PATH (an SQLite file) gives it one,
# for the staff-only live view of the server processes (/ws-stats/) and its test.
DATABASES: dict = (
    {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": os.environ["DJANGO_DB_PATH"]}}
    if os.environ.get("DJANGO_DB_PATH")
    else {}
)
# Sessions and users for HTTP views only with a database to keep them in.
MIDDLEWARE = (
    [
        "django.contrib.sessions.middleware.SessionMiddleware",
        "django.contrib.auth.middleware.AuthenticationMiddleware",
    ]
    if DATABASES
    else []
)
STATIC_URL = "/static/"
USE_TZ = True

REDIS_URL = os.environ.get("REDIS_URL")
# REDIS_SENTINELS=host:port,host:port (and REDIS_MASTER_NAME): the primary is the one
# those sentinels name, and follows their failovers (channels-redis' sentinel hosts).
REDIS_SENTINELS = os.environ.get("REDIS_SENTINELS")
# REDIS_CLUSTER=redis://host:port,redis://host:port: startup nodes of a Redis Cluster.
REDIS_CLUSTER = os.environ.get("REDIS_CLUSTER")
if REDIS_URL or REDIS_SENTINELS or REDIS_CLUSTER:
    if REDIS_CLUSTER:
        hosts = [url.strip() for url in REDIS_CLUSTER.split(",")]
    elif REDIS_SENTINELS:
        sentinels = [tuple(a.rsplit(":", 1)) for a in REDIS_SENTINELS.split(",")]
        hosts: list = [
            {
                "sentinels": [(host, int(port)) for host, port in sentinels],
                "master_name": os.environ.get("REDIS_MASTER_NAME", "main"),
            }
        ]
    else:
        # Several URLs, comma-separated: channels-redis shards channels and groups
        # over them (consistent hashing).
        hosts = [url.strip() for url in REDIS_URL.split(",")]
    LAYER_CONFIG = {
        "hosts": hosts,
        "expiry": int(os.environ.get("LAYER_EXPIRY", "60")),
        # Broadcast frames cross Redis as they are (channels_tuning.serializers).
        "serializer_format": "channels_tuning",
    }
    if "GROUP_EXPIRY" in os.environ:  # otherwise derived: 5 x GROUP_REFRESH_INTERVAL
        LAYER_CONFIG["group_expiry"] = int(os.environ["GROUP_EXPIRY"])
    LAYER_CONFIG.update(json.loads(os.environ.get("LAYER_CONFIG_JSON", "{}")))
    backend = "channels_tuning.layers.RedisChannelLayer"
    if REDIS_CLUSTER:
        backend = "channels_tuning.layers.RedisClusterChannelLayer"
    if os.environ.get("REDIS_PUBSUB"):  # channels-redis' pub/sub layer, tuned
        backend = "channels_tuning.layers.RedisPubSubChannelLayer"
        LAYER_CONFIG.pop("expiry")  # the pub/sub layer keeps nothing in Redis
    CHANNEL_LAYERS = {"default": {"BACKEND": backend, "CONFIG": LAYER_CONFIG}}
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels_tuning.layers.InMemoryChannelLayer"}}

CHANNELS_TUNING = {
    # One user (or, anonymous, one address) cannot take every slot of the process.
    "MAX_CONNECTIONS_PER_USER": 20,
    "HEARTBEAT_INTERVAL": 25,
    "IDLE_TIMEOUT": 60,
    "MAX_MESSAGE_SIZE": 64 * 1024,
    "RATE_LIMIT": 20,
    "RATE_BURST": 40,
    # Rooms keep their last 500 messages for an hour: a page that reconnects gets what
    # it missed (kept in Redis across server restarts; in memory without Redis).
    "HISTORY": {"chat.*": {"size": 500, "ttl": 3600}, "ticker": {"size": 10, "ttl": 3600}},
    # Who is in each room, with join/leave events for the page's "online" list.
    "PRESENCE": {"chat.*": {"events": True}},
    # A user who logs out is disconnected on every server (channels_tuning.users).
    "DISCONNECT_ON_LOGOUT": True,
    # ...and a user whose password changes (the other browsers' sessions end too).
    "DISCONNECT_ON_PASSWORD_CHANGE": True,
}
if "METRICS_ALLOWED_ADDRESSES" in os.environ:  # /metrics: loopback and staff by default
    CHANNELS_TUNING["METRICS_ALLOWED_ADDRESSES"] = os.environ["METRICS_ALLOWED_ADDRESSES"].split(
        ","
    )
if os.environ.get("REDIS_PUBSUB"):
    # The pub/sub layer keeps no history and no presence (channels_tuning.W010): the
    # rooms run without them (no recovery, no online list) instead of failing.
    del CHANNELS_TUNING["HISTORY"], CHANNELS_TUNING["PRESENCE"]
CHANNELS_TUNING.update(json.loads(os.environ.get("CHANNELS_TUNING_JSON", "{}")))

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {
        "channels_tuning": {
            "handlers": ["console"],
            "level": os.environ.get("CT_LOG_LEVEL", "INFO"),
            "propagate": False,
        }
    },
}
