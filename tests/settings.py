"""Settings for the unit tests (WebsocketCommunicator, in-memory layer)."""

SECRET_KEY = "tests"
DEBUG = True
INSTALLED_APPS = ["channels_tuning", "daphne", "channels"]
DATABASES: dict = {}
USE_TZ = True
CHANNEL_LAYERS = {"default": {"BACKEND": "channels_tuning.layers.InMemoryChannelLayer"}}
CHANNELS_TUNING = {"SCHEDULER_TICK": 0.05, "STATS_BACKEND": None}
