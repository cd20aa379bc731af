"""Settings of the channels-tuning demo site.

With no environment it runs on the in-memory channel layer (one process, no
Redis). ``REDIS_URL=redis://127.0.0.1:6379/0`` switches to channels-redis so
several daphne processes share groups. ``CHANNELS_TUNING_JSON`` (a JSON object)
overrides ``CHANNELS_TUNING`` keys, e.g. '{"HEARTBEAT_INTERVAL": 5}'.
"""

import json
import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "demo-only-not-secret")
DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "[::1]"]

INSTALLED_APPS = [
    # Before daphne, so manage.py runserver uses the flow-controlled server.
    "channels_tuning",
    "daphne",
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
DATABASES: dict = {}
STATIC_URL = "/static/"
USE_TZ = True

REDIS_URL = os.environ.get("REDIS_URL")
if REDIS_URL:
    LAYER_CONFIG = {
        "hosts": [REDIS_URL],
        "expiry": int(os.environ.get("LAYER_EXPIRY", "60")),
        # Broadcast frames cross Redis as they are (channels_tuning.serializers).
        "serializer_format": "channels_tuning",
    }
    if "GROUP_EXPIRY" in os.environ:  # otherwise derived: 5 x GROUP_REFRESH_INTERVAL
        LAYER_CONFIG["group_expiry"] = int(os.environ["GROUP_EXPIRY"])
    LAYER_CONFIG.update(json.loads(os.environ.get("LAYER_CONFIG_JSON", "{}")))
    CHANNEL_LAYERS = {
        "default": {"BACKEND": "channels_tuning.layers.RedisChannelLayer", "CONFIG": LAYER_CONFIG}
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels_tuning.layers.InMemoryChannelLayer"}}

CHANNELS_TUNING = {
    "HEARTBEAT_INTERVAL": 25,
    "IDLE_TIMEOUT": 60,
    "MAX_MESSAGE_SIZE": 64 * 1024,
    "RATE_LIMIT": 20,
    "RATE_BURST": 40,
}
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
